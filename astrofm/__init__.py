"""astrofm: multi-modal astronomy foundation models.

Contrastive encoders for spectra, photometry and images, pretrained on sharded datasets, whose frozen
embeddings power regression, generation, similarity search and simulation-vs-observation studies.
"""

__version__ = "0.1.0"


def load_model(path):
    """Load an exported model folder (config.json + model.safetensors) without Lightning or pickle.

    `model.embed(batch)` returns a dict modality -> (B, D) L2-normalised embeddings, NaN rows for the
    objects that lack the modality (batch["mask"][modality] False).
    """
    from astrofm.models.io import load_model as _load_model

    return _load_model(path)
