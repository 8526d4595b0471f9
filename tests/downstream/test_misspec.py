"""`astrofm misspec`: rank statistics by hand, permutation p-values, halves by index, coverage, label
differences, argument errors, the report folder; and known truth on small mock suites (issue 6 part 2):
an other-seed suite with the observed physics is indistinguishable, the shipped suites rank by their
deviation, and model comparison prefers the suite closest to observed."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pytest

from astrofm.cli.main import main
from downstream.misspec import MisspecConfig, format_table, parse_named, stats, write_report
from downstream.misspec.comparison import compare_models
from downstream.misspec.coverage import conformal_p_value, conformal_threshold, coverage_of
from downstream.misspec.differs import compare_labels, ks_statistic
from downstream.misspec.embed import Embedded, object_index
from downstream.misspec.halves import first_half
from downstream.misspec.two_sample import two_sample_test


def brute_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in product(pos, neg))
    return wins / (len(pos) * len(neg))


def gaussian(name: str, n: int, shift: float = 0.0, dim: int = 8, seed: int = 0, start: int = 0) -> Embedded:
    """n objects with indices start.. (paired across datasets), x ~ N(shift e_0, I), a label tracking x_0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] += shift
    index = np.arange(start, start + n)
    labels = {"size": x[:, 0].astype(np.float64) + rng.normal(scale=0.1, size=n),
              "noise": rng.normal(size=n)}
    return Embedded(name, f"/nowhere/{name}", np.array([f"{name}-s0-{i:07d}" for i in index], dtype=object),
                    index, np.array(["test"] * n, dtype=object), x, labels)


# --- statistics -------------------------------------------------------------------------------------


def test_auc_equals_brute_force_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = rng.random(60) < 0.4
        scores = np.round(rng.normal(size=60) + labels, 1)  # rounded: many ties
        assert stats.roc_auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)
    assert stats.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert stats.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    with pytest.raises(ValueError, match="each class"):
        stats.roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_permutation_p_value_is_uniform_under_the_null_and_small_for_separated_scores():
    rng = np.random.default_rng(2)
    p = np.array([stats.permutation_p_value([(rng.random(40) < 0.5, rng.normal(size=40))], n_permutations=200,
                                            seed=i) for i in range(300)])
    assert 0.4 < p.mean() < 0.6
    assert np.mean(p <= 0.05) < 0.1 and np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.1)
    labels = np.r_[np.zeros(30, bool), np.ones(30, bool)]
    separated = np.r_[rng.normal(size=30), rng.normal(size=30) + 5]
    assert stats.permutation_p_value([(labels, separated)], n_permutations=999) == pytest.approx(1 / 1000)
    # Deterministic for a seed; two folds average their AUCs.
    fold = (labels, separated + rng.normal(size=60) * 3)
    assert stats.permutation_p_value([fold], seed=3) == stats.permutation_p_value([fold], seed=3)
    assert stats.cross_fitted_auc([fold, (labels, separated)]) == pytest.approx(
        (stats.roc_auc(*fold) + 1.0) / 2)


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_more_objects():
    rng = np.random.default_rng(4)

    def fold(n):
        labels = np.r_[np.zeros(n, bool), np.ones(n, bool)]
        return labels, rng.normal(size=2 * n) + 0.8 * labels

    small, large = fold(50), fold(800)
    lo, hi = stats.bootstrap_auc_interval([small], n_boot=300)
    assert lo < stats.roc_auc(*small) < hi
    lo2, hi2 = stats.bootstrap_auc_interval([large], n_boot=300)
    assert hi2 - lo2 < (hi - lo) / 2
    assert lo2 < 0.71 < hi2  # the true AUC, Phi(0.8 / sqrt(2))


def test_reliability_small_for_calibrated_and_large_for_overconfident_probabilities():
    rng = np.random.default_rng(5)
    p1 = rng.random(20000)
    labels = (rng.random(20000) < p1).astype(int)  # P(class 1) = p1 exactly
    calibrated = np.c_[1 - p1, p1]
    assert stats.reliability(calibrated, labels)["ece"] < 0.02
    sharp = np.c_[1 - (p1 > 0.5), (p1 > 0.5)].astype(float)  # always 100% sure
    assert stats.reliability(sharp, labels)["ece"] > 0.2


