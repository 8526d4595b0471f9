"""`embed`: a model folder run over dataset splits into an embedding store (see astrofm.embedstore.store).

The run is Lightning's predict: `devices` ranks (processes on CPU, one per accelerator otherwise) each
embed a contiguous slice of the objects and write part files; rank 0 merges them, writes
manifest.json, and renames the staging folder into place, so the output folder appears complete or
not at all. With more than one device Lightning relaunches the current command for the other ranks
(run it as the `astrofm embed` command or a script, not from an interactive session).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import astrofm
from astrofm.atomic import replace_folder
from astrofm.data.format import DatasetSpec
from astrofm.data.manifest import MANIFEST_NAME as DATASET_MANIFEST
from astrofm.data.manifest import load_manifest, sha256_file, write_json_atomic
from astrofm.embedstore.store import (
    EMBEDDINGS_FORMAT,
    EMBEDDINGS_FORMAT_VERSION,
    MANIFEST_NAME,
    parquet_name,
)


@dataclass
class EmbedConfig:
    model: str  # model folder (config.json + model.safetensors)
    data: str  # dataset folder (manifest.json + shards/)
    out: str  # embedding folder to write
    splits: list[str] | None = None  # splits to embed, in this order; None: every split of the dataset
    batch_size: int = 256  # objects per forward pass on each rank
    devices: int = 1  # ranks: processes on CPU, accelerators otherwise; >1 runs distributed predict
    accelerator: str = "cpu"  # "cpu", "gpu" or "auto" (Lightning's choice)
    num_workers: int = 0  # loader worker processes per rank
    overwrite: bool = False  # replace an existing embedding folder
    progress: bool = True  # Lightning's progress bar
    flush_rows: int = 65536  # rows a rank buffers per modality before writing a part file

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.devices < 1:
            raise ValueError(f"devices must be at least 1, got {self.devices}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {self.num_workers}")


@dataclass
class EmbedResult:
    path: Path | None  # the embedding folder (None on ranks other than 0)
    manifest: dict[str, Any] = field(default_factory=dict)
    rank: int = 0


def _check_output(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise FileExistsError(f"{out}: a non-empty folder that is not an embedding folder; not replacing it")
    if not overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite to replace it)")


def _check_spec(model, dataset_spec: DatasetSpec, modalities: list[str], data: str) -> None:
    """The model's encoders were built for a grid, bands and stamp size: the dataset must match."""
    if not model.spec:
        return
    model_spec = DatasetSpec.from_dict(model.spec)
    for m in modalities:
        ours, theirs = getattr(model_spec, m), getattr(dataset_spec, m)
        expected, found = model_spec.expected_shape(m), dataset_spec.expected_shape(m)
        bands_differ = m != "spectrum" and list(ours.bands) != list(theirs.bands)
        if expected != found or bands_differ:
            detail = f"bands {theirs.bands} vs {ours.bands}" if bands_differ else f"shape {found} vs {expected}"
            raise ValueError(f"{data}: its {m} spec does not match the model's ({detail}); embed a dataset "
                             f"made with the model's spec")


def _fingerprints(config: EmbedConfig, model, dataset_manifest) -> dict[str, Any]:
    model_dir, data_dir = Path(config.model).resolve(), Path(config.data).resolve()
    from astrofm.models.io import CONFIG_NAME, WEIGHTS_NAME

    return {
        "model": {"path": str(model_dir), "sha256": sha256_file(model_dir / WEIGHTS_NAME),
                  "config_sha256": sha256_file(model_dir / CONFIG_NAME), "embed_dim": model.embed_dim,
                  "modalities": list(model.modalities)},
        "dataset": {"path": str(data_dir), "name": dataset_manifest.name,
                    "manifest_sha256": sha256_file(data_dir / DATASET_MANIFEST)},
    }


def embed(config: EmbedConfig) -> EmbedResult:
    """Embed `config.splits` of `config.data` with `config.model` into `config.out`."""
    import lightning.pytorch as pl

    from astrofm.embedstore.predict import EmbedModule, EmbedStream, PartWriter
    from astrofm.models.io import load_model

    out = Path(config.out)
    _check_output(out, config.overwrite)
    model = load_model(config.model)
    dataset_manifest = load_manifest(config.data)
    splits = config.splits or [s for s in dataset_manifest.splits if dataset_manifest.count(s)]
    unknown = [s for s in splits if s not in dataset_manifest.splits]
    if unknown:
        raise ValueError(f"{config.data}: no split {unknown[0]!r} (it has {sorted(dataset_manifest.splits)})")
    modalities = [m for m in model.modalities if m in dataset_manifest.spec.modalities]
    if not modalities:
        raise ValueError(f"the model embeds {model.modalities} but {config.data} has only "
                         f"{dataset_manifest.spec.modalities}")
    _check_spec(model, dataset_manifest.spec, modalities, config.data)
    total = sum(dataset_manifest.count(s) for s in splits)
    if total == 0:
        raise ValueError(f"{config.data}: split(s) {splits} hold no objects; nothing to embed")
    if total < config.devices:
        raise ValueError(f"{total} objects cannot be shared among {config.devices} devices; use fewer")

    base = {"format": EMBEDDINGS_FORMAT, "format_version": EMBEDDINGS_FORMAT_VERSION,
            "astrofm_version": astrofm.__version__, **_fingerprints(config, model, dataset_manifest),
            "dimension": model.embed_dim, "splits": list(splits), "devices": config.devices,
            "batch_size": config.batch_size}
    label_names = list(dataset_manifest.labels)

    def finish(staging: Path, tables: dict) -> dict[str, Any]:
        manifest = {**base, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "modalities": {}}
        for modality, table in tables.items():
            counts = {s: 0 for s in splits}
            for split in table.column("split").to_pylist():
                counts[split] += 1
            manifest["modalities"][modality] = {
                "file": parquet_name(modality), "count": len(table), "counts": counts,
                "columns": table.column_names,
                "sha256": sha256_file(staging / parquet_name(modality))}
        write_json_atomic(staging / MANIFEST_NAME, manifest)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the store is meant to be shared
        replace_folder(staging, out)
        return manifest

    stream = EmbedStream(config.data, splits, modalities, config.batch_size)
    writer = PartWriter(out, modalities, model.embed_dim, label_names, finish, config.flush_rows)
    trainer = _trainer(pl, config, writer)
    try:
        with warnings.catch_warnings():
            for message in ("does not have many workers", "Couldn't infer the batch indices",
                            "Your `IterableDataset` has `__len__`", ".*LeafSpec.* is deprecated"):
                warnings.filterwarnings("ignore", message=f".*{message}")
            trainer.predict(EmbedModule(model, stream, config.num_workers), return_predictions=False)
    except BaseException:
        if writer.staging is not None and trainer.global_rank == 0:
            shutil.rmtree(writer.staging, ignore_errors=True)
        raise
    if trainer.global_rank != 0:
        return EmbedResult(None, {}, trainer.global_rank)
    return EmbedResult(out, writer.result, 0)


def _trainer(pl, config: EmbedConfig, writer):
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available: ..." chatter
    strategy = "auto" if config.devices == 1 else "ddp"
    return pl.Trainer(accelerator=config.accelerator, devices=config.devices, strategy=strategy,
                      callbacks=[writer], logger=False, enable_checkpointing=False,
                      enable_model_summary=False, enable_progress_bar=config.progress,
                      default_root_dir=str(Path(config.out).parent))
