"""`astrofm misspec`: simulated suites against observations, in the embedding space of a model pretrained
on the observed data.

Protocol:
    observed objects: the val and test splits only (the model was pretrained on the train split, whose
        embeddings may be tell-tale); simulated objects: every split;
    halves: by object index, so a same-seed simulated twin of an observed object is always in its half;
    per suite: classifier two-sample test (two_sample.py), kNN coverage both ways (coverage.py), label
        differences of the flagged objects (differs.py);
    across suites: model comparison (comparison.py) and the fraction of observed objects no suite covers.

Output: REPORT_DIR/metrics.json, observed_objects.csv, PNG figures and report.md (plots.markdown).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.atomic import staged_folder
from astrofm.reports import check_report_target, write_metrics
from downstream.misspec.config import OBSERVED_SPLITS, SIMULATED_SPLITS, MisspecConfig
from downstream.misspec.embed import Embedded


def _check_paths(config: MisspecConfig) -> None:
    if not Path(config.model).is_dir():
        raise FileNotFoundError(f"--model {config.model}: no such model folder")
    if not (Path(config.observed) / "manifest.json").is_file():
        raise FileNotFoundError(f"--observed {config.observed}: not a dataset folder (no manifest.json)")
    for name, path in config.simulated.items():
        if not (Path(path) / "manifest.json").is_file():
            raise FileNotFoundError(f"--simulated {name}={path}: not a dataset folder (no manifest.json)")


def load_embeddings(config: MisspecConfig) -> tuple[Embedded, dict[str, Embedded]]:
    import astrofm
    from downstream.misspec.embed import embed_dataset

    _check_paths(config)
    model = astrofm.load_model(config.model)

    def load(path: str, name: str, splits: tuple[str, ...]) -> Embedded:
        data = embed_dataset(model, path, name, config.modality, splits, config.batch_size, config.progress)
        if config.max_objects is not None and len(data) > config.max_objects:
            rng = np.random.default_rng(config.seed)
            data = data.subset(np.sort(rng.choice(len(data), config.max_objects, replace=False)))
        return data

    observed = load(config.observed, "observed", OBSERVED_SPLITS)
    suites = {name: load(path, name, SIMULATED_SPLITS) for name, path in config.simulated.items()}
    return observed, suites


def compute(config: MisspecConfig, observed: Embedded | None = None,
            suites: dict[str, Embedded] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json content, and what the figures and the per-object table need. Embeddings are computed
    from the config's folders unless given."""
    from tqdm import tqdm

    from downstream.misspec import differs
    from downstream.misspec.comparison import compare_models
    from downstream.misspec.coverage import coverage_of
    from downstream.misspec.two_sample import two_sample_test

    if observed is None or suites is None:
        observed, suites = load_embeddings(config)
    for name, suite in suites.items():
        if suite.x.shape[1] != observed.x.shape[1]:
            raise ValueError(f"{name}: embedding dimension {suite.x.shape[1]}, observed has {observed.x.shape[1]}")

    per_suite: dict[str, dict[str, Any]] = {}
    what_differs: dict[str, dict[str, Any]] = {}
    misfit = np.zeros((len(observed), len(suites)))
    covered = np.zeros((len(observed), len(suites)), bool)
    flagged_labels: dict[str, tuple[dict, dict, list]] = {}
    for k, (name, suite) in enumerate(tqdm(suites.items(), desc="suites", unit="suite", disable=not config.progress)):
        test = two_sample_test(observed, suite, kind=config.classifier, seed=config.seed,
                               n_permutations=config.n_permutations, n_bootstrap=config.n_bootstrap)
        obs_cov = coverage_of(suite, observed, config.k, config.coverage_level, config.seed)
        suite_cov = coverage_of(observed, suite, config.k, config.coverage_level, config.seed)
        misfit[:, k], covered[:, k] = obs_cov.misfit, obs_cov.covered
        per_suite[name] = {**test.metrics, "n_objects": len(suite),
                           "observed_covered_fraction": float(obs_cov.covered.mean()),
                           "covered_fraction_of_suite": float(suite_cov.covered.mean()),
                           "observed_mean_misfit": float(obs_cov.misfit.mean())}

        # Flagged: the suite's objects the (out-of-fold) classifier finds most "simulated", against all the
        # observed objects. The selection alone moves labels too (the classifier leans on faint objects,
        # where noise shows): `ks_selection` is the same rule applied to the observed objects, against all
        # of them, i.e. what the selection does without any misspecification.
        flagged_rows = differs.top_fraction(test.simulated_scores, config.flagged_fraction)
        flagged = differs.take(suite.labels, flagged_rows)
        reference = observed.labels
        baseline = differs.compare_labels(
            differs.take(observed.labels, differs.top_fraction(test.observed_scores, config.flagged_fraction)),
            reference)
        selection = {row["label"]: row["ks"] for row in baseline}
        ranked = differs.rank_by_excess(differs.compare_labels(flagged, reference), selection)
        uncovered_rows = np.flatnonzero(~obs_cov.covered)
        what_differs[name] = {
            "flagged_simulated": {"n": int(len(flagged_rows)),
                                  "against": "all observed objects",
                                  "rule": f"top {config.flagged_fraction:.0%} of out-of-fold P(simulated)",
                                  "ranked_by": "ks_excess = ks - ks_selection",
                                  "labels": ranked[:10]},
            "uncovered_observed": {"n": int(len(uncovered_rows)), "against": f"all {name} objects",
                                   "labels": differs.compare_labels(differs.take(observed.labels, uncovered_rows),
                                                                    suite.labels)[:10]},
            "whole_suite": {"against": "all observed objects",
                            "labels": differs.compare_labels(suite.labels, observed.labels)[:10]},
        }
        flagged_labels[name] = (flagged, reference, ranked)

    comparison = compare_models(observed, suites, kind=config.classifier, seed=config.seed)
    for name in suites:
        per_suite[name]["model_probability"] = comparison.metrics["mean_probability"][name]
        per_suite[name]["argmax_fraction"] = comparison.metrics["argmax_fraction"][name]
    uncovered = ~covered.any(axis=1)
    settings = {k: v for k, v in vars(config).items() if k != "progress"}
    metrics = {
        "config": {**settings, "observed_splits": list(OBSERVED_SPLITS), "simulated_splits": list(SIMULATED_SPLITS)},
        "n_observed": int(len(observed)),
        "embedding_dim": int(observed.x.shape[1]),
        "suites": per_suite,
        "ranking_by_auc": sorted(per_suite, key=lambda n: per_suite[n]["auc"]),
        "uncovered_fraction": float(uncovered.mean()),
        "model_comparison": {**comparison.metrics, "reliability_before": comparison.reliability_before,
                             "reliability": comparison.reliability_after},
        "what_differs": what_differs,
    }
    arrays = {"observed": observed, "suites": suites, "probabilities": comparison.probabilities,
              "misfit": misfit, "covered": covered, "flagged": flagged_labels,
              "reliability": (comparison.reliability_before, comparison.reliability_after)}
    return metrics, arrays


