"""`astrofm pretrain fit --config configs/pretrain/RECIPE.yaml [--data.path DIR] [...]` via LightningCLI.

One typed signature (ContrastivePretrainer, ShardDataModule, Trainer) serves the YAML recipe, the
command line and Python callers. Every run folder (`trainer.default_root_dir`) gets:
    checkpoints/last.ckpt and the best checkpoint by validation top-10 retrieval accuracy
    logs/            CSV metrics (always)
    wandb/           wandb run files (offline unless an API key or WANDB_MODE says otherwise)
    model/           config.json + model.safetensors + README.md (model card), at the end of fit
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from pretrain.callbacks import ExportModel, RunCheckpoint
from pretrain.datamodule import ShardDataModule
from pretrain.module import ContrastivePretrainer

# Overrides that train the cross-modal loss alone: the tiny recipe's spectrum-internal terms (masked
# spectrum, spectrum self view, shift equivariance) pay off after 15-25 epochs and cost retrieval in
# shorter, time-capped runs.
CROSS_MODAL_ONLY = ("--model.masked_spectrum.weight", "0", "--model.self_views", "[]",
                    "--model.shift_equivariance.weight", "0")


def default_wandb_mode() -> None:
    """wandb runs offline unless configured: an unreachable server makes online mode retry for minutes.
    An empty WANDB_MODE (`WANDB_MODE= cmd`) counts as unset; wandb itself rejects it."""
    if os.environ.get("WANDB_MODE"):
        return
    os.environ.pop("WANDB_MODE", None)
    if not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"


def fit_encoders_to_dataset(config) -> None:
    """Set each encoder's dataset-given fields (SPEC_FIELDS: bands, stamp size, spectrum pixels) from the
    manifest at `data.path`, so one recipe serves a g, r, z survey and a g, r, i, z one alike; each change
    is printed. A dataset that cannot be read is left for the data module to report."""
    import sys

    from astrofm.data.manifest import load_manifest
    from astrofm.models.registry import resolve_encoder_class

    path = config.get("data", {}).get("path") if hasattr(config, "get") else None
    try:
        spec = load_manifest(path).spec.to_dict()
    except (OSError, ValueError, TypeError, KeyError):
        return
    for modality, encoder in (config.get("model", {}).get("encoders") or {}).items():
        init = encoder.get("init_args") if hasattr(encoder, "get") else None
        settings = init.get("config") if init is not None else None
        if hasattr(settings, "get") and settings.get("init_args") is not None:
            settings = settings["init_args"]  # jsonargparse holds a dataclass as {class_path, init_args}
        if modality not in spec or not hasattr(settings, "get"):
            continue
        config_class = resolve_encoder_class(encoder["class_path"]).config_class
        for field, value in config_class.spec_values(spec[modality]).items():
            if settings.get(field) != value:
                print(f"astrofm pretrain: {modality} encoder {field} {settings.get(field)} -> {value}, "
                      f"as the dataset {path} has it", file=sys.stderr)
                settings[field] = value


def check_image_noise_has_ivar(config) -> None:
    """Refuse `augment.image_noise` on stamps stored without ivar before anything is built (the module's
    setup checks again for Python callers). A dataset that cannot be read is left for the data module."""
    from astrofm.augment import check_images_carry_ivar
    from astrofm.data.manifest import MANIFEST_NAME, load_manifest

    augment = (config.get("model", {}) or {}).get("augment") if hasattr(config, "get") else None
    if not (hasattr(augment, "get") and augment.get("image_noise")):
        return
    path = config.get("data", {}).get("path")
    try:
        manifest = load_manifest(path)
    except (OSError, ValueError, TypeError, KeyError):
        return
    check_images_carry_ivar(manifest, f"{path}/{MANIFEST_NAME}")


class PretrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/top10_mean", "checkpoint.mode": "max",
                             "checkpoint.save_last": True, "checkpoint.save_top_k": 1,
                             "checkpoint.filename": "best-{epoch}-{step}"})
        parser.add_argument("--wandb", type=bool, default=True,
                            help="log to wandb too (offline unless WANDB_API_KEY or WANDB_MODE is set)")
        parser.add_argument("--wandb_project", type=str, default="astrofm", help="wandb project name")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fit_encoders_to_dataset(config)
        check_image_noise_has_ivar(config)

    def instantiate_trainer(self, **kwargs: Any):
        config = self.config_init[self.subcommand]
        trainer_config = config["trainer"]
        root = trainer_config.get("default_root_dir") or os.path.join("runs", "pretrain")
        if trainer_config.get("logger") in (None, True):  # a recipe that names its loggers keeps them
            loggers = [CSVLogger(save_dir=root, name="logs")]
            if config.get("wandb", True):
                from lightning.pytorch.loggers import WandbLogger

                default_wandb_mode()
                loggers.append(WandbLogger(save_dir=root, project=config.get("wandb_project", "astrofm"),
                                           offline=os.environ.get("WANDB_MODE") == "offline"))
            kwargs["logger"] = loggers
        recipe = [str(path) for path in (config.get("config") or [])]
        self.trainer_defaults.setdefault("callbacks", []).append(ExportModel(recipe=", ".join(recipe) or None))
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None) -> None:
    default_wandb_mode()
    # The front door passes its arguments explicitly but leaves sys.argv intact for DDP's relaunch.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    # Lightning's false alarms about the shard stream are silenced by `import pretrain` (false_alarms.py).
    PretrainCLI(ContrastivePretrainer, ShardDataModule, args=args, save_config_kwargs={"overwrite": True},
                parser_kwargs={"prog": "astrofm pretrain"})
