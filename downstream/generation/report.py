"""`astrofm generate`: cross-modal generation from frozen embeddings (Buck & Schwarz's XP -> RVS, here any
source modality -> spectrum or photometry), against a kNN and a raw-source baseline.

Protocol: objects having both the source and the target modality; every generator and codec is fitted
on the train split, early-stopped or tuned (k) on the val split, and measured on the test split only.

Output: REPORT_DIR/metrics.json {"config", "codec", "records": one per method (decoder, knn, raw,
train_mean) with its seed, chi2 and MSE summaries and consistency check, "consistency_ceiling": the
check on the true test targets}, generated_vs_true.png, chi2_distribution.png, consistency.png
(spectrum target) or flux_pred_vs_true.png (photometry target), and report.md.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.atomic import staged_folder
from astrofm.reports import check_report_target, write_metrics
from downstream.generation import methods
from downstream.generation.codecs import RawFeatures, make_codec
from downstream.generation.data import Pairs, check_modalities, load_splits
from downstream.generation.scores import RedshiftReader, accuracy, colour_errors


@dataclass
class GenerateConfig:
    model: str  # model folder (astrofm pretrain)
    data: str  # dataset folder
    source: str  # modality whose frozen embedding (or raw arrays, for the baseline) is the input
    target: str  # spectrum or photometry
    out: str  # report folder to write
    methods: list[str] = field(default_factory=lambda: list(methods.METHODS))
    k_grid: list[int] = field(default_factory=lambda: [1, 4, 16, 64])  # kNN baseline, chosen on val MSE
    n_components: int = 64  # PCA components of a spectrum code (target, or a spectrum source's raw features)
    hidden: int = 256  # MLP width of the decoder and the raw baseline
    epochs: int = 100  # at most; early stopping on val loss
    patience: int = 10  # epochs without val improvement before stopping
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0  # MLP initialisation and batch order, PCA subset
    label: str = "redshift"  # the label read back from generated spectra
    consistency: bool = True
    consistency_k: int = 64  # neighbours of the label regressor
    max_train: int | None = None  # use at most this many train objects (a seeded subset); None: all
    n_examples: int = 4  # test objects in the generated-vs-true figure
    embed_batch_size: int = 256
    threads: int | None = None  # torch threads; None: torch's default
    overwrite: bool = False
    progress: bool = True


def _log(config: GenerateConfig, message: str) -> None:
    if config.progress:
        print(f"[generate] {message}", file=sys.stderr, flush=True)


def _check(config: GenerateConfig) -> None:
    unknown = [m for m in config.methods if m not in methods.METHODS]
    if unknown or not config.methods:
        raise ValueError(f"unknown method(s) {unknown or config.methods}; choose from {list(methods.METHODS)}")
    if not config.k_grid or min(config.k_grid) < 1:
        raise ValueError(f"--k-grid {config.k_grid}: need positive neighbour counts")
    if config.epochs < 1 or config.n_components < 1 or config.hidden < 1:
        raise ValueError("--epochs, --components and --hidden must be positive")


def fit_generators(train: Pairs, val: Pairs, codec, config: GenerateConfig, statistics: dict) -> dict:
    """method -> Generator, from the train and val splits only (test is not an argument)."""
    fitted = {}
    for name in config.methods:
        _log(config, f"fitting {name}")
        if name == "decoder":
            fitted[name] = methods.fit_decoder(train, val, codec, config)
        elif name == "knn":
            fitted[name] = methods.fit_knn(train, val, codec, config)
        elif name == "raw":
            raw = RawFeatures(config.source, statistics[config.source], config.n_components, config.seed)
            fitted[name] = methods.fit_raw(train, val, codec, raw, config)
        else:
            fitted[name] = methods.fit_train_mean(train, val, codec, config)
    return fitted


def evaluate(splits: dict[str, Pairs], config: GenerateConfig, statistics: dict, spec: dict,
             model=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json content, arrays for the plots) from loaded splits; `model` embeds generated spectra."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    codec = make_codec(config.target, statistics[config.target], config.n_components, config.seed)
    codec.fit(train.target["flux"], train.target["ivar"])
    fitted = fit_generators(train, val, codec, config, statistics)
    bands = list(spec[config.target]["bands"]) if config.target == "photometry" else None
    reader = None
    if config.target == "spectrum" and config.consistency and model is not None:
        reader = RedshiftReader(model, train.target_embedding, train.label, config.label, config.consistency_k)
    truth, ivar = test.target["flux"], test.target["ivar"]
    records, shown = [], {"ids": test.ids, "truth": truth, "ivar": ivar, "generated": {}, "chi2": {},
                          "consistency": {}, "target_spec": spec[config.target]}
    for name, generator in fitted.items():
        _log(config, f"measuring {name} on {len(test)} test objects")
        generated = generator.predict(test)
        scores, chi2 = accuracy(generated, truth, ivar, codec, bands)
        record = {"method": name, "role": methods.ROLES[name], "seed": config.seed, "source": config.source,
                  "target": config.target, "n_train": len(train), "n_val": len(val), "n_test": len(test),
                  "chosen": generator.chosen, **scores}
        if reader is not None:
            check = reader.of_spectra(generated, ivar, test.label)
            shown["consistency"][name] = {"true": check.pop("true"), "predicted": check.pop("predicted")}
            record["consistency"] = check
        elif bands:
            record["consistency"] = colour_errors(generated, truth, bands)
        records.append(record)
        shown["generated"][name], shown["chi2"][name] = generated, chi2
    metrics: dict[str, Any] = {"codec": codec.describe(), "records": records}
    if config.target == "spectrum" and hasattr(codec, "basis"):
        # How much of the error the code itself costs: the true test spectra through encode -> decode.
        ceiling, _ = accuracy(codec.decode(codec.encode(truth, ivar)), truth, ivar, codec, None)
        metrics["codec"]["reconstruction_of_test_truth"] = ceiling
    if reader is not None:
        check = reader.score(test.target_embedding, test.label)
        shown["consistency"]["true spectrum"] = {"true": check.pop("true"), "predicted": check.pop("predicted")}
        metrics["consistency_ceiling"] = check
    elif config.target == "spectrum":
        metrics["consistency_ceiling"] = None
    return metrics, shown


def _subset(pairs: Pairs, limit: int | None, seed: int) -> Pairs:
    if limit is None or len(pairs) <= limit:
        return pairs
    return pairs.take(np.sort(np.random.default_rng(seed).permutation(len(pairs))[:limit]))


def compute(config: GenerateConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    import astrofm
    from astrofm.data.reader import Dataset

    _check(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    dataset = Dataset(config.data)
    model = astrofm.load_model(config.model)
    check_modalities(model, dataset, config.source, config.target, config.model)
    splits = load_splits(model, config.data, config.source, config.target, config.label,
                         config.embed_batch_size, config.progress)
    splits["train"] = _subset(splits["train"], config.max_train, config.seed)
    manifest = dataset.manifest.to_dict()
    metrics, shown = evaluate(splits, config, manifest["statistics"], manifest["modalities"], model)
    metrics = {"config": asdict(config), **metrics}
    return metrics, shown


def write_report(config: GenerateConfig) -> Path:
    """Compute everything, then write REPORT_DIR atomically (a temporary sibling renamed into place)."""
    from downstream.generation import plots

    out = check_report_target(config.out, config.overwrite, "generation report")
    metrics, shown = compute(config)
    with staged_folder(out) as staging:
        write_metrics(staging, metrics)
        images = plots.all_figures(staging, metrics, shown, config)
        (staging / "report.md").write_text(plots.markdown(metrics, images))
    return out
