"""Dataset format v1: the modality specs, one object (`Sample`), its tar members, and split assignment.

A dataset is a folder holding `manifest.json` and `shards/{split}-NNNNNN.tar`. Each tar is a plain
webdataset shard: per object a `{key}.json` (id, labels, meta) and one `{key}.{modality}.npz` per
modality the object has. A modality an object lacks is absent from its tar, never zero-filled.

This module has no torch import, so the light commands (`astrofm data ...`) stay fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FORMAT_NAME = "astrofm-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
MODALITIES = ("spectrum", "photometry", "image")
DEFAULT_SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

# The arrays each modality member holds; the first of each is required.
MODALITY_ARRAYS = {
    "spectrum": ("flux", "ivar"),
    "photometry": ("flux", "flux_err"),
    "image": ("flux", "ivar"),
}
REQUIRED_ARRAYS = {"spectrum": ("flux", "ivar"), "photometry": ("flux", "flux_err"), "image": ("flux",)}
# The rest may be missing (an image stored without ivar); the manifest counts who holds them, "image.ivar".
OPTIONAL_ARRAYS = {m: tuple(a for a in arrays if a not in REQUIRED_ARRAYS[m]) for m, arrays in MODALITY_ARRAYS.items()}

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class DataValidationError(ValueError):
    """Bad input, with the file, object and field it concerns in the message."""

    def __init__(self, message: str, *, file: str | None = None, object_id: str | None = None,
                 field: str | None = None):
        self.file, self.object_id, self.field = file, object_id, field
        where = ", ".join(f"{name} {value!r}" for name, value in
                          (("file", file), ("object", object_id), ("field", field)) if value)
        super().__init__(f"{where}: {message}" if where else message)


# ---------------------------------------------------------------------------------------------
# Modality specs: what every object of a dataset shares (grid, bands, pixel scale).
# ---------------------------------------------------------------------------------------------


@dataclass
class SpectrumSpec:
    wave_min: float = 3600.0  # Angstrom, centre of the first pixel (DESI covers 3600-9824 A)
    wave_max: float = 9800.0  # Angstrom, centre of the last pixel
    wave_step: float = 2.0  # Angstrom per pixel; DESI's native 0.8 A is finer, 2 A keeps CPU runs light
    flux_unit: str = "1e-17 erg / (s cm2 Angstrom)"

    @property
    def n_pixels(self) -> int:
        return int(round((self.wave_max - self.wave_min) / self.wave_step)) + 1

    def wavelength(self) -> np.ndarray:
        """Pixel centres in Angstrom, vacuum."""
        return self.wave_min + self.wave_step * np.arange(self.n_pixels, dtype=np.float64)


@dataclass
class PhotometrySpec:
    bands: list[str] = field(default_factory=lambda: ["g", "r", "z", "W1", "W2"])
    # The speclite filter curve each band comes from (same order as `bands`).
    filters: list[str] = field(default_factory=lambda: [
        "decam2014-g", "decam2014-r", "decam2014-z", "wise2010-W1", "wise2010-W2"])
    flux_unit: str = "nanomaggy"  # AB: 1 nanomaggy is magnitude 22.5

    def __post_init__(self):
        if len(self.bands) != len(self.filters):
            raise ValueError(f"photometry spec: {len(self.bands)} bands but {len(self.filters)} filters")


@dataclass
class ImageSpec:
    bands: list[str] = field(default_factory=lambda: ["g", "r", "z"])
    pixel_scale: float = 0.262  # arcsec per pixel (Legacy Surveys)
    size: int = 32  # stamp side in pixels
    flux_unit: str = "nanomaggy / pixel"


@dataclass
class DatasetSpec:
    """Which modalities a dataset has, and their specs. A modality set to None is absent."""

    spectrum: SpectrumSpec | None = field(default_factory=SpectrumSpec)
    photometry: PhotometrySpec | None = field(default_factory=PhotometrySpec)
    image: ImageSpec | None = field(default_factory=ImageSpec)

    @property
    def modalities(self) -> list[str]:
        return [name for name in MODALITIES if getattr(self, name) is not None]

    def expected_shape(self, modality: str) -> tuple[int, ...]:
        if modality == "spectrum":
            return (self.spectrum.n_pixels,)
        if modality == "photometry":
            return (len(self.photometry.bands),)
        return (len(self.image.bands), self.image.size, self.image.size)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.modalities:
            out[name] = asdict(getattr(self, name))
            if name == "spectrum":
                out[name]["n_pixels"] = self.spectrum.n_pixels
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        unknown = set(data) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities in spec: {sorted(unknown)}")
        spectrum = dict(data["spectrum"]) if "spectrum" in data else None
        if spectrum is not None:
            spectrum.pop("n_pixels", None)
        return cls(
            spectrum=SpectrumSpec(**spectrum) if spectrum is not None else None,
            photometry=PhotometrySpec(**data["photometry"]) if "photometry" in data else None,
            image=ImageSpec(**data["image"]) if "image" in data else None,
        )


# ---------------------------------------------------------------------------------------------
# One object.
# ---------------------------------------------------------------------------------------------


@dataclass
class Sample:
    id: str
    labels: dict[str, Any] = field(default_factory=dict)  # physical truth or catalogue values
    meta: dict[str, Any] = field(default_factory=dict)  # survey, suite, domain (observed|simulated)
    spectrum: dict[str, np.ndarray] | None = None  # flux (L,), ivar (L,)
    photometry: dict[str, np.ndarray] | None = None  # flux (B,), flux_err (B,)
    image: dict[str, np.ndarray] | None = None  # flux (C, H, W), optional ivar (C, H, W)

    @property
    def modalities(self) -> list[str]:
        return [name for name in MODALITIES if getattr(self, name) is not None]


def sample_key(object_id: str) -> str:
    """The tar key of an object: its id with every character webdataset would split on replaced."""
    key = _KEY_SAFE.sub("_", object_id)
    if not key:
        raise DataValidationError("empty object id", field="id")
    return key


def validate_sample(sample: Sample, spec: DatasetSpec, *, source: str | None = None) -> None:
    """Raise DataValidationError naming file, object and field unless `sample` fits `spec`."""

    def fail(message: str, field_name: str) -> None:
        raise DataValidationError(message, file=source, object_id=sample.id, field=field_name)

    if not isinstance(sample.id, str) or not sample.id.strip():
        fail("object id must be a non-empty string", "id")
    if not sample.modalities:
        fail("object has no modality", "modalities")
    for name, value in sample.labels.items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"label is {value}", f"labels.{name}")
    for modality in sample.modalities:
        if getattr(spec, modality) is None:
            fail(f"dataset has no {modality} modality", modality)
        arrays = getattr(sample, modality)
        expected = spec.expected_shape(modality)
        for array_name in REQUIRED_ARRAYS[modality]:
            if array_name not in arrays:
                fail("missing array", f"{modality}.{array_name}")
        for array_name, array in arrays.items():
            where = f"{modality}.{array_name}"
            if array_name not in MODALITY_ARRAYS[modality]:
                fail(f"unknown array (expected {MODALITY_ARRAYS[modality]})", where)
            array = np.asarray(array)
            if array.shape != expected:
                fail(f"shape {array.shape}, expected {expected}", where)
            if not np.all(np.isfinite(array)):
                fail(f"{int(np.sum(~np.isfinite(array)))} non-finite values (NaN or inf)", where)
            if array_name in ("ivar", "flux_err") and np.any(array < 0):
                fail("negative values", where)


# ---------------------------------------------------------------------------------------------
# Tar members: bytes in, bytes out.
# ---------------------------------------------------------------------------------------------


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()})
    return buffer.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode_sample(sample: Sample) -> dict[str, bytes | str]:
    """The webdataset dict of one object: `__key__` plus one bytes value per tar member suffix."""
    header = {"id": sample.id, "labels": sample.labels, "meta": sample.meta}
    members: dict[str, bytes | str] = {
        "__key__": sample_key(sample.id),
        "json": json.dumps(header, sort_keys=True, default=_json_default).encode(),
    }
    for modality in sample.modalities:
        members[f"{modality}.npz"] = _npz_bytes(getattr(sample, modality))
    return members


def decode_sample(members: dict[str, Any], *, source: str | None = None) -> Sample:
    """Inverse of encode_sample, for a dict of raw member bytes keyed by suffix."""
    if "json" not in members:
        raise DataValidationError("tar sample has no .json member", file=source,
                                  object_id=members.get("__key__"), field="json")
    header = json.loads(members["json"])
    sample = Sample(id=header["id"], labels=header.get("labels", {}), meta=header.get("meta", {}))
    for modality in MODALITIES:
        raw = members.get(f"{modality}.npz")
        if raw is not None:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                setattr(sample, modality, {name: npz[name] for name in npz.files})
    return sample


# ---------------------------------------------------------------------------------------------
# Splits: a pure function of the object id, so every tool agrees without a lookup table.
# ---------------------------------------------------------------------------------------------


def assign_split(object_id: str, fractions: dict[str, float] | None = None) -> str:
    fractions = fractions or DEFAULT_SPLIT_FRACTIONS
    digest = hashlib.sha256(object_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    edge = 0.0
    for split in SPLITS:
        edge += fractions.get(split, 0.0)
        if u < edge:
            return split
    return SPLITS[-1]


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"
