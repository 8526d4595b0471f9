"""The fine-tuning report's figures and its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from downstream.regression.plots import _pyplot

LABELS = {"finetune": "fine-tuned encoder", "scratch": "from scratch (supervised)", "probe": "MLP probe, frozen"}


def r2_vs_fraction(folder: Path, summary: list[dict[str, Any]], modality: str, target: str) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    methods = list(dict.fromkeys(entry["method"] for entry in summary))
    for ax, key in zip(axes, ("r2", "nmad"), strict=True):
        for method in methods:
            entries = sorted((e for e in summary if e["method"] == method), key=lambda e: e["label_fraction"])
            ax.errorbar([e["label_fraction"] for e in entries], [e["mean"][key] for e in entries],
                        yerr=[e["std"][key] for e in entries], marker="o", capsize=3, label=LABELS.get(method, method))
        ax.set(xscale="log", xlabel="label fraction of the train split", ylabel=f"test {key}",
               title=f"{modality} -> {target}: {key} (mean ± std over seeds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "r2_vs_fraction.png", dpi=110)
    plt.close(fig)
    return "r2_vs_fraction.png"


def pred_vs_true(folder: Path, y: np.ndarray, predictions: dict[str, np.ndarray], target: str,
                 fraction: float) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(predictions), figsize=(4 * len(predictions), 4), squeeze=False)
    for ax, (method, p) in zip(axes[0], predictions.items(), strict=True):
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.scatter(y, p, s=3, alpha=0.4)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title=LABELS.get(method, method))
    fig.suptitle(f"test split, label fraction {fraction:g}, seed 0")
    fig.tight_layout()
    fig.savefig(folder / "pred_vs_true.png", dpi=110)
    plt.close(fig)
    return "pred_vs_true.png"


def markdown(metrics: dict[str, Any], images: list[str]) -> str:
    config, data = metrics["config"], metrics["data"]
    lines = [f"# Few-label fine-tuning: `{config['modality']}` -> `{config['target']}`", "",
             f"Model `{config['model']}`, data `{config['data']}`. Each method fits on the same seeded label "
             f"subset of the {data['n_train_labelled']} labelled train objects (seeds 0-{config['seeds'] - 1}), "
             f"selects its epoch on val ({data['n_val']} objects); every number is on test ({data['n_test']} "
             f"objects). Fine-tuned: encoder lr {config['lr_encoder']:g}, head lr {config['lr_head']:g}; "
             f"from scratch: lr {config['lr_scratch']:g}; warm-up {config['warmup_steps']} steps, head-only "
             f"epochs before fine-tuning {config['head_epochs']}, at most "
             f"{config['epochs']} epochs, patience {config['patience']}. Residuals "
             f"{'dz/(1+z)' if config['redshift_like'] else 'predicted - true'} for bias, NMAD, outliers.", ""]
    lines += [f"![{name}]({name})" for name in images]
    lines += ["", "| method | fraction | n_train | " + " | ".join(SUMMARY) + " |", "|---" * (3 + len(SUMMARY)) + "|"]
    for entry in sorted(metrics["summary"], key=lambda e: (e["label_fraction"], e["method"])):
        cells = [f"{entry['mean'][k]:.4f} ± {entry['std'][k]:.4f}" for k in SUMMARY]
        lines.append(f"| {entry['method']} | {entry['label_fraction']:g} | {entry['n_train']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY = ("r2", "rmse", "bias", "nmad", "outlier_fraction")
