"""`astrofm regress`: probes on frozen embeddings, reported with point metrics and conformal coverage.

Protocol, per target and modality (or `concat`: the modalities' embeddings joined, for objects having
them all); each target is regressed on its own:
    rows whose target is NaN or null are dropped;
    for each seed s and label fraction f, the probe is fitted on a seeded subset of the train split
    (the first round(f * n_train) rows of one permutation per seed, so smaller subsets are nested in
    larger ones); hyper-parameters and early stopping use the whole val split, the conformal intervals
    are calibrated on the whole val split; every metric is measured on the test split, which is never
    used to fit, select or calibrate.

Intervals: knn, linear and mlp get split-conformal intervals (fixed width, calibrated on val). The
probabilistic `gaussian` method gets mean +- z sigma from its own predicted sigma: coverage_68/95,
width_68/95 (mean width on test) and nll use that raw sigma; the *_recal keys use sigma times the
scale s fitted on val (chosen["sigma_scale"]), so that val z-scores have unit variance.
Every method also gets adaptive split-conformal intervals (*_adaptive keys; conformal.calibrate_scaled):
p +- q u with u the object's own scale, the gaussian's sigma or, for the point probes (`adaptive_scale`),
the probe's mean absolute training residual over the object's nearest training neighbours
(probes.neighbour_residual; the kNN's residuals leave-one-out) or those neighbours' label spread
(probes.neighbour_spread), in the kNN probe's distance space; q calibrated on val, one per equal-count group of
predicted value (`adaptive_groups`, Mondrian conformal: the guarantee holds in each group). With `coverage_by` (a label
such as mag_r), each record's "coverage_by" holds the test coverage of both kinds in equal-count bins of it:
whether the intervals hold for bright and faint objects alike, not only on average; and the point metrics
(r2, rmse, bias, nmad, outlier_fraction) in the same bins: photo-z quality against magnitude.

Output: REPORT_DIR/metrics.json {"config", "records": one per (target, modality, method, label_fraction,
seed), "summary": mean and std over seeds}, pred_vs_true_{modality}.png (a row per target), calibration.png
and metric_vs_fraction.png (a panel row per target), report.md, and predictions.parquet: the catalogue
of the probes fitted on the largest label fraction with seed 0, for the test objects (beside their
truth), every object whose target is missing (in any split) and every object of the `predict` stores,
with 68% and 95% intervals (conformal, or for `gaussian` mean +- z sigma with sigma recalibrated on val), and
the adaptive ones (lower_68_adaptive ...).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from astrofm.atomic import staged_folder
from astrofm.embedstore.store import EmbeddingStore, table_vectors
from astrofm.reports import check_report_target, summarise_over_seeds, write_metrics
from downstream.regression import conformal, probes
from downstream.regression.metrics import (
    coverage,
    gaussian_crps,
    gaussian_nll,
    gaussian_pit,
    is_redshift_like,
    normal_z,
    pit_ks,
    point_metrics,
)

CONCAT = "concat"
SPLITS = ("train", "val", "test")
CURVE_LEVELS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
PREDICTIONS = "predictions.parquet"
POINT_KEYS = ("r2", "rmse", "bias", "nmad", "outlier_fraction")  # point_metrics' keys, also given per bin
SUMMARY_KEYS = POINT_KEYS + ("coverage_68", "coverage_95", "width_68", "width_95", "coverage_68_adaptive",
                             "coverage_95_adaptive", "width_68_adaptive", "width_95_adaptive", "nll",
                             "coverage_68_recal", "coverage_95_recal", "nll_recal", "crps", "crps_recal",
                             "pit_ks", "pit_ks_recal")
COVERAGE_BINS = 5  # equal-count bins of the `coverage_by` label on test


@dataclass
class RegressionConfig:
    embeddings: str  # embedding folder (astrofm embed)
    out: str  # report folder to write
    # label columns to predict, each by its own probes (an astronomer's z, M* and sSFR in one report)
    targets: list[str] = field(default_factory=lambda: ["redshift"])
    modalities: list[str] = field(default_factory=lambda: ["spectrum"])  # modality names or "concat"
    methods: list[str] = field(default_factory=lambda: list(probes.METHODS))  # knn, linear, mlp (+ gaussian)
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # of the train split
    seeds: int = 3  # seeds 0 .. seeds-1 (label subsets and MLP initialisation)
    k: int | None = None  # neighbours of the kNN probe; None: chosen on val from probes.KNN_GRID
    # the kNN's whitening shrinkage (probes.Whitener), None for plain Euclidean distances, or "auto":
    # chosen on val from probes.KNN_WHITEN_GRID (None among them)
    knn_whiten: float | str | None = "auto"
    # the exponent p of the kNN's weights 1/d^p, or "auto": chosen on val from probes.KNN_POWER_GRID
    knn_power: float | str = "auto"
    redshift_like: bool | None = None  # dz/(1+z) residuals for every target; None: decided from each one's name
    # other embedding folders (made by the same model) whose objects predictions.parquet also predicts,
    # e.g. a photometric survey without redshifts; their labels, where they have them, stand beside
    predict: list[str] = field(default_factory=list)
    # a label (e.g. mag_r) in whose equal-count test bins the coverage of both interval kinds is reported
    coverage_by: str | None = None
    # the point probes' adaptive interval scale (probes.ADAPTIVE_SCALES): "residual", the probe's own training
    # residuals around each object, or "spread", its neighbours' label spread
    adaptive_scale: str = "residual"
    # groups of predicted value that get their own adaptive multiplier q (conformal.calibrate_grouped), each of at
    # least conformal.MIN_GROUP_ROWS val rows; 1: one q for all. On the mock's 20k survey with 1% of the labels,
    # 5 groups brought the worst fifth of r from 0.14 to 0.10 off 68% (spectrum and image, kNN and MLP; README)
    adaptive_groups: int = 5
    overwrite: bool = False
    progress: bool = True  # a bar over the fits (target x modality x method x fraction x seed) on stderr


@dataclass
class Split:
    ids: list[str]
    x: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) float64
    splits: list[str] | None = None  # each row's split where the rows mix them (unlabelled rows)
    strata: np.ndarray | None = None  # (N,) the `coverage_by` label, where the report asks for it


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded label subset; for one seed, a smaller fraction's subset is inside a
    larger one's (both are prefixes of the same permutation)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction} is not in (0, 1]")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: max(1, int(round(fraction * n)))])


def label_values(table, target: str, where: str) -> np.ndarray:
    """A numeric label column as float64, null as NaN; a missing or non-numeric one raises, naming `where`."""
    if target not in table.column_names:
        labels = [c for c in table.column_names if c not in ("id", "split", "embedding")]
        raise ValueError(f"{where}: no label {target!r} (labels: {', '.join(labels) or 'none'})")
    values = table.column(target).to_pylist()
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: label {target!r} is not numeric ({error})") from None


@dataclass
class ModalityRows:
    """One modality's (or `concat`'s) embeddings with their splits, and the labels to pick targets from."""
    name: str
    path: str  # the embedding folder, for errors
    label_source: str  # the modality whose table the labels are read from
    ids: list[str]
    x: np.ndarray  # (N, D) float32
    split: np.ndarray  # (N,) split names
    labels: Any  # the pyarrow table the rows' labels are read from
    rows: list[int]  # rows of `labels` in the order of ids

    def values(self, target: str, missing_ok: bool = False) -> np.ndarray:
        """(N,) the rows' `target`, NaN where null; a missing label raises, or is all NaN with missing_ok."""
        if missing_ok and target not in self.labels.column_names:
            return np.full(len(self.ids), np.nan)
        return label_values(self.labels, target, f"{self.path} ({self.label_source})")[self.rows]

    def splits(self, target: str, strata: str | None = None) -> dict[str, Split]:
        """split -> rows with a finite `target` (and their `strata` label); a split with fewer than 2 such rows
        raises."""
        y = self.values(target)
        by = None if strata is None else self.values(strata)
        out = {}
        for name in SPLITS:
            keep = np.flatnonzero((self.split == name) & np.isfinite(y))
            if keep.size < 2:
                raise ValueError(f"{self.path}: the {name} split has {keep.size} {self.name} objects "
                                 f"with a finite {target!r}; need at least 2")
            out[name] = Split([self.ids[i] for i in keep], self.x[keep], y[keep],
                              strata=None if by is None else by[keep])
        return out

    def unlabelled(self, target: str) -> Split:
        """Rows of any split whose `target` is NaN or null (y NaN): what a catalogue is predicted for."""
        y = self.values(target)
        keep = np.flatnonzero(~np.isfinite(y))
        return Split([self.ids[i] for i in keep], self.x[keep], y[keep], self.split[keep].tolist())

    def everything(self, target: str) -> Split:
        """Every row, with `target` where this store has it (NaN elsewhere): another store's catalogue rows."""
        return Split(list(self.ids), self.x, self.values(target, missing_ok=True), self.split.tolist())


