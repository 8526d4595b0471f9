"""`astrofm regress`: metrics by hand, nested label subsets, probes on synthetic targets, conformal coverage,
the train/val/test protocol, and the report folder through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astrofm.cli.main import main
from astrofm.embedstore.store import EMBEDDINGS_FORMAT, vectors_array
from downstream.regression import conformal, metrics, probes, report
from downstream.regression.report import RegressionConfig, compute, label_subset

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_world(n: int, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = 2.0 * x[:, 0] + x[:, 1] + 0.3 * x[:, 2] ** 2
    return x, y


def write_store(folder, modalities: dict[str, np.ndarray], y: np.ndarray, splits: list[str],
                ids: dict[str, list[str]] | None = None, labels: dict[str, np.ndarray] | None = None):
    folder.mkdir()
    entries = {}
    for modality, vectors in modalities.items():
        oid = (ids or {}).get(modality) or [f"o{i:05d}" for i in range(len(vectors))]
        extra = {name: values[: len(oid)] for name, values in (labels or {}).items()}
        pq.write_table(pa.table({"id": oid, "split": splits[: len(oid)], "embedding": vectors_array(vectors),
                                 "redshift": y[: len(oid)], "mass": y[: len(oid)] * 2, **extra}),
                       folder / f"{modality}.parquet")
        entries[modality] = {"file": f"{modality}.parquet", "count": len(oid)}
    dimension = next(iter(modalities.values())).shape[1]
    (folder / "manifest.json").write_text(json.dumps({"format": EMBEDDINGS_FORMAT, "format_version": 1,
                                                      "dimension": dimension, "modalities": entries}))
    return folder


def split_labels(n: int, seed: int = 0) -> list[str]:
    return np.random.default_rng(seed).choice(["train", "val", "test"], size=n, p=[0.6, 0.2, 0.2]).tolist()


# ----------------------------------------------------------------------------------- metrics by hand


def test_point_metrics_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 4.5])  # residuals 0.5, 0, -1, 0.5
    assert metrics.r2(y, p) == pytest.approx(1 - 1.5 / 5.0)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(1.5 / 4))
    assert metrics.bias(y, p) == pytest.approx(0.0)
    # median residual 0.25; |r - 0.25| = 0.25, 0.25, 1.25, 0.25 -> median 0.25
    assert metrics.nmad(y, p) == pytest.approx(1.4826 * 0.25)
    # 3 NMAD = 1.112: only the -1 residual (1.25 from the median) is an outlier
    assert metrics.outlier_fraction(y, p) == pytest.approx(0.25)


def test_redshift_residuals_by_hand():
    z = np.array([0.0, 1.0, 0.5, 2.0])
    zp = np.array([0.1, 1.2, 0.5, 1.4])  # dz/(1+z) = 0.1, 0.1, 0, -0.2
    assert metrics.is_redshift_like("redshift") and metrics.is_redshift_like("z")
    assert not metrics.is_redshift_like("mass")
    assert metrics.bias(z, zp, redshift_like=True) == pytest.approx(0.0)
    # median dz/(1+z) 0.05; |r - 0.05| = 0.05, 0.05, 0.05, 0.25 -> median 0.05
    assert metrics.nmad(z, zp, redshift_like=True) == pytest.approx(1.4826 * 0.05)
    assert metrics.outlier_fraction(z, zp, redshift_like=True) == pytest.approx(0.25)  # only |-0.2| > 0.15
    assert metrics.coverage(z, zp - 0.15, zp + 0.15) == pytest.approx(0.5)  # |z - zp| = 0.1, 0.2, 0, 0.6


def test_conformal_quantile_by_hand():
    scores = np.arange(1.0, 11.0)  # n = 10
    assert conformal.conformal_quantile(scores, 0.68) == 8.0  # ceil(11 * 0.68) = 8
    assert conformal.conformal_quantile(scores, 0.5) == 6.0  # ceil(5.5) = 6
    assert conformal.conformal_quantile(scores, 0.95) == float("inf")  # ceil(10.45) = 11 > n


def test_conformal_coverage_is_close_to_nominal():
    rng = np.random.default_rng(1)
    p_cal, p_test = rng.normal(size=5000), rng.normal(size=5000)
    y_cal = p_cal + rng.standard_t(4, size=5000)
    y_test = p_test + rng.standard_t(4, size=5000)
    half = conformal.calibrate(y_cal, p_cal)
    assert 0.64 <= metrics.coverage(y_test, *conformal.intervals(p_test, half[0.68])) <= 0.72
    assert 0.93 <= metrics.coverage(y_test, *conformal.intervals(p_test, half[0.95])) <= 0.97


# ---------------------------------------------------------------------------------- label subsets


def test_label_subsets_are_nested_seeded_and_sized():
    for seed in range(3):
        small, mid, full = (set(label_subset(1000, f, seed)) for f in (0.01, 0.1, 1.0))
        assert len(small) == 10 and len(mid) == 100 and full == set(range(1000))
        assert small <= mid <= full
    assert np.array_equal(label_subset(1000, 0.1, 4), label_subset(1000, 0.1, 4))
    assert not np.array_equal(label_subset(1000, 0.1, 4), label_subset(1000, 0.1, 5))
    assert len(label_subset(50, 0.001, 0)) == 1
    with pytest.raises(ValueError):
        label_subset(10, 1.5, 0)


# ----------------------------------------------------------------------------------------- probes


@pytest.mark.parametrize("method", ["knn", "linear", "mlp", "local_linear"])
def test_probes_learn_a_smooth_target_and_not_noise(method):
    x, y = smooth_world(4000)
    train, val, test = slice(0, 3000), slice(3000, 3500), slice(3500, 4000)
    options = {"max_epochs": 60, "patience": 8} if method == "mlp" else {}
    probe = probes.PROBES[method](x[train], y[train], x[val], y[val], **options)
    r2 = metrics.r2(y[test], probe.predict(x[test]))
    assert r2 > (0.85 if method == "knn" else 0.9), r2  # the kNN's average blurs the slope
    noise = np.random.default_rng(7).normal(size=4000)
    probe = probes.PROBES[method](x[train], noise[train], x[val], noise[val], **options)
    assert metrics.r2(noise[test], probe.predict(x[test])) < 0.05


@pytest.mark.parametrize("method", ["knn", "linear", "mlp", "gaussian", "local_linear"])
def test_a_one_label_subset_gives_finite_bounded_predictions(method):
    x, y = smooth_world(60)
    probe = probes.PROBES[method](x[:1], y[:1], x[10:30], y[10:30], max_epochs=5)
    predicted = probe.predict(x[30:])
    assert np.isfinite(predicted).all() and np.abs(predicted).max() < 10 * np.abs(y).max()


def heteroscedastic_world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y = smooth mean + noise whose standard deviation grows with x[:, 0] (0.05 to about 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    noise_std = 0.05 + 0.4 * (x[:, 0] + 2.5).clip(0, None) / 2.5
    return x, np.sin(x[:, 1]) + 0.5 * x[:, 2] + noise_std * rng.normal(size=n), noise_std


def test_gaussian_head_is_calibrated_and_its_sigma_follows_the_noise():
    x, y, noise_std = heteroscedastic_world(6000)
    train, val, test = slice(0, 4000), slice(4000, 5000), slice(5000, 6000)
    probe = probes.fit_gaussian(x[train], y[train], x[val], y[val], max_epochs=80, patience=10)
    mu, sigma = probe.predict(x[test]), probe.predict_sigma(x[test])
    assert np.corrcoef(sigma, noise_std[test])[0, 1] > 0.9
    intervals = report.sigma_intervals(y[test], mu, sigma)
    assert abs(intervals["coverage_68"] - 0.68) < 0.04, intervals
    assert abs(intervals["coverage_95"] - 0.95) < 0.03, intervals
    assert 0.7 < probe.chosen["sigma_scale"] < 1.3
    # a constant sigma (the homoscedastic fit) has a worse likelihood than the predicted ones
    constant = np.full_like(sigma, np.std(y[val] - probe.predict(x[val])))
    assert intervals["nll"] < metrics.gaussian_nll(y[test], mu, constant) - 0.1


def test_gaussian_interval_keys_by_hand():
    y, mu, sigma = np.array([0.0, 1.0, 3.0]), np.zeros(3), np.array([1.0, 2.0, 1.0])
    # half-widths z68 sigma = 0.994, 1.989, 0.994: y = 0 and 1 inside, 3 outside; at 95% 1.96, 3.92, 1.96
    out = report.sigma_intervals(y, mu, sigma)
    assert out["coverage_68"] == pytest.approx(2 / 3) and out["coverage_95"] == pytest.approx(2 / 3)
    assert out["width_68"] == pytest.approx(2 * metrics.normal_z(0.68) * 4 / 3)
    assert metrics.normal_z(0.95) == pytest.approx(1.959964, abs=1e-5)
    nll = np.mean(0.5 * np.log(2 * np.pi * sigma ** 2) + y ** 2 / (2 * sigma ** 2))
    assert out["nll"] == pytest.approx(nll)


def test_gaussian_crps_against_its_integral_and_its_point_limit():
    y, mu, sigma = np.array([0.3, -1.0, 2.5]), np.array([0.0, 0.5, 2.0]), np.array([0.5, 1.0, 0.2])
    # CRPS = integral of (F(x) - 1{x >= y})^2 dx, by the trapezoid rule on a fine grid
    grid = np.linspace(-12.0, 12.0, 240001)
    numeric = []
    for yi, mi, si in zip(y, mu, sigma, strict=True):
        cdf = metrics.gaussian_pit(grid, np.full_like(grid, mi), np.full_like(grid, si))
        squared = (cdf - (grid >= yi)) ** 2
        numeric.append(np.sum((squared[1:] + squared[:-1]) / 2 * np.diff(grid)))
    assert metrics.gaussian_crps(y, mu, sigma) == pytest.approx(np.mean(numeric), rel=1e-4)
    # as sigma -> 0 the CRPS becomes the absolute error of the mean
    assert metrics.gaussian_crps(y, mu, np.full(3, 1e-9)) == pytest.approx(np.mean(np.abs(y - mu)), rel=1e-6)


def test_pit_is_uniform_for_the_true_distribution_and_not_for_a_too_narrow_one():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=20000), rng.uniform(0.5, 2.0, size=20000)
    y = mu + sigma * rng.normal(size=20000)
    assert metrics.pit_ks(metrics.gaussian_pit(y, mu, sigma)) < 0.015
    narrow = metrics.gaussian_pit(y, mu, sigma / 2)
    assert metrics.pit_ks(narrow) > 0.1 and np.mean((narrow < 0.1) | (narrow > 0.9)) > 0.4  # a U shape
    assert metrics.pit_ks(np.array([0.25, 0.75])) == pytest.approx(0.25)  # by hand: steps 1/2 at 0.25 and 0.75
    assert metrics.pit_ks(np.array([0.5])) == pytest.approx(0.5)


def test_adaptive_conformal_multiplier_by_hand():
    # scores |y - p| / u = 1, 0.5, 2, 4: at level 0.5, k = ceil(5 * 0.5) = 3 -> the third smallest, 2
    y, p, u = np.array([1.0, 1.0, 4.0, 4.0]), np.zeros(4), np.array([1.0, 2.0, 2.0, 1.0])
    assert conformal.calibrate_scaled(y, p, u, levels=(0.5,))[0.5] == pytest.approx(2.0)
    lower, upper = conformal.intervals(np.array([0.0, 1.0]), 2.0 * np.array([0.5, 3.0]))
    np.testing.assert_allclose(lower, [-1.0, -5.0])
    np.testing.assert_allclose(upper, [1.0, 7.0])
    with pytest.raises(ValueError, match="positive, finite scale"):
        conformal.calibrate_scaled(y, p, np.array([1.0, 0.0, 1.0, 1.0]))


def test_group_edges_by_hand():
    p = np.arange(1000, dtype=np.float64)
    np.testing.assert_allclose(conformal.group_edges(p, 5, min_rows=200), [199.8, 399.6, 599.4, 799.2])
    assert conformal.group_edges(p, 5, min_rows=300).size == 2  # 1000 rows hold 3 groups of 300
    assert conformal.group_edges(p[:150], 5, min_rows=100).size == 0  # too few rows: one group
    # tied predictions: the quantile edges coincide, and no group is left with fewer than min_rows rows
    tied = np.concatenate([np.zeros(700), np.arange(1.0, 301.0)])
    edges = conformal.group_edges(tied, 5, min_rows=100)
    counts = np.bincount(np.searchsorted(edges, tied, side="right"))
    assert counts.tolist() == [800, 200]  # edges 0 and 100.2: the empty group below 0 merged into the next


def test_grouped_multiplier_by_hand():
    # two groups of predicted value (p 0 and p 10, 4 rows each), scores 1, 2, 3, 4 and 10, 20, 30, 40:
    # level 0.5 -> k = ceil(5 * 0.5) = 3 -> q 3 in the first group, 30 in the second
    p = np.array([0.0] * 4 + [10.0] * 4)
    y = p + np.array([1.0, 2, 3, 4, 10, 20, 30, 40])
    grouped = conformal.calibrate_grouped(y, p, np.ones(8), n_groups=2, levels=(0.5,), min_rows=4)
    assert grouped.n_groups == 2
    np.testing.assert_allclose(grouped(0.5, np.array([-1.0, 0.0, 10.0, 12.0])), [3.0, 3.0, 30.0, 30.0])
    # one group is calibrate_scaled's single multiplier
    single = conformal.calibrate_grouped(y, p, np.ones(8), n_groups=1, levels=(0.5,))
    assert single.n_groups == 1
    assert single(0.5, np.array([0.0]))[0] == conformal.calibrate_scaled(y, p, np.ones(8), levels=(0.5,))[0.5]


def test_grouped_calibration_holds_in_each_group_where_one_multiplier_does_not():
    # a scale that is right on average but wrong at the top of the label range: there the errors are 3x larger
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 8000)
    y = p + np.where(p > 0.8, 3.0, 1.0) * rng.normal(size=p.size)
    cal, test = slice(0, 4000), slice(4000, None)
    levels = (0.68, 0.95)
    single = conformal.calibrate_scaled(y[cal], p[cal], np.ones(4000), levels=levels)
    grouped = conformal.calibrate_grouped(y[cal], p[cal], np.ones(4000), n_groups=5, levels=levels)
    assert grouped.n_groups == 5
    top = p[test] > 0.8
    for level in levels:
        inside_single = np.abs(y[test] - p[test]) <= single[level]
        inside_grouped = np.abs(y[test] - p[test]) <= grouped(level, p[test])
        assert inside_single[top].mean() < level - 0.15  # the top fifth under-covered, the rest over-covered
        for rows in (top, ~top):
            assert abs(inside_grouped[rows].mean() - level) < 0.03
        assert abs(inside_grouped.mean() - level) < 0.02


def test_neighbour_spread_by_hand():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    y = np.array([1.0, 1.0, 1.0, 0.0, 2.0, 4.0])
    spread = probes.neighbour_spread(x, y, lambda v: np.asarray(v, np.float32), k=3)
    floor = probes.SPREAD_FLOOR * y.std()
    # near 0 the three neighbours agree (spread = the floor); near 5 their labels 0, 2, 4 have std sqrt(8/3)
    np.testing.assert_allclose(spread(np.array([[0.05], [5.05]], np.float32)), [floor, np.sqrt(8 / 3) + floor])
    constant = probes.neighbour_spread(x[:1], y[:1], lambda v: np.asarray(v, np.float32))
    assert constant(x)[0] == pytest.approx(1.0)  # one label: a constant, positive scale


def test_knn_leave_one_out_by_hand():
    z = np.array([[0.0], [1.0], [3.0], [3.0]], dtype=np.float32)
    y = np.array([0.0, 1.0, 5.0, 7.0])
    # k = 1, each row's nearest other row: 0 -> 1 (y 1), 1 -> 0 (y 0, distance 1 against 2 to row 2),
    # and the duplicates 2, 3 -> each other (y 7 and 5), never themselves
    np.testing.assert_allclose(probes.knn_leave_one_out(z, y, k=1), [1.0, 0.0, 7.0, 5.0])
    # k = 2, weights 1/d, without row 3: row 0's neighbours 1 (d 1) and 2 (d 3) -> (1 + 5/3) / (1 + 1/3) = 2
    assert probes.knn_leave_one_out(z[:3], y[:3], k=2)[0] == pytest.approx(2.0)
    assert probes.knn_leave_one_out(z[:1], y[:1], k=4).tolist() == [0.0]  # a lone row predicts itself


def test_training_residuals_of_the_point_probes():
    x, y = smooth_world(300)
    knn = probes.fit_knn(x[:200], y[:200], x[200:], y[200:], k=8, whiten=None, power=1)
    loo = probes.knn_leave_one_out(x[:200], y[:200], k=8, power=1)
    np.testing.assert_allclose(knn.train_residuals(), np.abs(y[:200] - loo))
    assert knn.train_residuals().min() > 0  # no row is its own neighbour
    local = probes.fit_local_linear(x[:200], y[:200], x[200:], y[200:])
    assert local.train_residuals().shape == (200,) and local.train_residuals().min() > 0  # leave-one-out
    for method in ("linear", "mlp"):
        probe = probes.PROBES[method](x[:200], y[:200], x[200:], y[200:], max_epochs=5)
        np.testing.assert_allclose(probe.train_residuals(), np.abs(y[:200] - probe.predict(x[:200])), rtol=1e-6)
    assert probes.fit_gaussian(x[:200], y[:200], x[200:], y[200:], max_epochs=2).train_residuals is None


def test_neighbour_residual_by_hand():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]], dtype=np.float32)
    y = np.array([1.0, 1.0, 1.0, 0.0, 2.0, 4.0])
    residuals = np.array([0.1, 0.2, 0.3, 1.0, 2.0, 6.0])
    scale = probes.neighbour_residual(x, y, residuals, lambda v: np.asarray(v, np.float32), k=3)
    floor = probes.SPREAD_FLOOR * y.std()
    np.testing.assert_allclose(scale(np.array([[0.05], [5.05]], np.float32)), [0.2 + floor, 3.0 + floor])


@pytest.mark.parametrize("adaptive_scale", probes.ADAPTIVE_SCALES)
def test_adaptive_intervals_hold_where_the_noise_is_small_and_where_it_is_large(tmp_path, adaptive_scale):
    x, y, noise_std = heteroscedastic_world(4000, seed=2)
    splits = split_labels(4000, seed=2)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, splits, labels={"noise_level": noise_std})
    methods = ["knn", "linear", "gaussian"] if adaptive_scale == "residual" else ["knn", "gaussian"]
    result, _ = compute(RegressionConfig(embeddings=str(emb), out=str(tmp_path / "r"), methods=methods,
                                         label_fractions=[1.0], seeds=1, coverage_by="noise_level",
                                         adaptive_scale=adaptive_scale, adaptive_groups=1, progress=False))
    # one multiplier for all: this world's noise follows x, not the predicted value, so the scale alone
    # must carry it (grouping by predicted value is tested below)
    assert result["config"]["adaptive_scale"] == adaptive_scale
    for record in result["records"]:
        by = record["coverage_by"]
        assert by["label"] == "noise_level" and len(by["edges"]) == report.COVERAGE_BINS + 1
        assert sum(by["n"]) == splits.count("test")
        # this world's noise grows with the label, so the point errors grow from the first bin to the last
        assert by["nmad"][-1] > 2 * by["nmad"][0] and by["rmse"][-1] > 1.5 * by["rmse"][0], by
        assert abs(record["coverage_68_adaptive"] - 0.68) < 0.06 and abs(record["coverage_95_adaptive"] - 0.95) < 0.03
        adaptive = np.abs(np.array(by["coverage_68_adaptive"]) - 0.68).max()  # the worst fifth of noise levels
        if record["method"] == "gaussian":  # scaled by its own sigma, which follows the noise
            assert adaptive < 0.1, by
            continue
        # one width for all is far too wide for the quiet fifth and too narrow for the noisiest
        fixed = np.array(by["coverage_68"])
        assert fixed[0] > 0.85 and fixed[-1] < 0.55, fixed
        assert record["width_95_adaptive"] < record["width_95"]  # and wider than it needs on average
        if adaptive_scale == "residual":  # the probe's own errors around each object follow the noise
            assert adaptive < 0.1, by
        else:
            # the neighbours' label spread also holds the mean's variation across the neighbourhood, so it
            # only narrows the gap (on this world 0.23 -> 0.13)
            assert adaptive < np.abs(fixed - 0.68).max() - 0.06, by


def test_adaptive_groups_in_the_report(tmp_path):
    x, y, _ = heteroscedastic_world(4000, seed=2)
    splits = split_labels(4000, seed=2)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, splits)
    n_val = splits.count("val")
    for asked, expected in ((5, min(5, n_val // conformal.MIN_GROUP_ROWS)), (2, 2), (1, 1)):
        result, _ = compute(RegressionConfig(embeddings=str(emb), out=str(tmp_path / f"r{asked}"), methods=["knn"],
                                             label_fractions=[1.0], seeds=1, adaptive_groups=asked, progress=False))
        record = result["records"][0]
        assert result["config"]["adaptive_groups"] == asked and record["adaptive_groups"] == expected
        assert abs(record["coverage_68_adaptive"] - 0.68) < 0.06 and abs(record["coverage_95_adaptive"] - 0.95) < 0.03
    with pytest.raises(ValueError, match="--adaptive-groups 0"):
        compute(RegressionConfig(embeddings=str(emb), out=str(tmp_path / "r0"), adaptive_groups=0))


def test_an_unknown_adaptive_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown adaptive scale 'wide'"):
        compute(RegressionConfig(embeddings=str(tmp_path), out=str(tmp_path / "r"), adaptive_scale="wide"))


def test_knn_is_distance_weighted_and_exact_matches_win():
    x_train = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    y_train = np.array([0.0, 10.0, 30.0])
    # query at 0.25: distances 0.25, 0.75 with k=2 -> weights 4, 4/3 -> (0 * 4 + 10 * 4/3) / (16/3) = 2.5
    assert probes.knn_predict(x_train, y_train, np.array([[0.25]], np.float32), k=2)[0] == pytest.approx(2.5)
    assert probes.knn_predict(x_train, y_train, np.array([[1.0]], np.float32), k=3)[0] == pytest.approx(10.0)
    # weights 1/d^2: 16 and 16/9 -> (10 * 16/9) / (16 + 16/9) = 1
    assert probes.knn_predict(x_train, y_train, np.array([[0.25]], np.float32), k=2, power=2)[0] == pytest.approx(1.0)
    # power 0: the plain mean of the k neighbours
    assert probes.knn_predict(x_train, y_train, np.array([[0.25]], np.float32), k=3, power=0)[0] == \
        pytest.approx(40 / 3)


def test_local_linear_plane_by_hand():
    from downstream.regression.local_linear import plane_intercepts

    # y = 1 + 2 r0 - r1 exactly: the plane through any neighbours gives the value at the query itself,
    # which the neighbours' average does not (it sits at their centroid's value)
    r = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], np.float32)
    y = 1 + 2.0 * r[:, 0] - r[:, 1]
    query = np.array([[3.0, 0.5]], np.float32)  # outside the neighbours: the plane extrapolates
    distance, nearest = probes._neighbours(r, query, 5)
    assert plane_intercepts(r, y, query, distance, nearest, 2, 1e-9)[0] == pytest.approx(1 + 6 - 0.5, abs=1e-5)
    # on one axis only, the slope along r1 is not seen: the plane through (r0, y) at the query's r0
    one_axis = plane_intercepts(r, y, query, distance, nearest, 1, 1e-9)[0]
    assert one_axis != pytest.approx(6.5, abs=1e-3)
    # a large ridge flattens the plane towards the weighted mean of the neighbours
    flat = plane_intercepts(r, y, query, distance, nearest, 2, 1e9)[0]
    assert flat == pytest.approx(probes.knn_predict(r, y, query, k=5, power=2)[0], abs=1e-5)
    # an exact match takes all the weight
    distance, nearest = probes._neighbours(r, r[1:2], 5)
    assert plane_intercepts(r, y + np.array([0, 5, 0, 0, 0]), r[1:2], distance, nearest, 2, 1e-3)[0] == \
        pytest.approx(y[1] + 5)


def test_local_linear_removes_the_knn_bias_where_the_labels_thin_out():
    # labels whose density falls steeply towards large y (like the bright sample's redshifts): near the top,
    # k neighbours lie mostly below the query and their average is pulled down; a plane follows the slope
    rng = np.random.default_rng(3)
    n = 6000
    t = rng.exponential(0.5, size=n)  # dense at 0, thin at 2+
    x = np.stack([t, 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=n)], axis=1).astype(np.float32)
    y = t + 0.02 * rng.normal(size=n)
    train, val, test = slice(0, 4000), slice(4000, 5000), slice(5000, n)
    knn = probes.fit_knn(x[train], y[train], x[val], y[val])
    local = probes.fit_local_linear(x[train], y[train], x[val], y[val])
    top = y[test] > np.quantile(y[test], 0.9)
    knn_bias = np.mean(knn.predict(x[test])[top] - y[test][top])
    local_bias = np.mean(local.predict(x[test])[top] - y[test][top])
    assert knn_bias < -0.01 and abs(local_bias) < abs(knn_bias) / 3, (knn_bias, local_bias)
    assert metrics.r2(y[test], local.predict(x[test])) > metrics.r2(y[test], knn.predict(x[test]))
    assert set(local.chosen) >= {"k", "components", "ridge", "whiten", "val_mse"}
    with pytest.raises(ValueError, match="validation rows"):
        probes.fit_local_linear(x[train], y[train], x[:0], y[:0])


# ---------------------------------------------------------------------------------------- protocol


def test_no_test_object_is_used_to_fit_select_or_calibrate(tmp_path, monkeypatch):
    x, y = smooth_world(600, seed=3)
    splits = split_labels(600)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, splits)
    test_rows = {x[i].tobytes() for i, s in enumerate(splits) if s == "test"}
    val_y = {float(y[i]) for i, s in enumerate(splits) if s == "val"}
    seen = {"fit": 0, "calibrate": 0}

    def spy(fit):
        def wrapped(x_train, y_train, x_val, y_val, **kwargs):
            assert not test_rows & {row.tobytes() for row in np.concatenate([x_train, x_val])}
            seen["fit"] += 1
            return fit(x_train, y_train, x_val, y_val, **{**kwargs, "max_epochs": 5})
        return wrapped

    real_calibrate = conformal.calibrate

    def calibrate(y_cal, p_cal, levels=conformal.LEVELS):
        assert {float(v) for v in y_cal} == val_y  # calibrated on val, all of it, only it
        seen["calibrate"] += 1
        return real_calibrate(y_cal, p_cal, levels)

    real_calibrate_scaled = conformal.calibrate_scaled

    def calibrate_scaled(y_cal, p_cal, scale_cal, levels=conformal.LEVELS):
        assert {float(v) for v in y_cal} == val_y
        seen["calibrate_scaled"] = seen.get("calibrate_scaled", 0) + 1
        return real_calibrate_scaled(y_cal, p_cal, scale_cal, levels)

    real_residual = probes.neighbour_residual

    def neighbour_residual(x_train, y_train, residuals, space, **kwargs):
        # the adaptive scale's neighbours and residuals are training rows only
        assert not test_rows & {row.tobytes() for row in x_train} and len(residuals) == len(x_train)
        seen["residual_scale"] = seen.get("residual_scale", 0) + 1
        return real_residual(x_train, y_train, residuals, space, **kwargs)

    monkeypatch.setattr(probes, "PROBES", {m: spy(f) for m, f in probes.PROBES.items()})
    monkeypatch.setattr(probes, "neighbour_residual", neighbour_residual)
    monkeypatch.setattr(conformal, "calibrate", calibrate)
    monkeypatch.setattr(conformal, "calibrate_scaled", calibrate_scaled)
    result, _ = compute(RegressionConfig(embeddings=str(emb), out=str(tmp_path / "r"), label_fractions=[0.1, 1.0],
                                         seeds=2))
    # 3 methods x 2 fractions x 2 seeds; linear and mlp reuse the kNN's distance space for their adaptive
    # intervals (no refit); none sees a test row
    assert seen == {"fit": 12, "calibrate": 12, "calibrate_scaled": 12, "residual_scale": 12}
    seen.update(fit=0, calibrate=0, calibrate_scaled=0, residual_scale=0)
    compute(RegressionConfig(embeddings=str(emb), out=str(tmp_path / "r"), methods=["mlp"], label_fractions=[1.0],
                             seeds=1))
    # without a kNN probe, one kNN fit for the space
    assert seen == {"fit": 2, "calibrate": 1, "calibrate_scaled": 1, "residual_scale": 1}
    n_train = splits.count("train")
    assert {r["n_train"] for r in result["records"]} == {round(0.1 * n_train), n_train}
    assert {r["n_test"] for r in result["records"]} == {splits.count("test")}


def test_concat_joins_objects_having_every_modality(tmp_path):
    x, y = smooth_world(300, seed=4)
    image = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    ids = [f"o{i:05d}" for i in range(300)]
    emb = write_store(tmp_path / "emb", {"spectrum": x, "image": image[:250]}, y, split_labels(300),
                      ids={"spectrum": ids, "image": ids[:250]})
    splits = report.load_splits(report.EmbeddingStore.open(emb), "concat", "redshift")
    assert sum(len(s.y) for s in splits.values()) == 250
    assert splits["train"].x.shape[1] == 10
    first = splits["train"].ids[0]
    np.testing.assert_array_equal(splits["train"].x[0], np.concatenate([x[int(first[1:])], image[int(first[1:])]]))


def test_nan_targets_are_dropped(tmp_path):
    x, y = smooth_world(300, seed=6)
    y = y.copy()
    y[::3] = np.nan
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, split_labels(300))
    splits = report.load_splits(report.EmbeddingStore.open(emb), "spectrum", "redshift")
    assert sum(len(s.y) for s in splits.values()) == 200
    assert all(np.isfinite(s.y).all() for s in splits.values())


# ---------------------------------------------------------------------------------------------- CLI


def test_report_folder_through_the_cli(tmp_path, capsys):
    x, y = smooth_world(500, seed=8)
    image = np.random.default_rng(9).normal(size=(500, 6)).astype(np.float32)
    emb = write_store(tmp_path / "emb", {"spectrum": x, "image": image}, np.abs(y), split_labels(500))
    out = tmp_path / "report"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "concat", "--target", "redshift",
                 "--label-fraction", "0.5", "1", "--seeds", "2", "--k", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "report written" in printed.out
    assert "regress" in printed.err and "24/24" in printed.err  # the bar over modalities x methods x fractions x seeds
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.png", "metric_vs_fraction.png", "metrics.json", "pred_vs_true_concat.png",
        "pred_vs_true_spectrum.png", "predictions.parquet", "report.md"]
    result = json.loads((out / "metrics.json").read_text())
    assert len(result["records"]) == 2 * 3 * 2 * 2  # modalities x methods x fractions x seeds
    for record in result["records"]:
        assert {"modality", "method", "label_fraction", "seed", "r2", "rmse", "bias", "nmad", "outlier_fraction",
                "coverage_68", "coverage_95", "n_train", "n_test"} <= set(record)
    assert len(result["summary"]) == 12 and result["config"]["redshift_like"] == {"redshift": True}
    assert {r["target"] for r in result["records"]} == {"redshift"}
    assert all(set(s["mean"]) == set(s["std"]) for s in result["summary"])
    best = [s for s in result["summary"] if s["modality"] == "spectrum" and s["label_fraction"] == 1.0]
    assert max(s["mean"]["r2"] for s in best) > 0.8
    markdown = (out / "report.md").read_text()
    assert "![calibration.png](calibration.png)" in markdown
    assert "kNN for redshift on spectrum, chosen on val (seed 0): f=0.5: k=16, " in markdown
    knn = [r for r in result["records"] if r["method"] == "knn"]
    assert all(r["chosen"]["k"] == 16 and "whiten" in r["chosen"] and r["chosen"]["power"] in probes.KNN_POWER_GRID
               for r in knn)
    assert result["config"]["knn_whiten"] == "auto" and result["config"]["knn_power"] == "auto"


def test_local_linear_through_the_cli(tmp_path, capsys):
    x, y = smooth_world(700, seed=4)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, np.abs(y), split_labels(700))
    out = tmp_path / "report"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift",
                 "--method", "knn", "local_linear", "--label-fraction", "1", "--seeds", "1", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    result = json.loads((out / "metrics.json").read_text())
    local, = (r for r in result["records"] if r["method"] == "local_linear")
    knn, = (r for r in result["records"] if r["method"] == "knn")
    assert {"coverage_68", "coverage_95", "coverage_68_adaptive", "nmad"} <= set(local)
    assert local["r2"] > knn["r2"]  # a smooth target with slopes: the plane beats the average
    assert "Local linear kNN for redshift on spectrum, chosen on val (seed 0): f=1: k=" in \
        (out / "report.md").read_text()
    assert set(pq.read_table(out / "predictions.parquet").column("method").to_pylist()) == {"knn", "local_linear"}


def test_predictions_catalogue_holds_test_and_unlabelled_objects_with_their_intervals(tmp_path):
    x, y = smooth_world(600, seed=11)
    y = y.copy()
    y[::5] = np.nan  # objects without the label: the catalogue predicts them
    splits = split_labels(600, seed=1)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, splits)
    out = report.write_report(RegressionConfig(embeddings=str(emb), out=str(tmp_path / "r"), targets=["redshift"],
                                               methods=["knn", "linear", "gaussian"], label_fractions=[0.5, 1.0],
                                               seeds=2, progress=False))
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    records = json.loads((out / "metrics.json").read_text())["records"]
    unlabelled = {f"o{i:05d}" for i in range(0, 600, 5)}
    labelled_test = {f"o{i:05d}" for i, s in enumerate(splits) if s == "test" and i % 5}
    for method in ("knn", "linear", "gaussian"):
        rows = [r for r in table if r["method"] == method]
        # the test objects and the unlabelled ones, each once; no train or val object with a label
        assert sorted(r["id"] for r in rows) == sorted(unlabelled | labelled_test)
        assert all(r["label_fraction"] == 1.0 and r["seed"] == 0 and r["target"] == "redshift" for r in rows)
        assert all((r["true"] is None) == (r["id"] in unlabelled) for r in rows)
        assert {r["split"] for r in rows if r["id"] in unlabelled} == {"train", "val", "test"}
        test = [r for r in rows if r["true"] is not None]
        record, = (r for r in records if r["method"] == method and r["label_fraction"] == 1.0 and r["seed"] == 0)
        covered = np.mean([r["lower_68"] <= r["true"] <= r["upper_68"] for r in test])
        widths = np.array([r["upper_95"] - r["lower_95"] for r in rows])
        if method == "gaussian":  # mean +- z sigma, sigma recalibrated on val: the *_recal coverage
            assert covered == pytest.approx(record["coverage_68_recal"])
            assert all(r["sigma"] > 0 for r in rows) and widths.std() > 0
            assert all(r["upper_68"] - r["lower_68"] == pytest.approx(2 * metrics.normal_z(0.68) * r["sigma"])
                       for r in rows)
        else:  # conformal: the fixed width calibrated on val
            assert covered == pytest.approx(record["coverage_68"])
            assert all(r["sigma"] is None for r in rows)
            np.testing.assert_allclose(widths, record["width_95"])
        truth = {f"o{i:05d}": y[i] for i in range(600)}
        assert all(r["true"] == pytest.approx(truth[r["id"]]) for r in test)
        # the adaptive intervals: the record's coverage, a width per object
        for tag in (68, 95):
            inside = [r[f"lower_{tag}_adaptive"] <= r["true"] <= r[f"upper_{tag}_adaptive"] for r in test]
            assert np.mean(inside) == pytest.approx(record[f"coverage_{tag}_adaptive"])
        adaptive = np.array([r["upper_68_adaptive"] - r["lower_68_adaptive"] for r in rows])
        assert (adaptive > 0).all() and adaptive.std() > 0
        assert all(r["lower_68_adaptive"] < r["predicted"] < r["upper_68_adaptive"] for r in rows)


def test_point_metrics_in_bins_by_hand():
    """Ten objects in five bins of mag: two a bin, the last bin's predictions off by 0.3 (1 + z = 1.5)."""
    y = np.full(10, 0.5)
    y[::2] = 0.4  # two values a bin, so each bin's r2 is defined
    p = y.copy()
    p[8:] += 0.3
    mag = np.arange(10.0)
    bounds = {"coverage_68": (p - 0.1, p + 0.1)}
    by = report.coverage_in_bins(y, p, mag, bounds, "mag", redshift_like=True)
    assert by["n"] == [2] * 5 and by["coverage_68"] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert by["rmse"][:4] == [0.0] * 4 and by["rmse"][4] == pytest.approx(0.3)
    assert by["outlier_fraction"] == [0.0, 0.0, 0.0, 0.0, 1.0]  # |dz| / (1 + z) = 0.3 / 1.4, 0.3 / 1.5 > 0.15
    assert by["r2"][:4] == [1.0] * 4 and by["r2"][4] < 0
    tied = report.coverage_in_bins(np.array([0.1, 0.2]), np.array([0.1, 0.2]), np.array([1.0, 1.0]),
                                   {}, "mag")
    assert tied["n"] == [0, 0, 0, 0, 2] and tied["nmad"][:4] == [None] * 4 and tied["r2"][4] == 1.0


