"""The generation report's figures and its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from downstream.regression.metrics import r2

COLOURS = {"decoder": "C3", "knn": "C0", "raw": "C2", "train_mean": "C1", "true spectrum": "k"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _examples(shown: dict[str, Any], n: int) -> np.ndarray:
    """Test rows spread over the decoder's (else the first method's) chi2 quantiles, best to worst."""
    chi2 = next(iter(shown["chi2"].values())) if "decoder" not in shown["chi2"] else shown["chi2"]["decoder"]
    order = np.argsort(chi2)
    return order[np.unique(np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int))]


def _save(fig, folder: Path, name: str, tight: bool = True) -> str:
    if tight:  # tight_layout measures every text; a big grid gets fixed margins instead
        fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    _pyplot().close(fig)
    return name


def spectra_grid(folder: Path, shown: dict[str, Any], config, spec: dict[str, Any]) -> str:
    """Rows: test objects; columns: methods; the truth in grey with its 1-sigma noise band."""
    plt = _pyplot()
    rows, names = _examples(shown, config.n_examples), list(shown["generated"])
    n_pixels = shown["truth"].shape[1]
    wave = spec.get("wave_min", 0.0) + spec.get("wave_step", 1.0) * np.arange(n_pixels)
    fig, axes = plt.subplots(len(rows), len(names), figsize=(4.2 * len(names), 2.4 * len(rows)), squeeze=False,
                             sharex=True)
    for i, row in enumerate(rows):
        truth, ivar = shown["truth"][row], shown["ivar"][row]
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.nan)
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.fill_between(wave, truth - sigma, truth + sigma, color="0.8", lw=0, label="true ± 1σ")
            ax.plot(wave, truth, color="0.45", lw=0.5, label="true")
            ax.plot(wave, shown["generated"][name][row], color=COLOURS.get(name, "C1"), lw=0.8, label=name)
            ax.set_title(f"{name}: {shown['ids'][row]}  χ²={shown['chi2'][name][row]:.2f}", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("wavelength (Å)")
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=0.95, wspace=0.15, hspace=0.3)
    return _save(fig, folder, "generated_vs_true.png", tight=False)


def chi2_distribution(folder: Path, shown: dict[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = {name: np.log10(np.maximum(chi2, 1e-6)) for name, chi2 in shown["chi2"].items()}
    lo = min(float(v.min()) for v in values.values())
    hi = max(float(v.max()) for v in values.values())
    bins = np.linspace(lo, hi + 1e-6, 50)
    for name, v in values.items():
        ax.hist(v, bins=bins, histtype="step", lw=1.5, color=COLOURS.get(name, "C1"),
                label=f"{name} (median {np.median(shown['chi2'][name]):.2f})")
    ax.axvline(0.0, color="k", ls=":", lw=1)
    ax.set(xlabel="log10 χ² per pixel (test objects)", ylabel="objects")
    ax.legend(fontsize=8)
    return _save(fig, folder, "chi2_distribution.png")


def flux_pred_vs_true(folder: Path, shown: dict[str, Any], bands: list[str]) -> str:
    """Rows: methods; columns: bands; asinh axes so faint and bright objects both show."""
    plt = _pyplot()
    names = list(shown["generated"])
    fig, axes = plt.subplots(len(names), len(bands), figsize=(2.8 * len(bands), 2.8 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        for j, band in enumerate(bands):
            ax = axes[i, j]
            t, p = np.arcsinh(shown["truth"][:, j]), np.arcsinh(shown["generated"][name][:, j])
            ax.scatter(t, p, s=2, alpha=0.4, color=COLOURS.get(name, "C1"))
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{name} {band}", fontsize=8)
            ax.set(xlabel="asinh true flux", ylabel="asinh generated flux")
    return _save(fig, folder, "flux_pred_vs_true.png")


def consistency(folder: Path, shown: dict[str, Any], label: str) -> str:
    plt = _pyplot()
    names = list(shown["consistency"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        y, p = shown["consistency"][name]["true"], shown["consistency"][name]["predicted"]
        ax.scatter(y, p, s=3, alpha=0.4, color=COLOURS.get(name, "C1"))
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"true {label}", ylabel=f"{label} read from spectrum", title=f"{name} (R² {r2(y, p):.3f})")
    return _save(fig, folder, "consistency.png")


def all_figures(folder: Path, metrics: dict[str, Any], shown: dict[str, Any], config) -> list[str]:
    if config.target == "spectrum":
        images = [spectra_grid(folder, shown, config, shown["target_spec"])]
    else:
        images = [flux_pred_vs_true(folder, shown, list(shown["target_spec"]["bands"]))]
    images.append(chi2_distribution(folder, shown))
    if shown["consistency"]:
        images.append(consistency(folder, shown, config.label))
    return images


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(metrics: dict[str, Any], images: list[str]) -> str:
    config = metrics["config"]
    lines = [f"# Generation: {config['source']} → {config['target']}", "",
             f"Model `{config['model']}`, data `{config['data']}`. Fitted on train, early-stopped / k chosen on "
             "val, measured on test. χ² per pixel against the truth's noise (≈1 for a perfect noiseless "
             f"prediction); MSE in the normalised space: {metrics['codec']['normalised_space']}. "
             f"Target code: {metrics['codec']['codec']}.", ""]
    spectrum = config["target"] == "spectrum"
    header = ["method", "role", "n_test", "χ² median", "χ² mean", "MSE median", "MSE mean", "chosen"]
    if spectrum:
        header += [f"{config['label']} R²", "NMAD", "outliers"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in metrics["records"]:
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in r["chosen"].items() if not isinstance(v, dict))
        row = [r["method"], r["role"], r["n_test"], r["chi2_median"], r["chi2_mean"], r["mse_median"],
               r["mse_mean"], chosen]
        if spectrum:
            c = r.get("consistency") or {}
            row += [c.get("r2"), c.get("nmad"), c.get("outlier_fraction")]
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    knn = next((r for r in metrics["records"] if r["method"] == "knn"), None)
    if spectrum and knn and knn["chosen"].get("k") == 1 and knn.get("consistency"):
        lines += ["", "Note: with k = 1 the kNN baseline's spectra are train spectra, whose embeddings the "
                      f"{config['label']} regressor holds; its read-back {config['label']} is that neighbour's label."]
    ceiling = metrics.get("consistency_ceiling")
    if ceiling:
        lines += ["", f"Consistency ceiling (true test spectra through the same encoder and regressor): "
                      f"R² {ceiling['r2']:.4f}, NMAD {ceiling['nmad']:.4f}, outliers {ceiling['outlier_fraction']:.4f}."]
    recon = metrics["codec"].get("reconstruction_of_test_truth")
    if recon:
        lines += ["", f"Code ceiling (true test spectra encoded and decoded): χ² median {recon['chi2_median']:.4g}, "
                      f"MSE median {recon['mse_median']:.4g}."]
    if not spectrum:
        lines += ["", "Colour consistency (generated minus true adjacent-band colour, mag):", ""]
        for r in metrics["records"]:
            c = r.get("consistency") or {}
            parts = [f"{k}: NMAD {v['nmad']:.3f}" for k, v in c.items() if isinstance(v, dict) and v.get("n")]
            lines.append(f"- {r['method']}: " + "; ".join(parts))
    lines.append("")
    for image in images:
        lines += [f"![{image}]({image})", ""]
    return "\n".join(lines)
