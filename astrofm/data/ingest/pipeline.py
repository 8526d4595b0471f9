"""Ingest survey files into a dataset: check every input, join by object id, write atomically.

Two passes keep memory flat for any number of files: the first reads and checks every file (and
every catalogue row) and records which object each belongs to, so bad input stops the run before a
single byte is written; the second reads the files again and writes the joined objects, in id order.
The catalogue is small and stays in memory between the passes. Each input file's sha256 is taken in
the first pass and checked in the second, so a file that changes in between stops the run too.

Joining: a spectrum's and a cut-out's object id is the file stem (`spec-0266-51602-0001` for
`spec-0266-51602-0001.fits`); a catalogue row's is its id column. An object may have any subset of
the modalities; the dataset has the modalities whose inputs were given.

With `skip_bad`, a bad input rejects its whole object (all its modalities, so no object goes in
with less than its inputs offered); the rest are written, and the problems are listed in
`rejects.json` inside the dataset folder (written into the staging folder before the manifest, so it
appears atomically with the dataset). Problems of a whole catalogue (unreadable, a missing column)
stop the run even then: skipping them would silently drop a modality.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrofm import __version__
from astrofm.data.format import (
    DatasetSpec,
    DataValidationError,
    ImageSpec,
    PhotometrySpec,
    Sample,
    SpectrumSpec,
    sample_key,
)
from astrofm.data.ingest.catalog import read_catalog
from astrofm.data.ingest.fitsfile import COMPRESSION_SUFFIXES, FITS_SUFFIXES, read_source
from astrofm.data.ingest.images import read_image
from astrofm.data.ingest.sdss import read_sdss_spectrum
from astrofm.data.manifest import Manifest, sha256_file, write_json_atomic
from astrofm.data.writer import DatasetWriter, WriterConfig

REJECTS_NAME = "rejects.json"
DEFAULT_FILTERS = dict(zip(PhotometrySpec().bands, PhotometrySpec().filters, strict=True))


@dataclass
class IngestConfig:
    """What `astrofm data ingest` does; the CLI flags map one to one onto these fields."""

    out: str | Path  # the dataset folder to create
    spectra: list[str | Path] = field(default_factory=list)  # SDSS spec-*.fits files, or folders of them
    images: list[str | Path] = field(default_factory=list)  # FITS cut-outs, or folders of them
    catalog: str | Path | None = None  # CSV or Parquet photometry
    id_column: str = "id"  # the catalogue's object id column
    bands: list[str] | None = None  # photometry bands; None: PhotometrySpec's g r z W1 W2
    filters: list[str] | None = None  # speclite filter per band; None: decam2014-*/wise2010-* for known bands
    image_bands: list[str] = field(default_factory=lambda: list(ImageSpec().bands))
    image_size: int = ImageSpec().size  # stamp side in pixels
    pixel_scale: float = ImageSpec().pixel_scale  # arcsec per pixel the cut-outs must have
    spectrum: SpectrumSpec = field(default_factory=SpectrumSpec)  # the grid spectra are resampled onto
    survey: str | None = None  # meta "survey" of every object; None: "sdss" with a spectrum, else "unknown"
    name: str | None = None  # dataset name; None: the folder name
    skip_bad: bool = False  # reject bad inputs (see rejects.json) instead of stopping
    overwrite: bool = False  # replace an existing dataset folder once the new one is complete
    shard_size: int = 1000  # objects per shard

    def __post_init__(self):
        self.out = Path(self.out)
        self.spectra = [Path(p) for p in self.spectra]
        self.images = [Path(p) for p in self.images]
        self.catalog = Path(self.catalog) if self.catalog is not None else None
        if not (self.spectra or self.images or self.catalog):
            raise ValueError("nothing to ingest: give spectra, images or a catalogue")
        if self.shard_size < 1:
            raise ValueError(f"shard size must be at least 1, got {self.shard_size}")
        if self.image_size < 1:
            raise ValueError(f"image size must be at least 1, got {self.image_size}")
        if not self.image_bands:
            raise ValueError("image bands must not be empty")

    def dataset_spec(self) -> DatasetSpec:
        """The spec of the dataset: only the modalities whose inputs are given."""
        return DatasetSpec(
            spectrum=self.spectrum if self.spectra else None,
            photometry=self.photometry_spec() if self.catalog else None,
            image=ImageSpec(bands=list(self.image_bands), pixel_scale=self.pixel_scale, size=self.image_size)
            if self.images else None,
        )

    def photometry_spec(self) -> PhotometrySpec:
        bands, filters = self.bands, self.filters
        if bands is None and filters is None:
            return PhotometrySpec()
        if bands is None:  # filters alone: the band is the name after the group, `decam2014-g` -> `g`
            bands = [name.split("-", 1)[-1] for name in filters]
        if filters is None:
            unknown = [band for band in bands if band not in DEFAULT_FILTERS]
            if unknown:
                raise ValueError(f"no default filter curve for band(s) {unknown}; name one speclite filter "
                                 f"per band with --filters (known: {sorted(DEFAULT_FILTERS)})")
            filters = [DEFAULT_FILTERS[band] for band in bands]
        if len(bands) != len(filters):
            raise ValueError(f"{len(bands)} bands {bands} but {len(filters)} filters {filters}")
        _check_filters(filters)
        return PhotometrySpec(bands=list(bands), filters=list(filters))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("out", "catalog"):
            data[key] = None if data[key] is None else str(data[key])
        for key in ("spectra", "images"):
            data[key] = [str(p) for p in data[key]]
        return data


@dataclass
class Reject:
    """One rejected input: where, which object, which field, and why."""

    file: str | None
    object: str | None
    field: str | None
    error: str

    @classmethod
    def from_error(cls, error: DataValidationError) -> Reject:
        return cls(error.file, error.object_id, error.field, str(error))


@dataclass
class IngestResult:
    path: Path  # the dataset folder
    manifest: Manifest
    rejects: list[Reject]
    rejected_objects: list[str]  # ids of the objects left out (objects without an id are not counted)

    @property
    def count(self) -> int:
        return self.manifest.count()


def _check_filters(filters: list[str]) -> None:
    import speclite.filters  # here: only a photometry ingest pays its import

    for name in filters:
        try:
            speclite.filters.load_filter(name)
        except (ValueError, OSError) as error:
            raise ValueError(f"unknown speclite filter {name!r} ({error})") from error


def _expand(paths: list[Path], what: str) -> list[Path]:
    """Files as given; a folder stands for the FITS files in it (sorted), so that a large survey
    does not need a command line as long as its file list."""
    suffixes = tuple(f + c for f in FITS_SUFFIXES for c in ("", *COMPRESSION_SUFFIXES))
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
            if not found:
                raise FileNotFoundError(f"{path}: folder given for {what} holds no FITS files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such {what} file")
    return files


@dataclass
class _Entry:
    file: Path
    where: str  # the file, or the catalogue row, for messages
    payload: Any  # sha256 of a FITS file, or the photometry arrays of a catalogue row


class _Inputs:
    """Pass one's findings: modality -> object id -> where its data is, plus rejects."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.entries: dict[str, dict[str, _Entry]] = {"spectrum": {}, "image": {}, "photometry": {}}
        self.rejects: list[Reject] = []
        self.bad_ids: set[str] = set()
        self.files: list[dict[str, Any]] = []  # provenance: every input file with its sha256

    def problem(self, error: DataValidationError) -> None:
        """Stop on `error`, or with skip_bad note it and leave its object out."""
        if not self.skip_bad:
            raise error
        self.rejects.append(Reject.from_error(error))
        if error.object_id:
            self.bad_ids.add(error.object_id)

    def add(self, modality: str, object_id: str, entry: _Entry) -> None:
        first = self.entries[modality].get(object_id)
        if first is None:
            self.entries[modality][object_id] = entry
            return
        if self.skip_bad and object_id not in self.bad_ids:  # the first one is as suspect as this one
            self.problem(DataValidationError(f"duplicate id: {modality} also in {entry.where}",
                                             file=str(first.file), object_id=object_id, field="id"))
        self.problem(DataValidationError(f"duplicate id: {modality} also in {first.where}",
                                         file=str(entry.file), object_id=object_id, field="id"))

    def objects(self) -> dict[str, dict[str, _Entry]]:
        """object id -> modality -> entry, for every object not rejected; ids checked for tar keys."""
        joined: dict[str, dict[str, _Entry]] = {}
        for modality, entries in self.entries.items():
            for object_id, entry in entries.items():
                joined.setdefault(object_id, {})[modality] = entry
        keys: dict[str, str] = {}
        for object_id in sorted(joined):
            key = sample_key(object_id)
            if key in keys and keys[key] not in self.bad_ids:
                entry = next(iter(joined[object_id].values()))
                self.problem(DataValidationError(
                    f"id maps to the same shard key {key!r} as {keys[key]!r} (characters outside "
                    f"A-Z a-z 0-9 _ - become _)", file=str(entry.file), object_id=object_id, field="id"))
                self.bad_ids.add(keys[key])
            keys.setdefault(key, object_id)
        return {oid: entries for oid, entries in sorted(joined.items()) if oid not in self.bad_ids}


