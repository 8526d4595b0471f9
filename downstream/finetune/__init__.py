"""Few-label fine-tuning of a pretrained encoder, against the same architecture trained from scratch and
the MLP probe on frozen embeddings.

    from downstream.finetune import FinetuneConfig, write_report
    write_report(FinetuneConfig(model="MODEL_DIR", data="DATA_DIR", out="REPORT", modality="spectrum",
                                targets=["redshift", "log_stellar_mass"], label_fractions=[0.1]))
"""

from downstream.finetune.config import FinetuneConfig, load_recipe
from downstream.finetune.report import compute, write_report

__all__ = ["FinetuneConfig", "compute", "load_recipe", "write_report"]
