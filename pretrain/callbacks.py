"""Callbacks every `astrofm pretrain fit` run gets: checkpoints in the run folder, export at the end."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from pretrain.export import export_checkpoint, export_model


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that defaults to `{default_root_dir}/checkpoints`, whatever loggers are attached,
    so `last.ckpt` is always at a path a user can guess for `--ckpt_path`."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run that stops on max_steps mid-epoch would otherwise leave last.ckpt at the previous epoch end.
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class ExportModel(Callback):
    """At the end of a successful fit, write `{default_root_dir}/model/` (config.json + safetensors)."""

    def __init__(self, folder: str = "model", recipe: str | None = None):
        """
        Args:
            folder: model folder name inside the run folder.
            recipe: recipe file(s) the run was configured from, for the model card.
        """
        self.folder = folder
        self.recipe = recipe

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.recipe = self.recipe  # recorded in checkpoints, so `pretrain export` can name it too

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        out = Path(trainer.default_root_dir) / self.folder
        last = next((c.last_model_path for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")),
                    "")
        if last and Path(last).is_file():
            # From the final checkpoint, not the live module: under sharded strategies (FSDP) only the
            # checkpoint holds the whole model on rank 0.
            export_checkpoint(last, out, metrics=metrics)
        else:
            info = {"source": f"the final weights of the run in {trainer.default_root_dir}",
                    "data": getattr(pl_module, "data_info", {}), "recipe": self.recipe,
                    "global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": metrics}
            export_model(pl_module.model, out, info)
        print(f"model exported to {out}")