def load_modality(store: EmbeddingStore, modality: str, splits: tuple[str, ...] | None = SPLITS) -> ModalityRows:
    """A modality's embeddings (of `splits`, None: all); `concat` joins all the store's modalities on object id."""
    names = store.modalities if modality == CONCAT else [modality]
    if modality == CONCAT and not names:
        raise ValueError(f"{store.path}: no modalities to concatenate")
    tables = [store.read(name, splits=None if splits is None else list(splits)) for name in names]
    ids = tables[0].column("id").to_pylist()
    common = set(ids).intersection(*(t.column("id").to_pylist() for t in tables[1:]))
    rows = [i for i, oid in enumerate(ids) if oid in common]
    parts = []
    for table in tables:
        position = {oid: i for i, oid in enumerate(table.column("id").to_pylist())}
        parts.append(table_vectors(table)[[position[ids[i]] for i in rows]])
    x = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)
    split = np.array(tables[0].column("split").to_pylist(), dtype=object)[rows]
    return ModalityRows(modality, str(store.path), names[0], [ids[i] for i in rows], x, split, tables[0], rows)


def load_splits(store: EmbeddingStore, modality: str, target: str) -> dict[str, Split]:
    """split -> rows with a finite target; `concat` joins all the store's modalities on object id."""
    return load_modality(store, modality).splits(target)


