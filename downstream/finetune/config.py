"""The fine-tuning recipe: one dataclass, loadable from a YAML mapping of its fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

METHODS = ("finetune", "scratch", "probe")
# finetune  the pretrained encoder + projection head, unfrozen at lr_encoder, with a new head at lr_head
# scratch   the same architecture with fresh weights (the supervised baseline), all at lr_scratch
# probe     the regression MLP probe on frozen pretrained embeddings (downstream.regression.probes.fit_mlp)

NOISE_REDRAWS = ("choose", "on", "off")


@dataclass
class FinetuneConfig:
    model: str  # model folder (astrofm pretrain)
    data: str  # dataset folder
    out: str  # report folder to write
    modality: str = "spectrum"  # the encoder to fine-tune
    targets: list[str] = field(default_factory=lambda: ["redshift"])  # numeric labels, each fitted on its own
    label_fractions: list[float] = field(default_factory=lambda: [0.1])  # of the train split's labelled objects
    seeds: int = 3  # seeds 0 .. seeds-1 (label subsets, head initialisation, batch order)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # at most this many passes over the label subset; with augmentations the from-scratch baseline's best
    # val epoch is often past 30 (spectra at 10% of labels: epoch 39), so a shorter cap would weaken it
    epochs: int = 60
    patience: int = 8  # stop after this many epochs without a better val MSE
    max_steps: int | None = None  # optional cap on optimiser steps per run
    batch_size: int = 64
    eval_batch_size: int = 256
    lr_encoder: float = 1e-4  # pretrained encoder + projection head
    lr_head: float = 1e-3  # the new regression head
    lr_scratch: float = 1e-3  # every parameter of the from-scratch baseline
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear learning-rate warm-up (at most a tenth of the planned steps), then constant
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    head_epochs: int = 0  # fine-tune only: first fit the new head alone on frozen embeddings (LP-FT); 0: off
    # pretraining's physics augmentations (astrofm.augment defaults: image rotations and flips, spectrum and
    # photometry noise redraws) on every training batch of finetune and scratch: without them the
    # from-scratch baseline overfits a few labels within ten epochs and reads weaker than it is
    augment: bool = True
    # the noise redraws among them: "choose" fits finetune and scratch both with and without them and keeps
    # the lower val MSE (a redraw doubles the noise variance, so training sees noisier spectra than val and
    # test do: it regularises some fits and blurs others; 10% of labels, 45-epoch seed 0, val and test agreed:
    # fine-tuning better without for redshift and sSFR, scratch better with for redshift, without for sSFR);
    # "on" or "off" fixes it. Images have no noise redraw: their fits run once.
    noise_redraws: str = "choose"
    hidden: int = 64  # regression head: two hidden layers of this width (the MLP probe's trunk)
    dropout: float = 0.1
    num_workers: int = 1  # loader workers reading the dataset once
    threads: int | None = None  # torch CPU threads; None: torch's default
    redshift_like: bool | None = None  # dz/(1+z) residuals for every target; None: decided from each one's name
    progress: bool = True  # tqdm progress bars
    overwrite: bool = False

    def __post_init__(self):
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets:
            raise ValueError("no target given: name at least one label")
        repeated = sorted({t for t in self.targets if self.targets.count(t) > 1})
        if repeated:
            raise ValueError(f"target(s) {repeated} given more than once")
        if self.noise_redraws not in NOISE_REDRAWS:
            raise ValueError(f"noise_redraws must be one of {list(NOISE_REDRAWS)}, got {self.noise_redraws!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        for fraction in self.label_fractions:
            if not 0 < fraction <= 1:
                raise ValueError(f"label fraction {fraction} is not in (0, 1]")
        positive = {"seeds": self.seeds, "epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "patience": self.patience}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("lr_encoder", "lr_head", "lr_scratch"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


# Fields a recipe file may set: everything but where the inputs and outputs are.
RECIPE_FIELDS = tuple(f.name for f in fields(FinetuneConfig) if f.name not in ("model", "data", "out"))


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of FinetuneConfig fields; unknown keys are refused, naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe file")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of fields, got {type(data).__name__}")
    if "target" in data and "targets" not in data:  # the one-label spelling of earlier recipes
        data["targets"] = data.pop("target")
    unknown = sorted(set(data) - set(RECIPE_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; known fields are {list(RECIPE_FIELDS)}")
    return data