def _progress(items, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=not enabled, leave=False)


def _check_fits_files(files: list[Path], modality: str, read, spec, inputs: _Inputs, progress: bool) -> None:
    for path in _progress(files, f"checking {modality} files", "file", progress):
        sha256 = None
        try:
            source = read_source(path)
            sha256 = source.sha256
            read(source, spec)
            inputs.add(modality, source.object_id, _Entry(path, str(path), sha256))
        except DataValidationError as error:
            inputs.problem(error)
        finally:
            inputs.files.append({"path": str(path.resolve()), "sha256": sha256, "modality": modality})


def _check_catalog(path: Path, spec: PhotometrySpec, id_column: str, inputs: _Inputs) -> None:
    table = read_catalog(path, spec.bands, id_column)  # whole-file problems stop the run
    inputs.files.append({"path": str(path.resolve()), "sha256": sha256_file(path), "modality": "photometry"})
    for index in range(len(table)):
        try:
            object_id, photometry = table.row(index)
            inputs.add("photometry", object_id, _Entry(path, f"row {index + 1} of {path}", photometry))
        except DataValidationError as error:
            inputs.problem(error)


def _build_sample(object_id: str, entries: dict[str, _Entry], spec: DatasetSpec, survey: str | None) -> Sample:
    """Pass two: read the object's files again (the sha256 must not have changed) and join them."""
    sample = Sample(id=object_id, meta={"survey": survey or ("sdss" if "spectrum" in entries else "unknown"),
                                        "domain": "observed"})
    for modality, entry in entries.items():
        if modality == "photometry":
            sample.photometry = entry.payload
            continue
        source = read_source(entry.file)
        if source.sha256 != entry.payload:
            raise source.error("file changed while it was being ingested", "file")
        if modality == "spectrum":
            record = read_sdss_spectrum(source, spec.spectrum)
            sample.spectrum = record.spectrum
            sample.labels.update(record.labels)
        else:
            sample.image = read_image(source, spec.image).image
    return sample


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder or pass --overwrite")


