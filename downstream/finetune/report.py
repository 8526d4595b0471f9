"""`astrofm finetune`: few-label fine-tuning of a pretrained encoder against the same architecture trained
from scratch (and the MLP probe on frozen embeddings), on the same label subsets.

Protocol, for one modality M and each target (`--target A B ...`, each fitted on its own):
    objects of each split having M are read once into memory, sorted by id, with every target's values;
    a target uses the objects where it is finite. For each seed s and label fraction f its label subset is
    `label_subset(n_train, f, s)` of those train rows (nested: a smaller fraction's subset lies inside a
    larger one's); every method fits on that subset only, chooses its epoch (early stopping) on the whole
    val split, and is measured on the test split, which is never used to fit or select.

Output: REPORT_DIR/metrics.json {"config", "data", "records": one per (target, method, label_fraction, seed),
"summary": mean and std over seeds, per target}, label_subsets.json ({target: {fraction: {seed: the train ids
used}}}), r2_vs_fraction.png and pred_vs_true.png (a row per target), report.md, and predictions.parquet:
every method's test-split predictions (largest label fraction, seed 0) beside the truth, one row per target,
object and method.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astrofm.atomic import staged_folder
from astrofm.augment import AugmentConfig
from astrofm.reports import check_report_target, summarise_over_seeds, write_metrics
from downstream.finetune import train as training
from downstream.finetune.config import FinetuneConfig
from downstream.finetune.data import Rows, check_inputs, load_split, require_rows
from downstream.finetune.model import build_regressor
from downstream.regression import probes
from downstream.regression.metrics import is_redshift_like, point_metrics
from downstream.regression.report import label_subset

SUMMARY_KEYS = ("r2", "rmse", "bias", "nmad", "outlier_fraction")


def load_pretrained(config: FinetuneConfig):
    from astrofm.models.io import load_model

    model = load_model(config.model)
    if config.modality not in model.encoders:
        raise ValueError(f"{config.model}: the model has no {config.modality} encoder (it has {model.modalities})")
    return model


def frozen_embeddings(model, modality: str, rows: Rows, batch_size: int) -> np.ndarray:
    """The pretrained model's embeddings of `rows`, through `model.embed` (eval mode, no gradients)."""
    model.eval()
    return training.run_batches(lambda inputs: model.embed({modality: inputs})[modality], rows,
                                batch_size).numpy()


NOISY_MODALITIES = ("spectrum", "photometry")  # the modalities astrofm.augment redraws noise for


def _settings(config: FinetuneConfig, method: str, label: str, noise: bool = True) -> training.TrainSettings:
    encoder_lr = config.lr_scratch if method == "scratch" else config.lr_encoder
    head_lr = config.lr_scratch if method == "scratch" else config.lr_head
    augment = AugmentConfig(spectrum_noise=noise, photometry_noise=noise) if config.augment else None
    return training.TrainSettings(
        lr_encoder=encoder_lr, lr_head=head_lr, epochs=config.epochs, patience=config.patience,
        max_steps=config.max_steps, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps, grad_clip=config.grad_clip,
        head_epochs=config.head_epochs if method == "finetune" else 0,
        augment=augment, progress=config.progress, label=label)


def noise_options(config: FinetuneConfig) -> list[bool]:
    """The noise-redraw settings to fit with: both under "choose" (where the modality has noise redraws)."""
    if not config.augment or config.modality not in NOISY_MODALITIES:
        return [False]
    return {"choose": [True, False], "on": [True], "off": [False]}[config.noise_redraws]