def evaluate(train: Split, val: Split, test: Split, method: str, fraction: float, seed: int,
             config: RegressionConfig, redshift_like: bool,
             predict_for: list[tuple[str, Split]] | None = None,
             spaces: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit one probe on a label subset of train, calibrate on val, measure on test. With `predict_for`
    ((embedding folder, rows) pairs), the arrays also hold arrays["catalogue"]: predictions.parquet's
    columns for those rows. `spaces` (fraction, seed) -> the kNN's distance space of these rows, shared by
    the calls for one target and modality so that the kNN is fitted once for all methods."""
    subset = label_subset(len(train.y), fraction, seed)
    x_fit, y_fit = train.x[subset], train.y[subset]
    probe = probes.PROBES[method](x_fit, y_fit, val.x, val.y, k=config.k,
                                  whiten=config.knn_whiten, power=config.knn_power, seed=seed)
    p_test, p_val = probe.predict(test.x), probe.predict(val.x)
    record: dict[str, Any] = {"method": method, "label_fraction": fraction, "seed": seed,
                              "n_train": int(subset.size), "n_val": len(val.y), "n_test": len(test.y),
                              "chosen": probe.chosen, **point_metrics(test.y, p_test, redshift_like)}
    arrays: dict[str, Any] = {"y": test.y, "p": p_test}
    # coverage key -> test (lower, upper) of each interval kind, for coverage_by
    bounds, half = main_intervals(probe, p_val, p_test, val, test, record, arrays)
    space = interval_space(probe, x_fit, y_fit, val, config, seed, {} if spaces is None else spaces, fraction)
    scale = probe.predict_sigma or point_scale(probe, x_fit, y_fit, space, config.adaptive_scale)
    multiplier = adaptive_intervals(scale, p_val, p_test, val, test, record, arrays, bounds, config.adaptive_groups)
    if test.strata is not None:
        record["coverage_by"] = coverage_in_bins(test.y, p_test, test.strata, bounds, config.coverage_by,
                                                 redshift_like)
    if predict_for is not None:
        # the gaussian's catalogue sigma is the recalibrated one: val z-scores of unit variance
        sigma_of = None if probe.predict_sigma is None else (
            lambda x: probe.chosen["sigma_scale"] * probe.predict_sigma(x))
        arrays["catalogue"] = catalogue(probe, predict_for, sigma_of, half, scale, multiplier)
    return record, arrays


def main_intervals(probe: probes.Probe, p_val: np.ndarray, p_test: np.ndarray, val: Split, test: Split,
                   record: dict[str, Any], arrays: dict[str, Any]):
    """The gaussian's mean +- z sigma (raw and recalibrated), or the point probes' fixed-width conformal
    intervals: their keys into `record` and curves into `arrays`; returns (bounds on test, conformal half-widths
    or None)."""
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if probe.predict_sigma is not None:
        sigma = probe.predict_sigma(test.x)
        scaled = sigma * probe.chosen["sigma_scale"]
        record.update(sigma_intervals(test.y, p_test, sigma))
        record.update({f"{key}_recal": value for key, value in sigma_intervals(test.y, p_test, scaled).items()})
        for level in conformal.LEVELS:
            tag, z = int(round(level * 100)), normal_z(level)
            bounds[f"coverage_{tag}"] = (p_test - z * sigma, p_test + z * sigma)
            bounds[f"coverage_{tag}_recal"] = (p_test - z * scaled, p_test + z * scaled)
        curves = [[coverage(test.y, p_test - normal_z(a) * s, p_test + normal_z(a) * s) for a in CURVE_LEVELS]
                  for s in (sigma, scaled)]
        arrays.update({"sigma": sigma, "curve": np.array(curves[0]), "curve_recal": np.array(curves[1]),
                       "pit": gaussian_pit(test.y, p_test, sigma), "pit_recal": gaussian_pit(test.y, p_test, scaled)})
        return bounds, None
    half = conformal.calibrate(val.y, p_val, levels=conformal.LEVELS + CURVE_LEVELS)
    for level in conformal.LEVELS:
        tag = int(round(level * 100))
        bounds[f"coverage_{tag}"] = conformal.intervals(p_test, half[level])
        record[f"coverage_{tag}"] = coverage(test.y, *bounds[f"coverage_{tag}"])
        record[f"width_{tag}"] = 2 * half[level]
    arrays["curve"] = np.array([coverage(test.y, *conformal.intervals(p_test, half[a])) for a in CURVE_LEVELS])
    return bounds, half


def adaptive_intervals(scale, p_val: np.ndarray, p_test: np.ndarray, val: Split, test: Split,
                       record: dict[str, Any], arrays: dict[str, Any], bounds: dict,
                       n_groups: int) -> conformal.GroupedMultiplier:
    """p +- q scale(x), q calibrated on val per group of predicted value: the *_adaptive keys into `record`
    (with the groups used), the curve into `arrays`, the test bounds into `bounds`; returns the multipliers."""
    u_test = scale(test.x)
    multiplier = conformal.calibrate_grouped(val.y, p_val, scale(val.x), n_groups,
                                             levels=conformal.LEVELS + CURVE_LEVELS)
    record["adaptive_groups"] = multiplier.n_groups
    for level in conformal.LEVELS:
        tag = int(round(level * 100))
        lower, upper = bounds[f"coverage_{tag}_adaptive"] = conformal.intervals(p_test, multiplier(level, p_test) * u_test)
        record[f"coverage_{tag}_adaptive"] = coverage(test.y, lower, upper)
        record[f"width_{tag}_adaptive"] = float(np.mean(upper - lower))
    arrays["curve_adaptive"] = np.array([coverage(test.y, *conformal.intervals(p_test, multiplier(a, p_test) * u_test))
                                         for a in CURVE_LEVELS])
    return multiplier


def point_scale(probe: probes.Probe, x_fit: np.ndarray, y_fit: np.ndarray, space, kind: str):
    """A point probe's adaptive interval scale x -> u(x) of `kind` (probes.ADAPTIVE_SCALES), from its
    training rows."""
    if kind == "spread":
        return probes.neighbour_spread(x_fit, y_fit, space)
    return probes.neighbour_residual(x_fit, y_fit, probe.train_residuals(), space)


def interval_space(probe: probes.Probe, x_fit: np.ndarray, y_fit: np.ndarray, val: Split, config: RegressionConfig,
                   seed: int, spaces: dict, fraction: float):
    """The distance space of the point probes' adaptive scale (the label spread of the nearest training
    neighbours): the kNN probe's own, or for linear and mlp that of a kNN probe fitted on the same rows
    (once per label subset: cached in `spaces`); None for the gaussian, whose scale is its own sigma."""
    if probe.predict_sigma is not None:
        return None
    if probe.space is not None:
        spaces[fraction, seed] = probe.space
    if (fraction, seed) not in spaces:
        spaces[fraction, seed] = probes.PROBES["knn"](x_fit, y_fit, val.x, val.y, k=config.k, whiten=config.knn_whiten,
                                                      power=config.knn_power, seed=seed).space
    return spaces[fraction, seed]


def coverage_in_bins(y: np.ndarray, p: np.ndarray, strata: np.ndarray,
                     bounds: dict[str, tuple[np.ndarray, np.ndarray]], label: str | None,
                     redshift_like: bool = False) -> dict[str, Any]:
    """Test coverage of each interval kind, and the point metrics of the predictions p, in COVERAGE_BINS
    equal-count bins of `strata` (rows where it is NaN are left out; a bin without rows, from tied values,
    has None; one with a single row, or a single label value, None for r2)."""
    finite = np.isfinite(strata)
    if not finite.any():
        raise ValueError(f"coverage_by {label!r}: no test object has a finite value")
    edges = np.quantile(strata[finite], np.linspace(0.0, 1.0, COVERAGE_BINS + 1))
    which = np.clip(np.searchsorted(edges, strata, side="right") - 1, 0, COVERAGE_BINS - 1)
    rows = [finite & (which == b) for b in range(COVERAGE_BINS)]
    out: dict[str, Any] = {"label": label, "edges": edges.tolist(), "n": [int(r.sum()) for r in rows]}
    for key, (lower, upper) in bounds.items():
        inside = (y >= lower) & (y <= upper)
        out[key] = [float(inside[r].mean()) if r.any() else None for r in rows]
    per_bin = [point_metrics(y[r], p[r], redshift_like) if r.any() else None for r in rows]
    for key in POINT_KEYS:
        out[key] = [None if m is None or not np.isfinite(m[key]) else m[key] for m in per_bin]
    return out


def catalogue(probe, parts: list[tuple[str, Split]], sigma_of, half: dict[float, float] | None, scale,
              multiplier: conformal.GroupedMultiplier) -> dict[str, list]:
    """Columns of predictions.parquet for one probe and the rows of `parts` ((embedding folder, rows);
    rows without a split list are test rows), truth null where NaN; intervals mean +- z sigma where
    `sigma_of` is given, else the conformal `half`; the adaptive ones p +- multiplier(level, p) * scale(x)."""
    x = np.concatenate([rows.x for _, rows in parts])
    y = np.concatenate([rows.y for _, rows in parts])
    predicted = probe.predict(x) if len(x) else np.zeros(0)
    sigma = None if sigma_of is None else sigma_of(x) if len(x) else np.zeros(0)
    u = scale(x) if len(x) else np.zeros(0)
    columns: dict[str, list] = {
        "embeddings": [source for source, rows in parts for _ in rows.ids],
        "id": [oid for _, rows in parts for oid in rows.ids],
        "split": [name for _, rows in parts for name in (rows.splits or ["test"] * len(rows.ids))],
        "true": [float(v) if np.isfinite(v) else None for v in y],
        "predicted": predicted.tolist(),
        "sigma": sigma.tolist() if sigma is not None else [None] * len(x)}
    for level in conformal.LEVELS:
        tag = int(round(level * 100))
        width = normal_z(level) * sigma if sigma is not None else half[level]
        columns[f"lower_{tag}"] = (predicted - width).tolist()
        columns[f"upper_{tag}"] = (predicted + width).tolist()
    for level in conformal.LEVELS:
        tag = int(round(level * 100))
        half_width = multiplier(level, predicted) * u
        columns[f"lower_{tag}_adaptive"] = (predicted - half_width).tolist()
        columns[f"upper_{tag}_adaptive"] = (predicted + half_width).tolist()
    return columns


def sigma_intervals(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Coverage and mean width of mu +- z sigma at the conformal levels, the Gaussian NLL and CRPS, and the KS
    distance of the PIT values from uniform, on (y, mu, sigma)."""
    out = {"nll": gaussian_nll(y, mu, sigma), "crps": gaussian_crps(y, mu, sigma),
           "pit_ks": pit_ks(gaussian_pit(y, mu, sigma))}
    for level in conformal.LEVELS:
        tag, z = int(round(level * 100)), normal_z(level)
        out[f"coverage_{tag}"] = coverage(y, mu - z * sigma, mu + z * sigma)
        out[f"width_{tag}"] = float(np.mean(2 * z * sigma))
    return out


