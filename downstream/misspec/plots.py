"""The misspecification report's figures and its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_POINTS = 2000  # per dataset on the 2-D map


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    _pyplot().close(fig)
    return name


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, the top two principal axes (2, D) and their explained-variance fractions, via SVD."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:2], (s[:2] ** 2) / np.sum(s ** 2)


def embedding_map(folder: Path, datasets: dict[str, np.ndarray], seed: int) -> str:
    """PCA of the pooled embeddings (each dataset subsampled equally, so none dominates the axes)."""
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    shown = {n: x[np.sort(rng.choice(len(x), min(len(x), MAX_POINTS), replace=False))] for n, x in datasets.items()}
    mean, axes, explained = pca_2d(np.concatenate(list(shown.values())).astype(np.float64))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, x in shown.items():
        xy = (x - mean) @ axes.T
        style = {"c": "k", "s": 4, "alpha": 0.5, "zorder": 3} if name == "observed" else {"s": 3, "alpha": 0.35}
        ax.scatter(xy[:, 0], xy[:, 1], label=f"{name} ({len(x)})", **style)
    ax.set(xlabel=f"PC1 ({explained[0]:.0%})", ylabel=f"PC2 ({explained[1]:.0%})",
           title="embeddings: observed (held-out) and simulated")
    ax.legend(fontsize=7, markerscale=3)
    return _save(fig, folder, "embedding_map.png")


def auc_bars(folder: Path, suites: dict[str, dict[str, Any]]) -> str:
    plt = _pyplot()
    names = list(suites)
    auc = np.array([suites[n]["auc"] for n in names])
    ci = np.array([suites[n]["auc_ci95"] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 4))
    ax.bar(names, auc, yerr=[auc - ci[:, 0], ci[:, 1] - auc], capsize=4, color="tab:blue", alpha=0.8)
    ax.axhline(0.5, color="k", ls="--", lw=1, label="indistinguishable (0.5)")
    for i, n in enumerate(names):
        ax.text(i, min(ci[i, 1] + 0.015, 1.04), f"p={suites[n]['p_value']:.3g}", ha="center", fontsize=7)
    ax.set(ylim=(0.3, 1.08), ylabel="held-out ROC AUC (simulated vs observed)", title="classifier two-sample test")
    ax.legend(fontsize=7, loc="lower right")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return _save(fig, folder, "auc.png")


def probability_histograms(folder: Path, names: list[str], probabilities: np.ndarray) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        ax.hist(probabilities[:, k], bins=bins, color=f"C{k}", alpha=0.8)
        ax.axvline(probabilities[:, k].mean(), color="k", ls="--", lw=1)
        ax.set(title=f"{name}: mean {probabilities[:, k].mean():.3f}", xlabel="P(suite | observed object)",
               ylabel="observed objects" if k == 0 else None)
    fig.suptitle("posterior model probabilities of the observed objects (equal priors)", fontsize=9)
    return _save(fig, folder, "model_probability.png")


def reliability_diagram(folder: Path, before: dict, after: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for table, style, tag in ((before, "o--", "before"), (after, "s-", "after")):
        if table["bins"]:
            ax.plot([b["confidence"] for b in table["bins"]], [b["accuracy"] for b in table["bins"]], style,
                    label=f"{tag} temperature (ECE {table['ece']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class)", ylabel="accuracy",
           title="model comparison, held-out simulated objects")
    if before["bins"] or after["bins"]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "one suite: nothing to compare", ha="center")
    return _save(fig, folder, "reliability.png")


def coverage_bars(folder: Path, suites: dict[str, dict[str, Any]], uncovered: float, level: float) -> str:
    plt = _pyplot()
    names = list(suites)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 3, 4))
    ax.bar(x - 0.2, [suites[n]["observed_covered_fraction"] for n in names], 0.4,
           label="observed objects covered by the suite")
    ax.bar(x + 0.2, [suites[n]["covered_fraction_of_suite"] for n in names], 0.4,
           label="suite objects among observations")
    ax.axhline(level, color="k", ls="--", lw=1, label=f"a perfect suite ({level:.0%})")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="fraction", title=f"kNN coverage; observed covered by no suite: {uncovered:.1%}")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, folder, "coverage.png")


def label_histograms(folder: Path, suite: str, flagged: dict[str, np.ndarray], other: dict[str, np.ndarray],
                     ranked: list[dict[str, Any]], n_top: int = 4) -> str | None:
    top = ranked[:n_top]
    if not top:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(top), figsize=(3.2 * len(top), 3.2), squeeze=False)
    for ax, row in zip(axes[0], top, strict=True):
        a, b = flagged[row["label"]], other[row["label"]]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        # Central 98% of the pooled values: heavy-tailed labels (fluxes) would squash everything in one bin.
        lo, hi = np.quantile(np.r_[a, b], [0.01, 0.99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        a, b = np.clip(a, bins[0], bins[-1]), np.clip(b, bins[0], bins[-1])
        ax.hist(b, bins=bins, density=True, alpha=0.5, color="k", label="observed")
        ax.hist(a, bins=bins, density=True, alpha=0.5, color="tab:red", label=f"{suite}, flagged")
        ax.set(title=f"{row['label']}\nKS {row['ks']:.2f} (selection alone {row['ks_selection']:.2f}), "
                      f"SMD {row['smd']:+.2f}", xlabel=row["label"])
        ax.title.set_fontsize(8)
    axes[0][0].legend(fontsize=7)
    return _save(fig, folder, f"differs_{suite}.png")


def markdown(metrics: dict[str, Any], table: str, images: list[str]) -> str:
    config = metrics["config"]
    comparison = metrics["model_comparison"]
    lines = [
        "# Simulation vs observation: misspecification report", "",
        f"Model `{config['model']}`, modality `{config['modality']}`; observed `{config['observed']}` "
        f"({metrics['n_observed']} objects of the {'/'.join(config['observed_splits'])} splits, never seen in "
        f"pretraining); classifier `{config['classifier']}`, seed {config['seed']}.", "",
        "```", table, "```", "",
        f"- Observed objects covered by no suite: **{metrics['uncovered_fraction']:.1%}** "
        f"(a perfect suite leaves about {1 - config['coverage_level']:.0%} uncovered by construction).",
        f"- Model comparison: held-out accuracy {comparison['heldout_accuracy']:.3f}, ECE "
        f"{comparison['ece']:.3f} after temperature {comparison['temperature']:.2f} "
        f"(before: {comparison['ece_before_temperature']:.3f}).", "",
        "## What differs (flagged simulated objects against all observed; top labels by KS beyond the "
        "selection's own)", "",
        "| suite | label | KS | KS of the selection alone | SMD | mean flagged | mean observed |",
        "|---|---|---|---|---|---|---|",
    ]
    for suite, entry in metrics["what_differs"].items():
        for row in entry["flagged_simulated"]["labels"][:3]:
            lines.append(f"| {suite} | {row['label']} | {row['ks']:.3f} | {row['ks_selection']:.3f} | {row['smd']:+.2f} | "
                         f"{row['mean_flagged']:.4g} | {row['mean_other']:.4g} |")
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in images]
    lines += ["", "Per-object probabilities and misfit scores: `observed_objects.csv`; everything else: "
              "`metrics.json`.", ""]
    return "\n".join(lines)
