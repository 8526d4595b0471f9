"""`astrofm regress --embeddings EMB_DIR --modality M|concat --target LABEL [LABEL ...] --out REPORT_DIR`: kNN, ridge
and MLP probes on frozen embeddings with split-conformal intervals, and a heteroscedastic Gaussian MLP
(`--method gaussian`) with intervals from its own sigma; metrics.json, PNG plots, report.md."""

from __future__ import annotations

import argparse
import math


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "regress", help="regression probes on frozen embeddings (kNN, ridge, MLP) with conformal intervals",
        description="Fit on the train split (a seeded, nested label fraction of it), choose hyper-parameters "
                    "and calibrate split-conformal 68%/95% intervals on val, report on test: R^2, RMSE, "
                    "bias, NMAD, outlier fraction, coverage. Writes REPORT_DIR/metrics.json, PNG plots, "
                    "report.md and predictions.parquet (predictions with intervals for the test objects and "
                    "for every object without the label).")
    parser.add_argument("--embeddings", required=True, metavar="EMB_DIR", help="embedding folder (astrofm embed)")
    parser.add_argument("--modality", nargs="+", required=True, metavar="M",
                        help="modality name(s), or 'concat' (all modalities joined, objects having them all)")
    parser.add_argument("--target", nargs="+", required=True, metavar="LABEL",
                        help="numeric label(s) to predict, each by its own probes (e.g. redshift log_stellar_mass)")
    parser.add_argument("--method", nargs="+", default=["knn", "linear", "mlp"],
                        choices=["knn", "linear", "mlp", "gaussian", "local_linear"],
                        help="probes (default: knn linear mlp); gaussian: an MLP predicting mean and sigma, "
                             "trained by Gaussian NLL, its intervals from its own sigma; local_linear: a "
                             "weighted ridge plane through each object's nearest neighbours in the kNN's "
                             "space (SDSS DR12's photo-z estimator), without the kNN's bias where labels "
                             "thin out")
    parser.add_argument("--label-fraction", nargs="+", type=float, default=[0.01, 0.1, 1.0], metavar="F",
                        help="fractions of the train split's labels (default: 0.01 0.1 1)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per fraction (default: 3)")
    parser.add_argument("--k", type=_k_value, default=None, metavar="K|auto",
                        help="neighbours of the kNN probe: a number (AstroCLIP's zero-shot protocol: 64) or "
                             "'auto', chosen on val from 4 8 16 32 64 128 (default: auto)")
    parser.add_argument("--knn-whiten", type=_whiten_value, default="auto", metavar="S|none|auto",
                        help="kNN distances on embeddings whitened by the train rows' covariance, shrunk by S "
                             "times its largest eigenvalue (a Mahalanobis distance); 'none': plain Euclidean "
                             "(AstroCLIP's protocol); 'auto': chosen on val from none 1e-4 1e-3 1e-2 0.1, "
                             "jointly with k (default: auto)")
    parser.add_argument("--knn-power", type=_power_value, default="auto", metavar="P|auto",
                        help="kNN weights 1/d^P (1: AstroCLIP's distance weights); 'auto': chosen on val "
                             "from 1 2 4, jointly with k and the whitening (default: auto)")
    parser.add_argument("--redshift-like", choices=["auto", "yes", "no"], default="auto",
                        help="dz/(1+z) residuals for bias/NMAD/outliers (default: auto, from the target name)")
    parser.add_argument("--predict", nargs="+", default=[], metavar="EMB_DIR",
                        help="other embedding folders of the same model whose objects predictions.parquet "
                             "also predicts (e.g. a survey without redshifts)")
    parser.add_argument("--coverage-by", default=None, metavar="LABEL",
                        help="also report the intervals' test coverage, and the point metrics (NMAD, bias, "
                             "outlier fraction, ...), in 5 equal-count bins of this label (e.g. mag_r: do "
                             "they hold for faint objects as for bright ones?)")
    parser.add_argument("--adaptive-scale", choices=["residual", "spread"], default="residual",
                        help="the width per object of the point probes' adaptive intervals: 'residual', the "
                             "probe's own mean training error among the object's 32 nearest training neighbours "
                             "(leave-one-out for kNN); 'spread', those neighbours' label spread (default: residual)")
    parser.add_argument("--adaptive-groups", type=int, default=5, metavar="N",
                        help="calibrate the adaptive intervals' multiplier separately in N equal-count groups of "
                             "predicted value (Mondrian conformal: coverage holds in each group; at least 200 val "
                             "rows a group, fewer groups where val is small); 1: one multiplier (default: 5)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _setting(text: str, cast, is_valid, problem: str, auto_value, allow_none: bool = False):
    """A kNN setting from the command line: 'auto' (-> auto_value), 'none' where allowed, or a valid number."""
    if text == "auto":
        return auto_value
    if allow_none and text == "none":
        return None
    try:
        value = cast(text)
    except ValueError:
        words = "a number, 'none' nor 'auto'" if allow_none else "a number nor 'auto'"
        raise argparse.ArgumentTypeError(f"{text!r} is neither {words}") from None
    if not is_valid(value):
        raise argparse.ArgumentTypeError(f"{value}: {problem}")
    return value


def _k_value(text: str) -> int | None:
    return _setting(text, int, lambda v: v >= 1, "need at least 1 neighbour", auto_value=None)


def _whiten_value(text: str) -> float | str | None:
    return _setting(text, float, lambda v: 0 < v < math.inf, "the shrinkage must be positive and finite", "auto",
                    allow_none=True)


def _power_value(text: str) -> float | str:
    return _setting(text, float, lambda v: 0 <= v < math.inf, "the weights' exponent must be >= 0 and finite",
                    "auto")


def run(args: argparse.Namespace) -> int:
    from downstream.regression import RegressionConfig, write_report

    config = RegressionConfig(embeddings=args.embeddings, out=args.out, targets=list(args.target),
                              modalities=list(args.modality), methods=list(args.method),
                              label_fractions=list(args.label_fraction), seeds=args.seeds, k=args.k,
                              knn_whiten=args.knn_whiten, knn_power=args.knn_power, predict=list(args.predict),
                              coverage_by=args.coverage_by, adaptive_scale=args.adaptive_scale,
                              adaptive_groups=args.adaptive_groups,
                              redshift_like={"auto": None, "yes": True, "no": False}[args.redshift_like],
                              overwrite=args.overwrite, progress=not args.no_progress)
    out = write_report(config)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    for entry in metrics["summary"]:
        mean = entry["mean"]
        print(f"{entry['target']:16s} {entry['modality']:10s} {entry['method']:8s} f={entry['label_fraction']:<5g} "
              f"R2 {mean['r2']:.4f}  NMAD {mean['nmad']:.4f}  outliers {mean['outlier_fraction']:.4f}  "
              f"cov68 {mean['coverage_68']:.3f}  cov95 {mean['coverage_95']:.3f}  "
              f"adaptive {mean['coverage_68_adaptive']:.3f} / {mean['coverage_95_adaptive']:.3f}"
              + (f"  NLL {mean['nll']:.4f}" if "nll" in mean else ""))
    print(f"report written to {out}")
    return 0