def format_table(metrics: dict[str, Any]) -> str:
    """A short plain-text summary, one row per suite."""
    head = (f"{'suite':16s} {'AUC':>6s} {'95% CI':>13s} {'p':>7s} {'P(model)':>9s} {'obs cov':>8s} "
            f"{'suite cov':>9s}  top differing label")
    lines = [head, "-" * len(head)]
    for name, s in metrics["suites"].items():
        top = metrics["what_differs"].get(name, {}).get("flagged_simulated", {}).get("labels", [])
        label = f"{top[0]['label']} (KS {top[0]['ks']:.2f}, SMD {top[0]['smd']:+.2f})" if top else "-"
        lines.append(f"{name:16s} {s['auc']:6.3f} {s['auc_ci95'][0]:6.3f}-{s['auc_ci95'][1]:.3f} "
                     f"{s['p_value']:7.4f} {s['model_probability']:9.3f} {s['observed_covered_fraction']:8.3f} "
                     f"{s['covered_fraction_of_suite']:9.3f}  {label}")
    lines.append(f"observed objects covered by no suite: {metrics['uncovered_fraction']:.3f} "
                 f"(of {metrics['n_observed']})")
    return "\n".join(lines)


def _write_objects(path: Path, observed: Embedded, names: list[str], probabilities: np.ndarray,
                   misfit: np.ndarray, covered: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "split", *[f"p_{n}" for n in names], *[f"misfit_{n}" for n in names],
                         "misfit_best", "covered_by_any"])
        best = misfit.min(axis=1)
        for i in range(len(observed)):
            writer.writerow([observed.ids[i], observed.split[i], *[f"{v:.6g}" for v in probabilities[i]],
                             *[f"{v:.6g}" for v in misfit[i]], f"{best[i]:.6g}", int(covered[i].any())])


def write_report(config: MisspecConfig, observed: Embedded | None = None,
                 suites: dict[str, Embedded] | None = None) -> Path:
    """Compute everything, then write REPORT_DIR atomically (a temporary sibling renamed into place)."""
    from downstream.misspec import plots

    out = check_report_target(config.out, config.overwrite, "misspec report")
    metrics, arrays = compute(config, observed, suites)
    names = list(arrays["suites"])
    with staged_folder(out) as staging:
        write_metrics(staging, metrics)
        _write_objects(staging / "observed_objects.csv", arrays["observed"], names, arrays["probabilities"],
                       arrays["misfit"], arrays["covered"])
        images = [plots.embedding_map(staging, {"observed": arrays["observed"].x,
                                                **{n: s.x for n, s in arrays["suites"].items()}}, config.seed),
                  plots.auc_bars(staging, metrics["suites"]),
                  plots.probability_histograms(staging, names, arrays["probabilities"]),
                  plots.reliability_diagram(staging, *arrays["reliability"]),
                  plots.coverage_bars(staging, metrics["suites"], metrics["uncovered_fraction"],
                                      config.coverage_level)]
        for name, (flagged, reference, ranked) in arrays["flagged"].items():
            image = plots.label_histograms(staging, name, flagged, reference, ranked)
            if image:
                images.append(image)
        (staging / "report.md").write_text(plots.markdown(metrics, format_table(metrics), images))
    return out
