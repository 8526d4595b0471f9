"""astrofm: multi-modal astronomy foundation models.

Contrastive encoders for spectra, photometry and images, pretrained on sharded datasets, whose frozen
embeddings power regression, generation, similarity search and simulation-vs-observation studies.
"""

__version__ = "0.1.0"
