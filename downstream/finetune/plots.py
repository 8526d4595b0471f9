"""The fine-tuning report's figures and its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from downstream.regression.plots import _pyplot

LABELS = {"finetune": "fine-tuned encoder", "scratch": "from scratch (supervised)", "probe": "MLP probe, frozen"}


def r2_vs_fraction(folder: Path, summary: list[dict[str, Any]], modality: str, targets: list[str]) -> str:
    """Test R^2 and NMAD against the label fraction, a row per target, a line per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(targets), 2, figsize=(10, 4 * len(targets)), squeeze=False)
    methods = list(dict.fromkeys(entry["method"] for entry in summary))
    for row, target in zip(axes, targets, strict=True):
        for ax, key in zip(row, ("r2", "nmad"), strict=True):
            for method in methods:
                entries = sorted((e for e in summary if e["method"] == method and e["target"] == target),
                                 key=lambda e: e["label_fraction"])
                ax.errorbar([e["label_fraction"] for e in entries], [e["mean"][key] for e in entries],
                            yerr=[e["std"][key] for e in entries], marker="o", capsize=3,
                            label=LABELS.get(method, method))
            ax.set(xscale="log", xlabel="label fraction of the train split", ylabel=f"test {key}",
                   title=f"{modality} -> {target}: {key} (mean ± std over seeds)")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "r2_vs_fraction.png", dpi=110)
    plt.close(fig)
    return "r2_vs_fraction.png"


def pred_vs_true(folder: Path, shown: dict[str, dict[str, Any]], fraction: float) -> str:
    """Predicted against true on test, a row per target ({target: {"y", "predictions"}}), a column per method."""
    plt = _pyplot()
    n_methods = max(len(one["predictions"]) for one in shown.values())
    fig, axes = plt.subplots(len(shown), n_methods, figsize=(4 * n_methods, 4 * len(shown)), squeeze=False)
    for row, (target, one) in zip(axes, shown.items(), strict=True):
        y = one["y"]
        for ax, (method, p) in zip(row, one["predictions"].items(), strict=False):
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
    targets = config["targets"]
    counts = "; ".join(f"{t}: {data['n_train_labelled'][t]} train, {data['n_val'][t]} val, {data['n_test'][t]} test"
                       for t in targets)
    residuals = ", ".join(f"{t} {'dz/(1+z)' if config['redshift_like'][t] else 'predicted - true'}" for t in targets)
    lines = [f"# Few-label fine-tuning: `{config['modality']}` -> " + ", ".join(f"`{t}`" for t in targets), "",
             f"Model `{config['model']}`, data `{config['data']}`. Each target is fitted on its own. Each method "
             f"fits on the same seeded label subset of a target's labelled train objects (seeds "
             f"0-{config['seeds'] - 1}), selects its epoch on val and is measured on test, the objects where "
             f"the target is finite ({counts}). Fine-tuned: encoder lr {config['lr_encoder']:g}, head lr "
             f"{config['lr_head']:g}; from scratch: lr {config['lr_scratch']:g}; warm-up {config['warmup_steps']} "
             f"steps, head-only epochs before fine-tuning {config['head_epochs']}, at most {config['epochs']} "
             f"epochs, patience {config['patience']}. Residuals for bias, NMAD, outliers: {residuals}.", ""]
    lines += [f"![{name}]({name})" for name in images]
    lines += ["", "| target | method | fraction | n_train | " + " | ".join(SUMMARY) + " |",
              "|---" * (4 + len(SUMMARY)) + "|"]
    order = {t: i for i, t in enumerate(targets)}
    for entry in sorted(metrics["summary"], key=lambda e: (order[e["target"]], e["label_fraction"], e["method"])):
        cells = [f"{entry['mean'][k]:.4f} ± {entry['std'][k]:.4f}" for k in SUMMARY]
        lines.append(f"| {entry['target']} | {entry['method']} | {entry['label_fraction']:g} | {entry['n_train']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY = ("r2", "rmse", "bias", "nmad", "outlier_fraction")
