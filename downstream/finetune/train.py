"""A plain, seeded torch loop: AdamW with two parameter groups, linear warm-up, early stopping on val MSE.

One run sees only its training rows (to fit) and the val rows (to choose the epoch); the weights of the
best val epoch are kept.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from astrofm.augment import AugmentConfig, augment_batch
from downstream.finetune.data import Rows
from downstream.finetune.model import Regressor


@dataclass
class TrainSettings:
    lr_encoder: float  # encoder + projection head
    lr_head: float  # the regression head
    epochs: int = 30
    patience: int = 5
    max_steps: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    warmup_steps: int = 50  # at most a tenth of the planned steps (tiny subsets take few steps)
    head_epochs: int = 0  # first train the head alone on frozen embeddings for this many epochs (LP-FT)
    augment: AugmentConfig | None = None  # applied to every training batch (never to val or the scales)
    grad_clip: float = 1.0
    progress: bool = False
    label: str = ""  # progress bar description


def make_optimizer(net: Regressor, settings: TrainSettings) -> torch.optim.AdamW:
    groups = [{"name": "encoder", "params": net.encoder_parameters(), "lr": settings.lr_encoder},
              {"name": "head", "params": net.head_parameters(), "lr": settings.lr_head}]
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def warmup(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Each group's rate ramps linearly from 1/steps of its value to its value over `steps` steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(steps, 1)))


@torch.no_grad()
def run_batches(fn, rows: Rows, batch_size: int) -> torch.Tensor:
    """fn(batch inputs) over rows in order, concatenated."""
    return torch.cat([fn(rows.batch(index)) for index in torch.arange(len(rows)).split(batch_size)])


def predict(net: Regressor, rows: Rows, batch_size: int = 256) -> np.ndarray:
    net.eval()
    return net.to_target(run_batches(net, rows, batch_size))


def fit(net: Regressor, train: Rows, val: Rows, settings: TrainSettings, seed: int) -> dict:
    """Train `net` on train rows, keep the best val epoch; returns what happened (epochs, steps, val MSE)."""
    start = time.perf_counter()
    net.eval()
    embeddings = run_batches(net.embed, train, settings.eval_batch_size)
    net.set_scales(embeddings, train.y)
    yt, yv = net.standardise(train.y), net.standardise(val.y)
    head_info = {}
    if settings.head_epochs:
        val_embeddings = run_batches(net.embed, val, settings.eval_batch_size)
        head_info = fit_head(net, embeddings, yt, val_embeddings, yv, settings, seed)
    optimizer = make_optimizer(net, settings)
    planned = -(-len(train) // settings.batch_size) * settings.epochs
    planned = min(planned, settings.max_steps or planned)
    warmup_steps = min(settings.warmup_steps, max(1, planned // 10))
    scheduler = warmup(optimizer, warmup_steps)
    generator = torch.Generator().manual_seed(seed)
    augment_generator = torch.Generator().manual_seed(seed + 2)  # its own stream: batch order stays the same
    best, best_state, best_epoch, epoch, steps = float("inf"), None, 0, 0, 0
    if head_info:  # epoch 0, the fitted head on the untouched encoder, is a candidate too
        best, best_state = head_info["head_val_mse"] / float(net.target_scale) ** 2, copy.deepcopy(net.state_dict())
    bar = _progress(settings, len(train))
    for epoch in range(1, settings.epochs + 1):
        net.train()
        for index in torch.randperm(len(train), generator=generator).split(settings.batch_size):
            inputs = train.batch(index)
            if settings.augment is not None:
                modality = net.encoder.modality
                inputs = augment_batch({modality: inputs}, settings.augment, augment_generator)[modality]
            loss = torch.nn.functional.mse_loss(net(inputs), yt[index])
            optimizer.zero_grad()
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            steps += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", best_val=f"{best:.3f}")
            if settings.max_steps and steps >= settings.max_steps:
                break
        net.eval()
        val_mse = float(torch.mean((run_batches(net, val, settings.eval_batch_size) - yv) ** 2))
        if best_state is None or val_mse < best - 1e-6:
            best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(net.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
        if settings.max_steps and steps >= settings.max_steps:
            break
    if bar is not None:
        bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return {"best_epoch": best_epoch, "epochs": epoch, "steps": steps, "warmup_steps": warmup_steps, **head_info,
            "val_mse": best * float(net.target_scale) ** 2, "seconds": round(time.perf_counter() - start, 2)}


def fit_head(net: Regressor, train_z: torch.Tensor, yt: torch.Tensor, val_z: torch.Tensor, yv: torch.Tensor,
             settings: TrainSettings, seed: int) -> dict:
    """Linear-probe-then-fine-tune: train only the head on the frozen encoder's (cached) embeddings first,
    so that fine-tuning starts from a fitted head instead of sending a random head's gradients into the
    pretrained encoder (Kumar et al. 2022). Keeps the head of the best val MSE."""
    train_z = (train_z - net.embedding_mean) / net.embedding_scale
    val_z = (val_z - net.embedding_mean) / net.embedding_scale
    optimizer = torch.optim.AdamW(net.head_parameters(), lr=settings.lr_head, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed + 1)
    best, best_state, best_epoch = float("inf"), None, 0
    for epoch in range(1, settings.head_epochs + 1):
        net.head.train()
        for index in torch.randperm(len(train_z), generator=generator).split(settings.batch_size):
            loss = torch.nn.functional.mse_loss(net.head(train_z[index]).squeeze(1), yt[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.head.eval()
        with torch.no_grad():
            val_mse = float(torch.mean((net.head(val_z).squeeze(1) - yv) ** 2))
        if best_state is None or val_mse < best - 1e-6:
            best, best_epoch, best_state = val_mse, epoch, copy.deepcopy(net.head.state_dict())
    net.head.load_state_dict(best_state)
    return {"head_best_epoch": best_epoch, "head_val_mse": best * float(net.target_scale) ** 2}


def _progress(settings: TrainSettings, n: int):
    if not settings.progress:
        return None
    from tqdm import tqdm

    per_epoch = -(-n // settings.batch_size)
    total = per_epoch * settings.epochs
    return tqdm(total=min(total, settings.max_steps or total), desc=settings.label, unit="step", leave=False)