def test_coverage_by_a_label_through_the_cli(tmp_path, capsys):
    x, y, noise_std = heteroscedastic_world(1500, seed=4)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, split_labels(1500, seed=4),
                      labels={"mag_r": 18 + 4 * noise_std, "band": np.array(["r"] * 1500)})
    out = tmp_path / "report"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "mass",
                 "--method", "knn", "linear", "--label-fraction", "1", "--seeds", "1", "--coverage-by", "mag_r",
                 "--no-progress", "--out", str(out)]) == 0
    assert "adaptive" in capsys.readouterr().out
    assert (out / "coverage_by_mag_r.png").stat().st_size > 0 and (out / "metrics_by_mag_r.png").stat().st_size > 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["coverage_by"] == "mag_r"
    assert all(set(r["coverage_by"]) == {"label", "edges", "n", "coverage_68", "coverage_95", "coverage_68_adaptive",
                                         "coverage_95_adaptive", *report.POINT_KEYS} for r in result["records"])
    markdown = (out / "report.md").read_text()
    assert "![coverage_by_mag_r.png](coverage_by_mag_r.png)" in markdown and "bins of `mag_r`" in markdown
    assert "![metrics_by_mag_r.png](metrics_by_mag_r.png)" in markdown and "NMAD / outlier fraction" in markdown
    # a label the store lacks, or one that is not a number: one line naming it, nothing written
    for label, message in (("mag_g", "no label 'mag_g'"), ("band", "label 'band' is not numeric")):
        assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "mass",
                     "--coverage-by", label, "--no-progress", "--out", str(tmp_path / label)]) == 1
        assert message in capsys.readouterr().err and not (tmp_path / label).exists()