def _summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # nll and *_recal: gaussian records only, so each group summarises the keys its records carry.
    return summarise_over_seeds(records, ("target", "modality", "method", "label_fraction"), SUMMARY_KEYS)


def _check(config: RegressionConfig) -> None:
    unknown = [m for m in config.methods if m not in probes.PROBES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(probes.PROBES)}")
    for fraction in config.label_fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"label fraction {fraction} is not in (0, 1]")
    if config.adaptive_scale not in probes.ADAPTIVE_SCALES:
        raise ValueError(f"unknown adaptive scale {config.adaptive_scale!r}; choose from {list(probes.ADAPTIVE_SCALES)}")
    if config.adaptive_groups < 1:
        raise ValueError(f"--adaptive-groups {config.adaptive_groups}: need at least 1")
    if config.seeds < 1:
        raise ValueError(f"--seeds {config.seeds}: need at least 1")
    if not config.targets:
        raise ValueError("no target: name at least one label")
    repeated = sorted({t for t in config.targets if config.targets.count(t) > 1})
    if repeated:
        raise ValueError(f"target(s) {repeated} named more than once")


def open_same_model(path: str, store: EmbeddingStore) -> EmbeddingStore:
    """Another embedding store to predict for; refused unless the same model (and dimension) made it."""
    other = EmbeddingStore.open(path)
    if other.model_sha256 != store.model_sha256 or other.dimension != store.dimension:
        def model(s: EmbeddingStore) -> str:
            return f"model {(s.model_sha256 or 'unrecorded')[:12]}, dimension {s.dimension}"
        raise ValueError(f"{other.path}: embedded by {model(other)}, but {store.path} by {model(store)}; "
                         f"--predict needs embeddings of one model")
    return other