# --- halves, coverage, differences ------------------------------------------------------------------


def test_halves_keep_paired_indices_together_and_split_evenly():
    index = np.arange(20000)
    a = first_half(index, seed=0)
    assert 0.48 < a.mean() < 0.52
    assert np.array_equal(first_half(index[::-1], 0), a[::-1])  # a function of the index, not of the row
    assert not np.array_equal(first_half(index, 1), a)
    assert object_index("sim_slight-s0-0000042") == 42 and object_index("observed-s1-0001234") == 1234
    assert object_index("no-number-here") != object_index("no-number-there")


def test_conformal_coverage_is_nominal_for_the_same_distribution_and_low_for_a_shift():
    same = coverage_of(gaussian("ref", 3000, seed=1), gaussian("query", 3000, seed=2, start=5000), k=10,
                       level=0.95, seed=0)
    assert 0.92 < same.covered.mean() < 0.98
    # kNN distances in 8-D are dominated by the 7 unshifted dimensions: shift far enough to leave the support.
    far = coverage_of(gaussian("ref", 3000, seed=1), gaussian("far", 3000, shift=5.0, seed=2), k=10, level=0.95,
                      seed=0)
    assert far.covered.mean() < 0.3 and far.misfit.mean() > same.misfit.mean()
    own = np.arange(1.0, 20.0)  # 19 values: the 95% threshold is the 19th smallest
    assert conformal_threshold(own, 0.95) == 19.0 and conformal_threshold(own[:10], 0.95) == float("inf")
    assert conformal_p_value(own, np.array([0.5, 19.0, 30.0])).tolist() == [1.0, 2 / 20, 1 / 20]


def test_ks_and_label_ranking():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=50), rng.normal(size=70) + 0.5
    brute = max(abs(np.mean(a <= t) - np.mean(b <= t)) for t in np.r_[a, b])
    assert ks_statistic(a, b) == pytest.approx(brute)
    ranked = compare_labels({"moved": a + 3, "same": a}, {"moved": b - 0.5, "same": b - 0.5})
    assert [r["label"] for r in ranked] == ["moved", "same"] and ranked[0]["smd"] > 2


def test_two_sample_test_on_synthetic_embeddings():
    observed = gaussian("observed", 1200, seed=1)
    null = two_sample_test(observed, gaussian("twin", 1200, seed=2), n_permutations=300, n_bootstrap=200)
    shifted = two_sample_test(observed, gaussian("shifted", 1200, shift=0.5, seed=3), n_permutations=300,
                              n_bootstrap=200)
    assert 0.45 < null.metrics["auc"] < 0.55 and null.metrics["p_value"] > 0.05
    assert shifted.metrics["auc"] > 0.6 and shifted.metrics["p_value"] < 0.01
    assert shifted.metrics["auc_ci95"][0] < shifted.metrics["auc"] < shifted.metrics["auc_ci95"][1]
    assert not np.isnan(shifted.simulated_scores).any()  # every object scored out of fold
    again = two_sample_test(observed, gaussian("shifted", 1200, shift=0.5, seed=3), n_permutations=300,
                            n_bootstrap=200)
    assert again.metrics == shifted.metrics


def test_model_comparison_prefers_the_nearest_suite_and_is_calibrated_on_held_out_suites():
    observed = gaussian("observed", 600, seed=1, start=10000)
    suites = {f"shift{s}": gaussian(f"shift{s}", 1500, shift=s, seed=10 + i) for i, s in enumerate((0.3, 1.0, 2.0))}
    result = compare_models(observed, suites, seed=0)
    mean = result.metrics["mean_probability"]
    assert mean["shift0.3"] > mean["shift1.0"] > mean["shift2.0"]
    assert sum(mean.values()) == pytest.approx(1.0)
    assert result.probabilities.shape == (600, 3) and result.metrics["ece"] < 0.08


# --- arguments and the report folder ----------------------------------------------------------------