def ingest(config: IngestConfig, progress: bool = True) -> IngestResult:
    """Check every input, then write the dataset at `config.out`; raises DataValidationError (naming
    file, object and field) on bad input unless `config.skip_bad`, and then writes nothing."""
    spec = config.dataset_spec()
    spectra, images = _expand(config.spectra, "spectrum"), _expand(config.images, "image")
    if config.catalog is not None and not config.catalog.is_file():
        raise FileNotFoundError(f"{config.catalog}: no such catalogue file")
    _check_destination(config.out, config.overwrite)

    inputs = _Inputs(config.skip_bad)
    if config.catalog is not None:  # first: it is quick, and a bad column stops the run even with skip_bad
        _check_catalog(config.catalog, spec.photometry, config.id_column, inputs)
    _check_fits_files(spectra, "spectrum", read_sdss_spectrum, spec.spectrum, inputs, progress)
    _check_fits_files(images, "image", read_image, spec.image, inputs, progress)
    objects = inputs.objects()
    if not objects:
        detail = f"; first problem: {inputs.rejects[0].error}" if inputs.rejects else ""
        raise DataValidationError(f"no object left to ingest ({len(inputs.rejects)} problems){detail}")

    provenance = {
        "tool": "astrofm data ingest",
        "astrofm_version": __version__,
        "config": config.to_dict(),
        "source_files": inputs.files,
        "rejected_objects": len(inputs.bad_ids),
    }
    writer_config = WriterConfig(shard_size=config.shard_size, overwrite=config.overwrite)
    with DatasetWriter(config.out, spec, name=config.name, provenance=provenance, config=writer_config) as writer:
        for object_id, entries in _progress(objects.items(), "writing", "object", progress):
            sample = _build_sample(object_id, entries, spec, config.survey)
            writer.add(sample, source=str(next(iter(entries.values())).file))
        if config.skip_bad:
            write_json_atomic(writer.staging / REJECTS_NAME, [dataclasses.asdict(r) for r in inputs.rejects])
    return IngestResult(config.out, writer.manifest, inputs.rejects, sorted(inputs.bad_ids))