def catalogue_rows(config: RegressionConfig, store: EmbeddingStore, embeddings: dict[str, ModalityRows],
                   data: dict[tuple[str, str], dict[str, Split]]) -> dict[tuple[str, str], list[tuple[str, Split]]]:
    """(target, modality) -> what predictions.parquet predicts: this store's test rows and rows without the
    target, then every row of each `config.predict` store."""
    others = [open_same_model(path, store) for path in config.predict]
    for other in others:
        if CONCAT in config.modalities and other.modalities != store.modalities:
            raise ValueError(f"{other.path}: modalities {other.modalities}, but {store.path} has "
                             f"{store.modalities}; concat predictions need the same ones")
    other_rows = [(str(other.path), {m: load_modality(other, m, splits=None) for m in config.modalities})
                  for other in others]
    return {(target, modality): [(str(store.path), data[target, modality]["test"]),
                                 (str(store.path), rows.unlabelled(target))]
            + [(path, loaded[modality].everything(target)) for path, loaded in other_rows]
            for target in config.targets for modality, rows in embeddings.items()}


def compute(config: RegressionConfig) -> tuple[dict[str, Any], dict[str, dict[str, dict]]]:
    """metrics.json content, and for plots target -> modality -> method -> test predictions and coverage
    curve of the largest label fraction, seed 0."""
    _check(config)
    store = EmbeddingStore.open(config.embeddings)
    redshift_like = {target: is_redshift_like(target) if config.redshift_like is None else config.redshift_like
                     for target in config.targets}
    # every target of every modality is read (and a bad one refused) before the first fit
    embeddings = {modality: load_modality(store, modality) for modality in config.modalities}
    data = {(target, modality): rows.splits(target, config.coverage_by) for target in config.targets
            for modality, rows in embeddings.items()}
    predict_for = catalogue_rows(config, store, embeddings, data)
    records, shown = [], {}
    spaces: dict[tuple[str, str], dict] = {}  # (target, modality) -> the kNN distance space per label subset
    fractions = sorted(set(config.label_fractions))
    fits = [(target, modality, method, fraction, seed) for target, modality in data for method in config.methods
            for fraction in fractions for seed in range(config.seeds)]
    bar = tqdm(fits, desc="regress", unit="fit", disable=not config.progress, file=sys.stderr)
    for target, modality, method, fraction, seed in bar:
        bar.set_postfix_str(f"{target} {modality} {method} f={fraction:g} seed {seed}")
        splits = data[target, modality]
        shows = fraction == fractions[-1] and seed == 0  # plotted, and the predictions catalogue
        record, arrays = evaluate(splits["train"], splits["val"], splits["test"], method, fraction, seed, config,
                                  redshift_like[target], predict_for[target, modality] if shows else None,
                                  spaces.setdefault((target, modality), {}))
        records.append({"target": target, "modality": modality, **record})
        if shows:
            shown.setdefault(target, {}).setdefault(modality, {})[method] = arrays
    bar.close()
    settings = {**asdict(config), "redshift_like": redshift_like, "label_fractions": fractions,
                "curve_levels": list(CURVE_LEVELS), "model_sha256": store.model_sha256}
    settings.pop("progress")  # how the run was shown is not a result
    return {"config": settings, "records": records, "summary": _summary(records)}, shown


