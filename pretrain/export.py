"""From a training run to a model folder (config.json + model.safetensors + model card).

`astrofm.models.load_model(folder)` loads the result without Lightning and without pickle.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from astrofm import __version__
from astrofm.models.io import save_model
from astrofm.models.multimodal import MultiModalModel

CHECKPOINT_KEY = "astrofm"
MODEL_PREFIX = "model."  # the LightningModule holds the MultiModalModel as `self.model`


def model_card(config: dict[str, Any], info: dict[str, Any]) -> str:
    data = info.get("data", {})
    provenance = data.get("provenance", {})
    metrics = info.get("metrics", {})
    lines = [
        "# astrofm contrastive model", "",
        f"Exported {datetime.now(timezone.utc).isoformat(timespec='seconds')} by astrofm {__version__}"
        f" from {info.get('source', 'a training run')}.", "",
        "## Training data",
        f"- dataset: {data.get('name', 'unknown')} ({data.get('path', 'unknown path')}), "
        f"{data.get('train_objects', '?')} training objects",
    ]
    if provenance:
        lines.append("- provenance: " + ", ".join(f"{k}={provenance[k]}" for k in
                                                   ("generator", "suite", "seed", "n") if k in provenance))
    epochs = epochs_text(info.get("epochs_trained"), info.get("epoch_partial", False))
    lines += ["", "## Recipe", f"- recipe: {info.get('recipe', 'unknown')}",
              f"- steps: {info.get('global_step', '?')}, epochs: {epochs}", "",
              "## Model",
              f"- modalities: {', '.join(config.get('encoders', {}))}",
              f"- embedding dimension: {config.get('embed_dim')}"]
    lines += [f"- {m}: {spec['class_path']}" for m, spec in config.get("encoders", {}).items()]
    if metrics:
        lines += ["", "## Validation at export"] + [f"- {k}: {v:.4f}" for k, v in sorted(metrics.items())]
    lines += ["", "Load with `astrofm.load_model(folder)`; `model.embed(batch)` gives modality -> (B, D)."]
    return "\n".join(lines) + "\n"


def epochs_text(epochs: int | None, partial: bool) -> str:
    """Whole epochs in words, for model cards and reports: "30", or "3 and part of one more"."""
    if epochs is None:
        return "?"
    return f"{epochs} and part of one more" if partial else str(epochs)


def epochs_trained(checkpoint: dict[str, Any]) -> tuple[int | None, bool]:
    """(whole epochs trained, whether a further epoch was cut short, e.g. by max_time). The checkpoint's
    `epoch` cannot tell: depending on when Lightning saved it, it is the epoch in progress (0-based) or the
    count of finished ones. The fit loop's progress counters can: an epoch that started but was not
    processed was saved mid-way; one processed without reaching its last batch was stopped early (Lightning
    counts a stopped epoch as processed)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = fit_loop.get("epoch_progress", {}).get("total", {})
    if "processed" not in progress:
        return None, False
    processed, started = int(progress["processed"]), int(progress.get("started", 0))
    if started > processed:
        return processed, True
    reached_last_batch = fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch", True)
    if processed > 0 and not reached_last_batch:
        return processed - 1, True
    return processed, False


def export_model(model: MultiModalModel, out: str | os.PathLike, info: dict[str, Any]) -> Path:
    config = model.to_config()
    save_model(model, out, model_card=model_card(config, info), extra={"training": info})
    return Path(out)


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike,
                      metrics: dict[str, float] | None = None) -> Path:
    """Export any checkpoint written by `astrofm pretrain fit` (last, best or periodic)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no such checkpoint")
    # Lightning checkpoints hold only tensors and plain containers: weights_only refuses anything else.
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    if CHECKPOINT_KEY not in checkpoint:
        raise ValueError(f"{ckpt}: field {CHECKPOINT_KEY!r} missing; not a checkpoint of astrofm pretrain fit")
    stored = checkpoint[CHECKPOINT_KEY]
    model = MultiModalModel.from_config(stored["model_config"])
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    model.load_state_dict(state, strict=True)
    info = {"source": str(ckpt), "data": stored.get("data", {}), "recipe": stored.get("recipe", "unknown"),
            "global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch"),
            "metrics": metrics or {}}
    info["epochs_trained"], info["epoch_partial"] = epochs_trained(checkpoint)
    return export_model(model.eval(), out, info)