def test_name_dir_parsing_errors_name_the_argument():
    assert parse_named(["a=/x", "b.2=/y/z=w"]) == {"a": "/x", "b.2": "/y/z=w"}
    for bad, message in (("nodir", "'nodir': expected NAME=DATA_DIR"), ("=/x", "expected NAME=DATA_DIR"),
                         ("a=", "'a=': expected NAME=DATA_DIR"), ("a b=/x", "the name 'a b'")):
        with pytest.raises(ValueError, match=message):
            parse_named([bad])
    with pytest.raises(ValueError, match="'a' given twice"):
        parse_named(["a=/x", "a=/y"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["misspec", "--model", str(tmp_path), "--observed", str(tmp_path), "--simulated", "oops",
                 "--out", str(tmp_path / "r")]) == 1
    assert "--simulated 'oops': expected NAME=DATA_DIR" in capsys.readouterr().err
    assert main(["misspec", "--model", str(tmp_path), "--observed", str(tmp_path), "--simulated",
                 f"s1={tmp_path / 'missing'}", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "astrofm misspec: error:" in err and "--observed" in err  # the first bad folder is named
    (tmp_path / "observed").mkdir()
    (tmp_path / "observed" / "manifest.json").write_text("{}")
    assert main(["misspec", "--model", str(tmp_path), "--observed", str(tmp_path / "observed"), "--simulated",
                 f"s1={tmp_path / 'missing'}", "--out", str(tmp_path / "r")]) == 1
    assert f"--simulated s1={tmp_path / 'missing'}: not a dataset folder" in capsys.readouterr().err


def synthetic_config(out, **kwargs) -> MisspecConfig:
    names = {"near": 0.1, "far": 1.0}
    return MisspecConfig(model="/nowhere/model", observed="/nowhere/observed",
                         simulated={n: f"/nowhere/{n}" for n in names}, out=str(out), progress=False,
                         n_permutations=200, n_bootstrap=100, **kwargs)


def synthetic_embeddings():
    observed = gaussian("observed", 400, seed=1)
    suites = {"near": gaussian("near", 500, shift=0.1, seed=2), "far": gaussian("far", 500, shift=1.0, seed=3)}
    return observed, suites


def test_report_files_and_metrics_layout(tmp_path):
    out = write_report(synthetic_config(tmp_path / "report"), *synthetic_embeddings())
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("near", "far"):
        suite = metrics["suites"][name]
        for key in ("auc", "auc_ci95", "p_value", "model_probability", "covered_fraction_of_suite",
                    "observed_covered_fraction"):
            assert key in suite
        assert 0 <= suite["p_value"] <= 1 and 0 <= suite["model_probability"] <= 1
    assert metrics["suites"]["far"]["auc"] > metrics["suites"]["near"]["auc"]
    assert metrics["what_differs"]["far"]["flagged_simulated"]["labels"][0]["label"] == "size"
    assert 0 <= metrics["uncovered_fraction"] <= 1 and "ece" in metrics["model_comparison"]
    images = sorted(p.name for p in out.glob("*.png"))
    assert {"embedding_map.png", "auc.png", "model_probability.png", "reliability.png"} <= set(images)
    report = (out / "report.md").read_text()
    assert all(f"]({name})" in report for name in images)
    rows = (out / "observed_objects.csv").read_text().splitlines()
    assert len(rows) == 401 and rows[0].startswith("id,split,p_near,p_far,misfit_near")
    table = format_table(metrics)
    assert len(table.splitlines()) == 5 and "near" in table and "far" in table


def test_refuses_an_existing_folder_unless_overwrite(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_report(synthetic_config(out), *synthetic_embeddings())
    with pytest.raises(FileExistsError, match="not an empty folder or a misspec report"):
        write_report(synthetic_config(out, overwrite=True), *synthetic_embeddings())
    assert (out / "keep.txt").read_text() == "mine"
    out.joinpath("keep.txt").unlink()
    write_report(synthetic_config(out, overwrite=True), *synthetic_embeddings())
    assert (out / "metrics.json").is_file()


# --- known truth on mock suites (issue 6 part 2) ----------------------------------------------------

# Labels moved directly by the knobs the shipped suites shift (seeing, sizes, dust, early-type fraction).
KNOB_LABELS = {"psf_fwhm_g", "psf_fwhm_r", "psf_fwhm_z", "half_light_radius_kpc", "half_light_radius_arcsec",
               "bulge_half_light_radius_arcsec", "dust_av", "early_type", "bulge_fraction"}
SHIPPED = ("sim_slight", "sim_moderate", "sim_strong")  # 1x, 2.5x, 5x the same six knob shifts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """observed (seed 0), observed_seed1 and the shipped suites (seed 0), and a tiny model pretrained briefly
    on the observed train split."""
    from tests.downstream.misspec_helpers import generate, pretrain

    root = tmp_path_factory.mktemp("misspec")
    paths = generate(root)
    paths["model"] = pretrain(paths["observed"], root / "run")
    return paths


@pytest.fixture(scope="module")
def study(world, tmp_path_factory):
    """The embeddings (computed once) and the report over all four suites, through the Python API."""
    from downstream.misspec.report import load_embeddings
    from tests.downstream.misspec_helpers import SUITES

    config = MisspecConfig(model=str(world["model"]), observed=str(world["observed"]),
                           simulated={name: str(world[name]) for name in SUITES},
                           out=str(tmp_path_factory.mktemp("reports") / "all"), progress=False,
                           n_bootstrap=300)
    observed, suites = load_embeddings(config)
    out = write_report(config, observed, suites)
    return {"observed": observed, "suites": suites, "metrics": json.loads((out / "metrics.json").read_text()),
            "out": out}


@pytest.mark.slow
def test_other_seed_suite_with_observed_physics_is_indistinguishable(study):
    result = study["metrics"]["suites"]["observed_seed1"]
    assert 0.45 <= result["auc"] <= 0.55, result
    assert result["p_value"] > 0.05, result
    assert result["auc_ci95"][0] < 0.5 < result["auc_ci95"][1]


@pytest.mark.slow
def test_shipped_suites_rank_by_their_known_deviation(study):
    suites = study["metrics"]["suites"]
    aucs = [suites[name]["auc"] for name in SHIPPED]
    assert suites["observed_seed1"]["auc"] < aucs[0] < aucs[1] < aucs[2], aucs
    assert all(suites[name]["p_value"] < 0.01 for name in SHIPPED)
    assert study["metrics"]["ranking_by_auc"] == ["observed_seed1", *SHIPPED]
    # A suite deviating more reproduces fewer observed objects (kNN coverage).
    covered = [suites[name]["observed_covered_fraction"] for name in SHIPPED]
    assert covered[0] > covered[2]


@pytest.mark.slow
def test_model_comparison_prefers_the_suite_closest_to_observed(study):
    probability = {name: s["model_probability"] for name, s in study["metrics"]["suites"].items()}
    assert max(probability, key=probability.get) == "observed_seed1", probability
    assert probability["sim_slight"] > max(probability["sim_moderate"], probability["sim_strong"]), probability
    # Among the shipped suites only (the setting): sim_slight, the closest, is the most probable.
    shipped = compare_models(study["observed"], {name: study["suites"][name] for name in SHIPPED}, seed=0)
    mean = shipped.metrics["mean_probability"]
    assert max(mean, key=mean.get) == "sim_slight", mean
    assert shipped.metrics["heldout_accuracy"] > 0.5 and 0 <= shipped.metrics["ece"] < 0.2


@pytest.mark.slow
def test_what_differs_for_sim_strong_names_the_moved_knobs(study):
    differs = study["metrics"]["what_differs"]["sim_strong"]
    flagged = [row["label"] for row in differs["flagged_simulated"]["labels"][:3]]
    assert KNOB_LABELS & set(flagged), flagged
    whole = differs["whole_suite"]["labels"][0]
    assert whole["label"] in KNOB_LABELS and whole["ks"] > 0.2, whole
    assert (study["out"] / "differs_sim_strong.png").is_file()


@pytest.mark.slow
def test_cli_end_to_end_single_suite(world, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["misspec", "--model", str(world["model"]), "--observed", str(world["observed"]), "--simulated",
            f"strong={world['sim_strong']}", "--out", str(out), "--modality", "image", "--permutations", "200",
            "--bootstrap", "100", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "strong" in printed and f"report written to {out}" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["modality"] == "image" and metrics["embedding_dim"] == 128
    assert metrics["suites"]["strong"]["auc"] > 0.8 and metrics["suites"]["strong"]["model_probability"] == 1.0
    assert main(args) == 1  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
