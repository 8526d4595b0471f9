"""pretrain: contrastive pretraining of the encoders (Lightning module, data module, CLI, export)."""

from pretrain import false_alarms

false_alarms.silence()