def write_predictions(path: Path, shown: dict[str, dict[str, dict[str, dict]]], fraction: float) -> None:
    """predictions.parquet: one row per object, target, modality and method, from the probes fitted on the
    largest label fraction with seed 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for target, by_modality in shown.items():
        for modality, by_method in by_modality.items():
            for method, arrays in by_method.items():
                columns = arrays["catalogue"]
                n = len(columns["id"])
                parts.append(pa.table({"target": [target] * n, "modality": [modality] * n, "method": [method] * n,
                                       "label_fraction": [fraction] * n, "seed": [0] * n,
                                       **{k: pa.array(v, pa.string() if k in ("embeddings", "id", "split")
                                                      else pa.float64())
                                          for k, v in columns.items()}}))
    pq.write_table(pa.concat_tables(parts), path)


def write_report(config: RegressionConfig) -> Path:
    """Compute everything, then write REPORT_DIR atomically (a temporary sibling renamed into place)."""
    from downstream.regression import plots

    out = check_report_target(config.out, config.overwrite, "regression report")
    metrics, shown = compute(config)
    with staged_folder(out) as staging:
        write_metrics(staging, metrics)
        fraction = metrics["config"]["label_fractions"][-1]
        write_predictions(staging / PREDICTIONS, shown, fraction)
        modalities = list(next(iter(shown.values())))
        images = [plots.pred_vs_true(staging, m, {t: shown[t][m] for t in shown}, fraction) for m in modalities]
        images.append(plots.calibration(staging, shown, metrics["config"]["curve_levels"]))
        images.append(plots.metric_vs_fraction(staging, metrics["summary"]))
        if any("pit" in arrays for by_modality in shown.values() for methods in by_modality.values()
               for arrays in methods.values()):
            images.append(plots.pit_histograms(staging, shown))
        if config.coverage_by:
            images.append(plots.coverage_by(staging, metrics["records"], config.coverage_by, fraction))
            images.append(plots.metrics_by(staging, metrics["records"], config.coverage_by, fraction))
        (staging / "report.md").write_text(plots.markdown(metrics, images))
    return out
