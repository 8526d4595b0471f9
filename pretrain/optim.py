"""AdamW with linear warm-up and cosine decay, and the parameter groups that get no weight decay.

A run capped by wall time (Trainer max_time) usually stops long before its planned last step, with the
learning rate still high. With `anneal_by_time` the cosine follows whichever is further along, the
steps or the clock, so the rate reaches its floor when the time runs out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class OptimizerConfig:
    lr: float = 1e-3  # peak learning rate, reached at the end of warm-up
    weight_decay: float = 0.05  # AdamW decay on weight matrices only (not biases, norms, embeddings, scale)
    betas: tuple[float, float] = (0.9, 0.98)  # CLIP-style beta2 for stability with large logit scales
    eps: float = 1e-6
    warmup_steps: int = 100  # linear warm-up from 0
    min_lr_ratio: float = 0.05  # cosine decays to lr x min_lr_ratio at the last step
    anneal_by_time: bool = True  # with Trainer max_time: reach the floor by the time limit if it comes first


def parameter_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        # Matrices and conv kernels decay; biases, norm scales, embeddings and the logit scale do not.
        is_embedding = "embed" in name.split(".")[-1] or name.endswith("token") or "position" in name
        (decay if parameter.ndim >= 2 and not is_embedding else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float,
                  time_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at `step` (0-based); time_fraction: the share of the time limit used."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps), time_fraction))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(module: torch.nn.Module, config: OptimizerConfig, total_steps: int,
                    time_fraction: Callable[[], float] | None = None) -> dict:
    """The `configure_optimizers` return value: AdamW plus a per-step LambdaLR schedule. time_fraction,
    if given, returns the share of the run's time limit used so far (the same on every rank)."""
    optimizer = torch.optim.AdamW(parameter_groups(module, config.weight_decay), lr=config.lr,
                                  betas=tuple(config.betas), eps=config.eps)
    warmup = min(config.warmup_steps, max(total_steps // 2, 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total_steps, config.min_lr_ratio,
                                              time_fraction() if time_fraction else 0.0))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