def test_predict_for_another_store_of_the_same_model(tmp_path, capsys):
    x, y = smooth_world(800, seed=12)
    emb = write_store(tmp_path / "emb", {"spectrum": x[:500]}, y[:500], split_labels(500))
    ids = [f"p{i:05d}" for i in range(300)]
    survey = write_store(tmp_path / "survey", {"spectrum": x[500:]}, y[500:], ["train"] * 300, ids={"spectrum": ids})
    out = tmp_path / "r"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift",
                 "--method", "knn", "--label-fraction", "1", "--seeds", "1", "--predict", str(survey),
                 "--out", str(out), "--no-progress"]) == 0
    rows = [r for r in pq.read_table(out / "predictions.parquet").to_pylist() if r["embeddings"] == str(survey)]
    assert sorted(r["id"] for r in rows) == ids  # every object of the other store, whatever its split
    truth = np.array([r["true"] for r in rows])
    predicted = np.array([r["predicted"] for r in rows])
    np.testing.assert_allclose(truth, y[500:][[int(r["id"][1:]) for r in rows]])
    assert metrics.r2(truth, predicted) > 0.8  # the probe fitted on the first store carries over
    # another model's embeddings, or another dimension, are refused before anything is written
    other = write_store(tmp_path / "other", {"spectrum": x[500:, :4]}, y[500:], ["train"] * 300)
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift",
                 "--predict", str(other), "--out", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err
    assert "dimension 4" in err and "one model" in err and not (tmp_path / "r2").exists()
    manifest = json.loads((survey / "manifest.json").read_text())
    (survey / "manifest.json").write_text(json.dumps({**manifest, "model": {"sha256": "ab" * 32}}))
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift",
                 "--predict", str(survey), "--out", str(tmp_path / "r2")]) == 1
    assert "model abababababab" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_several_targets_are_each_regressed_on_their_own_labels(tmp_path, capsys):
    x, y = smooth_world(500, seed=10)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, np.abs(y), split_labels(500))  # mass = 2 |y|
    out = tmp_path / "report"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift", "mass",
                 "--method", "knn", "linear", "--label-fraction", "0.5", "1", "--seeds", "2", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("redshift ") >= 4 and printed.count("mass ") >= 4  # a summary line per target
    result = json.loads((out / "metrics.json").read_text())
    assert result["config"]["targets"] == ["redshift", "mass"]
    assert result["config"]["redshift_like"] == {"redshift": True, "mass": False}
    assert len(result["records"]) == 2 * 2 * 2 * 2  # targets x methods x fractions x seeds
    records = {(r["target"], r["method"], r["label_fraction"], r["seed"]): r for r in result["records"]}
    for (target, method, fraction, seed), mass in records.items():
        if target != "mass":
            continue
        # kNN and ridge are linear in the labels, and val's choices do not change when they double: each
        # target fitted on its own labels gives twice the predictions, the same R^2 and twice the RMSE
        z = records["redshift", method, fraction, seed]
        assert mass["r2"] == pytest.approx(z["r2"], abs=1e-9)
        assert mass["rmse"] == pytest.approx(2 * z["rmse"], rel=1e-6)
        choices = {key for key in z["chosen"] if not key.startswith("val_")}  # val_* scores are 4x
        assert choices and {k: mass["chosen"][k] for k in choices} == {k: z["chosen"][k] for k in choices}
    assert {(s["target"], s["method"], s["label_fraction"]) for s in result["summary"]} == {
        (t, m, f) for t in ("redshift", "mass") for m in ("knn", "linear") for f in (0.5, 1.0)}
    markdown = (out / "report.md").read_text()
    assert "Regression of `redshift`, `mass`" in markdown and "| mass | spectrum | knn | 1 |" in markdown
    assert "kNN for mass on spectrum, chosen on val" in markdown
    assert (out / "pred_vs_true_spectrum.png").stat().st_size > 0