def run_method(method: str, pretrained, config: FinetuneConfig, train: Rows, val: Rows, test: Rows,
               seed: int, frozen: dict[str, np.ndarray] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Test predictions of one method fitted on `train` (the label subset), and what it chose."""
    if method == "probe":
        start = time.perf_counter()  # the frozen embeddings are computed once beforehand, not counted here
        probe = probes.fit_mlp(frozen["train"], train.y, frozen["val"], val.y, seed=seed, hidden=config.hidden,
                               dropout=config.dropout)
        return probe.predict(frozen["test"]), {"chosen": probe.chosen,
                                               "seconds": round(time.perf_counter() - start, 2)}
    fits = []
    for noise in noise_options(config):
        net = build_regressor(pretrained, config.modality, scratch=method == "scratch", seed=seed,
                              hidden=config.hidden, dropout=config.dropout)
        settings = _settings(config, method, f"{method} n={len(train)} seed={seed}", noise)
        fits.append((noise, net, settings, training.fit(net, train, val, settings, seed)))
    noise, net, settings, info = min(fits, key=lambda fit: fit[3]["val_mse"])  # chosen on val, never on test
    chosen = {"noise_redraws_used": noise}
    if len(fits) > 1:
        chosen["val_mse_by_noise_redraws"] = {"on" if n else "off": fit_info["val_mse"] for n, _, _, fit_info in fits}
        chosen["seconds_all_fits"] = round(sum(fit_info["seconds"] for *_, fit_info in fits), 2)
    return training.predict(net, test, config.eval_batch_size), {
        "lr_encoder": settings.lr_encoder, "lr_head": settings.lr_head, **info, **chosen}


def _frozen(pretrained, config: FinetuneConfig, splits: dict[str, Rows], used: np.ndarray) -> dict[str, Any]:
    """Frozen embeddings of the train rows some label subset uses (`used`, sorted) and of all val and test
    rows: each object is embedded once, whichever targets and subsets it serves."""
    def embed(rows: Rows) -> np.ndarray:
        return frozen_embeddings(pretrained, config.modality, rows, config.eval_batch_size)

    return {"used": used, "train": embed(splits["train"].take(used)), "val": embed(splits["val"]),
            "test": embed(splits["test"])}


def compute(config: FinetuneConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json content, and for plots and label_subsets.json: per target, the test ids, truth and
    method -> predictions (largest fraction, seed 0), and the train ids of every (fraction, seed)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    pretrained = load_pretrained(config)
    check_inputs(config.data, config.modality, config.targets, pretrained.spec.get(config.modality))
    # Every split is read once for all targets; each target then keeps the rows where it is finite.
    splits = {name: load_split(config.data, config.modality, config.targets, name, config.num_workers,
                               config.eval_batch_size) for name in ("train", "val", "test")}
    labelled = {(target, name): splits[name].labelled(target) for target in config.targets for name in splits}
    for (target, name), index in labelled.items():
        require_rows(len(index), config.data, config.modality, target, name)
    redshift_like = {target: is_redshift_like(target) if config.redshift_like is None else config.redshift_like
                     for target in config.targets}
    fractions = sorted(set(config.label_fractions))
    # label subsets index each target's own train rows: nested in the fraction and seeded, per target
    subsets = {(target, f, s): label_subset(len(labelled[target, "train"]), f, s)
               for target in config.targets for f in fractions for s in range(config.seeds)}
    frozen_all = None
    if "probe" in config.methods:
        used = np.unique(np.concatenate([labelled[t, "train"][subset] for (t, _, _), subset in subsets.items()]))
        frozen_all = _frozen(pretrained, config, splits, used)
    records, shown = [], {}
    for target in config.targets:
        train, val, test = (splits[name].for_target(target) for name in ("train", "val", "test"))
        frozen_target = None
        if frozen_all is not None:
            frozen_target = {name: frozen_all[name][labelled[target, name]] for name in ("val", "test")}
        for fraction in fractions:
            for seed in range(config.seeds):
                subset = subsets[(target, fraction, seed)]
                rows = train.take(subset)
                frozen = None
                if frozen_target is not None:
                    at = np.searchsorted(frozen_all["used"], labelled[target, "train"][subset])
                    frozen = {"train": frozen_all["train"][at], **frozen_target}
                for method in config.methods:
                    predicted, info = run_method(method, pretrained, config, rows, val, test, seed, frozen)
                    record = {"target": target, "method": method, "modality": config.modality,
                              "label_fraction": fraction, "seed": seed, "n_train": len(rows), "n_val": len(val),
                              "n_test": len(test), **info, **point_metrics(test.y, predicted, redshift_like[target])}
                    records.append(record)
                    if config.progress:
                        print(f"{target} {method:9s} f={fraction:<6g} seed={seed} n_train={len(rows):<6d} "
                              f"test R2 {record['r2']:.4f}  NMAD {record['nmad']:.4f}", file=sys.stderr)
                    if fraction == fractions[-1] and seed == 0:
                        shown.setdefault(target, {"ids": list(test.ids), "y": test.y, "predictions": {}})
                        shown[target]["predictions"][method] = predicted
    settings = {**asdict(config), "redshift_like": redshift_like, "label_fractions": fractions}
    data = {"n_train_labelled": {t: len(labelled[t, "train"]) for t in config.targets},
            "n_val": {t: len(labelled[t, "val"]) for t in config.targets},
            "n_test": {t: len(labelled[t, "test"]) for t in config.targets}}
    subset_ids = {target: {f"{f:g}": {str(s): [splits["train"].ids[i] for i in labelled[target, "train"][
        subsets[(target, f, s)]]] for s in range(config.seeds)} for f in fractions} for target in config.targets}
    metrics = {"config": settings, "data": data, "records": records, "summary": summarise(records)}
    return metrics, {"targets": shown, "subset_ids": subset_ids}


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return summarise_over_seeds(records, ("target", "method", "label_fraction"), SUMMARY_KEYS)


def write_predictions(path: Path, config: FinetuneConfig, shown: dict[str, Any], fraction: float) -> None:
    """predictions.parquet, the columns of `astrofm regress`'s (without intervals: these are point fits)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for target, one in shown.items():
        n = len(one["ids"])
        parts += [pa.table({"target": [target] * n, "modality": [config.modality] * n, "method": [method] * n,
                            "label_fraction": [fraction] * n, "seed": [0] * n, "id": one["ids"],
                            "split": ["test"] * n, "true": np.asarray(one["y"], np.float64),
                            "predicted": np.asarray(predicted, np.float64)})
                  for method, predicted in one["predictions"].items()]
    pq.write_table(pa.concat_tables(parts), path)


def write_report(config: FinetuneConfig) -> Path:
    """Compute everything, then write REPORT_DIR atomically (a temporary sibling renamed into place)."""
    from downstream.finetune import plots

    out = check_report_target(config.out, config.overwrite, "fine-tuning report")
    metrics, shown = compute(config)
    with staged_folder(out) as staging:
        write_metrics(staging, metrics)
        (staging / "label_subsets.json").write_text(json.dumps(shown["subset_ids"]) + "\n")
        largest = metrics["config"]["label_fractions"][-1]
        write_predictions(staging / "predictions.parquet", config, shown["targets"], largest)
        images = [plots.r2_vs_fraction(staging, metrics["summary"], config.modality, config.targets),
                  plots.pred_vs_true(staging, shown["targets"], largest)]
        (staging / "report.md").write_text(plots.markdown(metrics, images))
    return out
