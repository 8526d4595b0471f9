"""The regression report's figures and its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pred_vs_true(folder: Path, modality: str, by_target: dict[str, dict[str, dict]], fraction: float) -> str:
    """One row per target, one panel per method: predicted against true on the test split."""
    plt = _pyplot()
    methods = list(next(iter(by_target.values())))
    fig, axes = plt.subplots(len(by_target), len(methods), figsize=(4 * len(methods), 4 * len(by_target)),
                             squeeze=False)
    for row, (target, arrays) in zip(axes, by_target.items(), strict=True):
        for ax, method in zip(row, methods, strict=True):
            y, p = arrays[method]["y"], arrays[method]["p"]
            lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
            ax.scatter(y, p, s=3, alpha=0.4)
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
            ax.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title=f"{modality} {method}")
    fig.suptitle(f"test split, label fraction {fraction:g}, seed 0")
    fig.tight_layout()
    name = f"pred_vs_true_{modality}.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def calibration(folder: Path, shown: dict[str, dict[str, dict[str, dict]]], levels: list[float]) -> str:
    """One panel per target: empirical against nominal coverage of every modality and method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 5), squeeze=False)
    for ax, (target, by_modality) in zip(axes[0], shown.items(), strict=True):
        for modality, methods in by_modality.items():
            for method, arrays in methods.items():
                # conformal methods: intervals calibrated on val; gaussian: mean +- z sigma from its own sigma
                kind = "own sigma" if "sigma" in arrays else "conformal"
                line, = ax.plot(levels, arrays["curve"], marker=".", label=f"{modality} {method} ({kind})")
                if "curve_recal" in arrays:
                    ax.plot(levels, arrays["curve_recal"], ls=":", color=line.get_color(),
                            label=f"{modality} {method} (sigma x s, fitted on val)")
                ax.plot(levels, arrays["curve_adaptive"], ls="--", color=line.get_color(),
                        label=f"{modality} {method} (adaptive conformal)")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
        ax.set(xlabel="nominal coverage", ylabel="empirical coverage on test",
               xlim=(0, 1), ylim=(0, 1), title=f"interval calibration: {target}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=110)
    plt.close(fig)
    return "calibration.png"


PIT_BINS = 20


def pit_histograms(folder: Path, shown: dict[str, dict[str, dict[str, dict]]]) -> str:
    """One panel per target: the test PIT histogram of every probabilistic probe (own sigma, and sigma x s
    fitted on val), against the flat line of a calibrated one."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    edges = np.linspace(0.0, 1.0, PIT_BINS + 1)
    for ax, (target, by_modality) in zip(axes[0], shown.items(), strict=True):
        for modality, methods in by_modality.items():
            for method, arrays in methods.items():
                if "pit" not in arrays:
                    continue
                counts, _ = np.histogram(arrays["pit"], edges, density=True)
                line = ax.stairs(counts, edges, label=f"{modality} {method} (own sigma)")
                counts, _ = np.histogram(arrays["pit_recal"], edges, density=True)
                ax.stairs(counts, edges, ls=":", color=line.get_edgecolor(),
                          label=f"{modality} {method} (sigma x s, fitted on val)")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="calibrated")
        ax.set(xlabel="PIT = Phi((true - mean) / sigma)", ylabel="density on test", xlim=(0, 1),
               title=f"PIT: {target} (U: too narrow, hump: too wide)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "pit.png", dpi=110)
    plt.close(fig)
    return "pit.png"


def coverage_by(folder: Path, records: list[dict[str, Any]], label: str, fraction: float) -> str:
    """A row per target, a panel per modality and level: test coverage in bins of `label` for every method,
    its main intervals (solid) against the adaptive ones (dashed); seed 0, the largest label fraction."""
    plt = _pyplot()
    shown = [r for r in records if r["seed"] == 0 and r["label_fraction"] == fraction and "coverage_by" in r]
    targets = list(dict.fromkeys(r["target"] for r in shown))
    modalities = list(dict.fromkeys(r["modality"] for r in shown))
    panels = [(m, tag) for m in modalities for tag in (68, 95)]
    fig, axes = plt.subplots(len(targets), len(panels), figsize=(4.5 * len(panels), 4 * len(targets)), squeeze=False)
    for row, target in zip(axes, targets, strict=True):
        for ax, (modality, tag) in zip(row, panels, strict=True):
            for record in (r for r in shown if r["target"] == target and r["modality"] == modality):
                bins = record["coverage_by"]
                edges = np.asarray(bins["edges"])
                centres = 0.5 * (edges[:-1] + edges[1:])
                main = [np.nan if v is None else v for v in bins[f"coverage_{tag}"]]
                adaptive = [np.nan if v is None else v for v in bins[f"coverage_{tag}_adaptive"]]
                line, = ax.plot(centres, main, marker="o", label=f"{record['method']}")
                ax.plot(centres, adaptive, marker="s", ls="--", color=line.get_color(),
                        label=f"{record['method']} adaptive")
            ax.axhline(tag / 100, color="k", ls=":", lw=1)
            ax.set(xlabel=f"{label} (equal-count test bins)", ylabel="coverage on test",
                   title=f"{target}, {modality}: {tag}% intervals")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    name = f"coverage_by_{label}.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


BINNED_POINT_METRICS = (("nmad", "NMAD"), ("bias", "bias"), ("outlier_fraction", "outlier fraction"))


def metrics_by(folder: Path, records: list[dict[str, Any]], label: str, fraction: float) -> str:
    """A row per target: NMAD, bias and outlier fraction on test in bins of `label`, a line per modality and
    method (seed 0, the largest label fraction): how the estimates degrade from bright to faint."""
    plt = _pyplot()
    shown = [r for r in records if r["seed"] == 0 and r["label_fraction"] == fraction and "coverage_by" in r]
    targets = list(dict.fromkeys(r["target"] for r in shown))
    panels = len(BINNED_POINT_METRICS)
    fig, axes = plt.subplots(len(targets), panels, figsize=(4.5 * panels, 4 * len(targets)), squeeze=False)
    for row, target in zip(axes, targets, strict=True):
        for ax, (key, name) in zip(row, BINNED_POINT_METRICS, strict=True):
            for record in (r for r in shown if r["target"] == target):
                bins = record["coverage_by"]
                edges = np.asarray(bins["edges"])
                values = [np.nan if v is None else v for v in bins[key]]
                ax.plot(0.5 * (edges[:-1] + edges[1:]), values, marker="o",
                        label=f"{record['modality']} {record['method']}")
            if key == "bias":
                ax.axhline(0.0, color="k", ls=":", lw=1)
            ax.set(xlabel=f"{label} (equal-count test bins)", ylabel=f"{name} on test", title=f"{target}: {name}")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    name = f"metrics_by_{label}.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def metric_vs_fraction(folder: Path, summary: list[dict[str, Any]]) -> str:
    """A row of R^2, NMAD and 68% coverage against the label fraction per target."""
    plt = _pyplot()
    curves: dict[str, dict[tuple, list]] = {}
    for entry in summary:
        curves.setdefault(entry["target"], {}).setdefault((entry["modality"], entry["method"]), []).append(entry)
    fig, axes = plt.subplots(len(curves), 3, figsize=(13, 4 * len(curves)), squeeze=False)
    for row, (target, by_probe) in zip(axes, curves.items(), strict=True):
        for ax, key in zip(row, ("r2", "nmad", "coverage_68"), strict=True):
            for (modality, method), entries in by_probe.items():
                entries = sorted(entries, key=lambda e: e["label_fraction"])
                ax.errorbar([e["label_fraction"] for e in entries], [e["mean"][key] for e in entries],
                            yerr=[e["std"][key] for e in entries], marker="o", capsize=3,
                            label=f"{modality} {method}")
            if key == "coverage_68":
                ax.axhline(0.68, color="k", ls="--", lw=1)
            ax.set(xscale="log", xlabel="label fraction of the train split", ylabel=key,
                   title=f"{target}: {key} (mean ± std)")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "metric_vs_fraction.png", dpi=110)
    plt.close(fig)
    return "metric_vs_fraction.png"


def _fmt(entry: dict[str, Any], key: str) -> str:
    mean, std = entry["mean"][key], entry["std"][key]
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(mean) else str(mean)


def markdown(metrics: dict[str, Any], images: list[str]) -> str:
    config = metrics["config"]
    residual = {target: "dz/(1+z)" if flag else "predicted - true" for target, flag in config["redshift_like"].items()}
    lines = [f"# Regression of {', '.join(f'`{t}`' for t in config['targets'])} on frozen embeddings", "",
             f"Embeddings: `{config['embeddings']}`; fitted on train (label fractions "
             f"{config['label_fractions']}, {config['seeds']} seeds), hyper-parameters and conformal "
             f"calibration on val, every number on test. Residuals for bias, NMAD, outliers: "
             + "; ".join(f"`{t}` {r}" for t, r in residual.items()) + ".", ""]
    lines += [f"![{name}]({name})" for name in images]
    lines += ["", "`predictions.parquet`: each probe's predictions and 68%/95% intervals (largest label fraction, "
              "seed 0) for the test objects, beside their truth, and for every object without the label "
              "(and of any --predict folder). Their coverage holds for objects exchangeable with the val split, "
              "not for a survey of other physics or selection."]
    keys = ("r2", "rmse", "bias", "nmad", "outlier_fraction", "coverage_68", "coverage_95", "width_68",
            "coverage_68_adaptive", "coverage_95_adaptive", "width_68_adaptive")
    point_scale = {"residual": "the probe's mean absolute training residual (leave-one-out for kNN) over the "
                               "object's 32 nearest training neighbours",
                   "spread": "the label spread of the object's 32 nearest training neighbours"}[
        config["adaptive_scale"]]
    lines += ["", "Adaptive intervals (*_adaptive): split-conformal with a per-object scale (the gaussian's sigma, "
              f"else {point_scale}), so the width follows how "
              "hard each object is; the same guarantee on average, and closer to it for bright and faint alike. "
              f"The multiplier is calibrated on val in up to {config.get('adaptive_groups', 1)} equal-count groups "
              "of predicted value (Mondrian conformal), so the guarantee also holds within each group."]
    if any("nll" in entry["mean"] for entry in metrics["summary"]):
        keys += ("nll", "crps", "pit_ks")
        lines += ["", "Method `gaussian`: intervals mean ± z·sigma from its own predicted sigma (coverage, nll, "
                  "crps and pit_ks use that sigma; metrics.json also holds *_recal keys with sigma scaled by s "
                  "fitted on val). crps: the mean continuous ranked probability score of N(mean, sigma²), in the "
                  "target's units (lower is better); pit_ks: the Kolmogorov-Smirnov distance of the PIT values "
                  "Φ((true - mean) / sigma) from uniform (0 for a calibrated predictor; pit.png shows them). "
                  "The other methods' intervals are split-conformal, calibrated on val."]
    lines += ["", "| target | modality | method | fraction | n_train | " + " | ".join(keys) + " |",
              "|---" * (5 + len(keys)) + "|"]
    for entry in metrics["summary"]:
        lines.append(f"| {entry['target']} | {entry['modality']} | {entry['method']} | {entry['label_fraction']:g} | "
                     f"{entry['n_train']} | "
                     + " | ".join(_fmt(entry, key) if key in entry["mean"] else "" for key in keys) + " |")
    return "\n".join(lines + _knn_choices(metrics["records"]) + _coverage_by_table(metrics)) + "\n"


def _coverage_by_table(metrics: dict[str, Any]) -> list[str]:
    """68% coverage in the `coverage_by` bins, main against adaptive intervals (seed 0, largest fraction)."""
    label = metrics["config"].get("coverage_by")
    if not label:
        return []
    fraction = metrics["config"]["label_fractions"][-1]
    shown = [r for r in metrics["records"] if r["seed"] == 0 and r["label_fraction"] == fraction]
    edges = shown[0]["coverage_by"]["edges"]
    bins = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    lines = ["", f"68% coverage on test in bins of `{label}` (seed 0, label fraction {fraction:g}; "
             f"bins of the first probe: {', '.join(bins)}), main / adaptive intervals:", "",
             "| target | modality | method | " + " | ".join(f"bin {i + 1}" for i in range(len(bins))) + " |",
             "|---" * (3 + len(bins)) + "|"]

    def cell(a, b):
        return "" if a is None or b is None else f"{a:.2f} / {b:.2f}"

    for r in shown:
        by = r["coverage_by"]
        lines.append(f"| {r['target']} | {r['modality']} | {r['method']} | "
                     + " | ".join(cell(a, b) for a, b in zip(by["coverage_68"], by["coverage_68_adaptive"], strict=True))
                     + " |")
    lines += ["", f"NMAD / outlier fraction on test in the same bins of `{label}`:", "",
              "| target | modality | method | " + " | ".join(f"bin {i + 1}" for i in range(len(bins))) + " |",
              "|---" * (3 + len(bins)) + "|"]

    def point(nmad, outliers):
        return "" if nmad is None or outliers is None else f"{nmad:.3g} / {outliers:.3f}"

    for r in shown:
        by = r["coverage_by"]
        lines.append(f"| {r['target']} | {r['modality']} | {r['method']} | "
                     + " | ".join(point(a, b) for a, b in zip(by["nmad"], by["outlier_fraction"], strict=True)) + " |")
    return lines


def _knn_choices(records: list[dict[str, Any]]) -> list[str]:
    """One line per neighbour probe (knn, local_linear), target and modality: what it chose on val (seed 0)
    at each label fraction."""
    by_probe: dict[tuple[str, str, str], list[str]] = {}
    for record in records:
        if record["method"] not in ("knn", "local_linear") or record["seed"] != 0:
            continue
        chosen = record["chosen"]
        whiten = chosen.get("whiten")
        distance = "plain distances" if whiten is None else f"whitened, shrinkage {whiten:g}"
        if record["method"] == "knn":
            choice = f"k={chosen['k']}, weights 1/d^{chosen.get('power', 1):g}, {distance}"
        else:
            choice = f"k={chosen['k']}, a plane over {chosen['components']} axes, ridge {chosen['ridge']:g}, {distance}"
        by_probe.setdefault((record["method"], record["target"], record["modality"]), []).append(
            f"f={record['label_fraction']:g}: {choice}")
    names = {"knn": "kNN", "local_linear": "Local linear kNN"}
    return ([""] + [f"{names[method]} for {target} on {modality}, chosen on val (seed 0): " + "; ".join(choices) + "."
                    for (method, target, modality), choices in by_probe.items()]) if by_probe else []