def test_an_unknown_target_among_several_is_refused_before_any_fit(tmp_path, capsys):
    x, y = smooth_world(100)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, split_labels(100))
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift", "mystery",
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "no label 'mystery'" in err and "labels: redshift, mass" in err
    # one line and no progress bar: the labels are all read before the first fit
    assert err.startswith("astrofm regress: error:") and "\n" not in err.strip() and not (tmp_path / "r").exists()
    assert err.count("regress") == 1  # the bar (desc "regress") never started
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift", "redshift",
                 "--out", str(tmp_path / "r")]) == 1
    assert "named more than once" in capsys.readouterr().err


def test_gaussian_method_through_the_cli(tmp_path, capsys):
    x, y, _ = heteroscedastic_world(900, seed=2)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, split_labels(900))
    out = tmp_path / "report"
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "mass",
                 "--method", "mlp", "gaussian", "--label-fraction", "1", "--seeds", "1", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "NLL" in printed.out and printed.err == ""
    result = json.loads((out / "metrics.json").read_text())
    gaussian, = (r for r in result["records"] if r["method"] == "gaussian")
    mlp, = (r for r in result["records"] if r["method"] == "mlp")
    assert {"nll", "coverage_68", "coverage_95", "width_68", "width_95", "nll_recal", "coverage_68_recal",
            "coverage_95_recal", "crps", "crps_recal", "pit_ks", "pit_ks_recal"} <= set(gaussian)
    # sharp and calibrated on this world: a CRPS below the RMSE of its own mean, a PIT near uniform
    assert gaussian["crps"] < gaussian["rmse"] and gaussian["pit_ks"] < 0.12
    assert (out / "pit.png").stat().st_size > 0 and "![pit.png](pit.png)" in (out / "report.md").read_text()
    assert "sigma_scale" in gaussian["chosen"] and "val_nll" in gaussian["chosen"]
    assert "nll" not in mlp and 0.5 < gaussian["coverage_68"] < 0.85 and gaussian["coverage_95"] > 0.85
    summary, = (s for s in result["summary"] if s["method"] == "gaussian")
    assert summary["mean"]["nll"] == pytest.approx(gaussian["nll"])
    assert "| nll | crps | pit_ks |" in (out / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"--target": "mystery"}, "no label 'mystery'"),
    ({"--modality": "radio"}, "no radio embeddings"),
    ({"--label-fraction": "2"}, "not in (0, 1]"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, change, message):
    x, y = smooth_world(100)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, split_labels(100))
    args = {"--embeddings": str(emb), "--modality": "spectrum", "--target": "redshift", "--method": "knn",
            "--out": str(tmp_path / "r"), **change}
    assert main(["regress", *[item for pair in args.items() for item in pair]]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("astrofm regress: error:")
    assert not (tmp_path / "r").exists()


def test_a_split_without_objects_is_an_error(tmp_path, capsys):
    x, y = smooth_world(100)
    emb = write_store(tmp_path / "emb", {"spectrum": x}, y, ["train", "test"] * 50)
    assert main(["regress", "--embeddings", str(emb), "--modality", "spectrum", "--target", "redshift",
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert "the val split has 0" in err and "\n" not in err


def test_knn_picks_k_on_validation_small_for_a_sharp_function_large_for_noise():
    rng = np.random.default_rng(0)
    x_train, x_val = rng.random((2000, 1)).astype(np.float32), rng.random((400, 1)).astype(np.float32)
    # power fixed: with it free, a sharp function may take a large k leaning on its nearest neighbours
    sharp = probes.fit_knn(x_train, np.sin(40 * x_train[:, 0]), x_val, np.sin(40 * x_val[:, 0]), power=1)
    noisy = probes.fit_knn(x_train, x_train[:, 0] + rng.normal(0, 1, 2000), x_val, x_val[:, 0] + rng.normal(0, 1, 400),
                           power=1)
    assert sharp.chosen["k"] <= 8 and noisy.chosen["k"] >= 64
    assert set(sharp.chosen["val_mse_by_k"]) == set(probes.KNN_GRID)
    assert probes.fit_knn(x_train, x_train[:, 0], x_val, x_val[:, 0], k=64, whiten=None, power=1).chosen == \
        {"k": 64, "whiten": None, "power": 1}


def test_knn_picks_the_weights_power_on_validation_high_at_a_sharp_edge_low_for_noise():
    # With k fixed at 32, a step in the target is blurred by far neighbours unless the weights lean on the
    # nearest ones; a target that is pure noise is best averaged evenly.
    rng = np.random.default_rng(2)
    x_train, x_val, x_test = (rng.random((n, 1)).astype(np.float32) for n in (2000, 400, 400))

    def step(x):
        return (x[:, 0] > 0.5).astype(float)

    sharp = probes.fit_knn(x_train, step(x_train), x_val, step(x_val), k=32, whiten=None)
    noise = probes.fit_knn(x_train, rng.normal(0, 1, 2000), x_val, rng.normal(0, 1, 400), k=32, whiten=None)
    assert sharp.chosen["power"] == max(probes.KNN_POWER_GRID) and noise.chosen["power"] == min(probes.KNN_POWER_GRID)
    assert set(sharp.chosen["val_mse_by_power"]) == {f"{p:g}" for p in probes.KNN_POWER_GRID}
    even = probes.fit_knn(x_train, step(x_train), None, None, k=32, whiten=None, power=1)
    mse = {name: np.mean((probe.predict(x_test) - step(x_test)) ** 2) for name, probe in [("auto", sharp), ("p1", even)]}
    assert mse["auto"] < 0.7 * mse["p1"]
    with pytest.raises(ValueError, match="power"):
        probes.fit_knn(x_train, step(x_train), x_val, step(x_val), power=-1)


def test_whitened_distances_are_mahalanobis_distances_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) @ np.array([[3.0, 0, 0], [1.0, 0.5, 0], [0, 0.2, 0.1]])
    shrinkage = 1e-3
    whiten = probes.Whitener.fit(x, shrinkage)
    covariance = np.cov(x, rowvar=False)
    shrunk = covariance + shrinkage * np.linalg.eigvalsh(covariance).max() * np.eye(3)
    a, b = x[:2]
    assert np.sum((whiten(a[None]) - whiten(b[None])) ** 2) == pytest.approx(
        (a - b) @ np.linalg.solve(shrunk, a - b), rel=1e-4)
    nearly_exact = probes.Whitener.fit(x, 1e-8)  # shrinkage negligible against every eigenvalue
    assert np.cov(nearly_exact(x), rowvar=False) == pytest.approx(np.eye(3), abs=1e-3)
    assert np.all(probes.Whitener.fit(x[:1], shrinkage)(x[:3]) == (x[:3] - x[0]).astype(np.float32))
    with pytest.raises(ValueError, match="positive"):
        probes.Whitener.fit(x, 0.0)


def test_knn_whitens_on_validation_when_the_target_lives_in_a_direction_of_small_variance():
    # A loud nuisance direction (variance 100) and the quiet one that sets the target (variance 0.01):
    # plain distances pick neighbours by the nuisance; whitened ones by the target's direction.
    rng = np.random.default_rng(1)

    def world(n):
        x = np.column_stack([rng.normal(0, 10, n), rng.normal(0, 0.1, n)]).astype(np.float32)
        return x, np.sin(20 * x[:, 1])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = world(3000), world(500), world(500)
    auto = probes.fit_knn(x_train, y_train, x_val, y_val)
    plain = probes.fit_knn(x_train, y_train, x_val, y_val, whiten=None)
    assert auto.chosen["whiten"] is not None and plain.chosen["whiten"] is None
    assert set(auto.chosen["val_mse_by_whiten"]) == {"none", "0.0001", "0.001", "0.01", "0.1"}
    mse = {name: np.mean((probe.predict(x_test) - y_test) ** 2) for name, probe in [("auto", auto), ("plain", plain)]}
    assert mse["auto"] < 0.2 * mse["plain"]
    fixed = probes.fit_knn(x_train, y_train, None, None, k=8, whiten=0.01, power=2)
    assert fixed.chosen == {"k": 8, "whiten": 0.01, "power": 2}
    with pytest.raises(ValueError, match="needs validation rows"):
        probes.fit_knn(x_train, y_train, None, None, k=8, power=1)
    with pytest.raises(ValueError, match="whiten"):
        probes.fit_knn(x_train, y_train, x_val, y_val, whiten="yes")


@pytest.mark.parametrize(("flag", "field", "value", "expected"), [
    ("--knn-whiten", "knn_whiten", "none", None), ("--knn-whiten", "knn_whiten", "0.01", 0.01),
    ("--knn-whiten", "knn_whiten", "auto", "auto"), ("--knn-power", "knn_power", "2", 2.0),
    ("--knn-power", "knn_power", "auto", "auto"), ("--adaptive-scale", "adaptive_scale", "spread", "spread"),
    ("--adaptive-groups", "adaptive_groups", "1", 1)])
def test_cli_knn_settings_reach_the_config(tmp_path, monkeypatch, flag, field, value, expected):
    seen = {}

    def fake_write_report(config):
        seen["value"] = getattr(config, field)
        raise SystemExit(0)

    monkeypatch.setattr("downstream.regression.write_report", fake_write_report)
    with pytest.raises(SystemExit):
        main(["regress", "--embeddings", "e", "--modality", "spectrum", "--target", "z", "--out", "o",
              flag, value])
    assert seen["value"] == expected


def test_cli_knn_whiten_and_power_must_be_valid(capsys):
    for flag, bad in (("--knn-whiten", "-1"), ("--knn-whiten", "some"), ("--knn-power", "-1"), ("--knn-power", "x")):
        with pytest.raises(SystemExit):
            main(["regress", "--embeddings", "e", "--modality", "spectrum", "--target", "z", "--out", "o",
                  flag, bad])
    err = capsys.readouterr().err
    assert "must be positive" in err and "neither a number, 'none' nor 'auto'" in err
    assert "exponent must be >= 0" in err and "'x' is neither a number nor 'auto'" in err


def test_cli_k_must_be_a_number_or_auto(capsys):
    from astrofm.cli.main import main

    with pytest.raises(SystemExit):
        main(["regress", "--embeddings", "e", "--modality", "spectrum", "--target", "z", "--out", "o", "--k", "many"])
    assert "neither a number nor 'auto'" in capsys.readouterr().err
