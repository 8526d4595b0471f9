"""Opening input files for ingest: bytes in, checksum and FITS HDUs out, every failure a
DataValidationError that names the file, the object and the field.

A file is read into memory once per pass and hashed from the same bytes, so the sha256 recorded in
the provenance is the hash of exactly what was parsed, and a file that changes between the checking
pass and the writing pass is caught.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from astrofm.data.format import DataValidationError

FITS_SUFFIXES = (".fits", ".fit", ".fts")
COMPRESSION_SUFFIXES = (".gz", ".bz2")


def object_id_from_path(path: str | Path) -> str:
    """The object id of a spectrum or cut-out file: its name without FITS and compression suffixes,
    e.g. `spec-0266-51602-0001.fits.gz` -> `spec-0266-51602-0001`."""
    name = Path(path).name
    for suffixes in (COMPRESSION_SUFFIXES, FITS_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


@dataclass
class SourceFile:
    """The bytes of one input file, with the id they belong to and their sha256."""

    path: Path
    object_id: str
    data: bytes
    sha256: str

    def error(self, message: str, field: str) -> DataValidationError:
        return DataValidationError(message, file=str(self.path), object_id=self.object_id, field=field)


def read_source(path: str | Path, object_id: str | None = None) -> SourceFile:
    path = Path(path)
    oid = object_id or object_id_from_path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataValidationError(f"cannot read file ({error.strerror or error})", file=str(path),
                                  object_id=oid, field="file") from error
    return SourceFile(path, oid, data, hashlib.sha256(data).hexdigest())


def _decompress(source: SourceFile) -> bytes:
    # astropy recognises gzip only on real files; the bytes are decompressed here instead.
    try:
        if source.data[:2] == b"\x1f\x8b":
            return gzip.decompress(source.data)
        if source.data[:3] == b"BZh":
            return bz2.decompress(source.data)
    except (OSError, EOFError, ValueError) as error:
        raise source.error(f"corrupt compressed file ({error})", "file") from error
    return source.data


@contextmanager
def open_fits(source: SourceFile) -> Iterator[fits.HDUList]:
    """The HDUs of a FITS file held in memory. Inside the block astropy's warnings (bad header
    cards, truncated data, checksum mismatch) are errors: on survey input they mean corruption."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            # lazy_load_hdus=False parses every header now, so a damaged header fails here.
            hdul = fits.open(io.BytesIO(_decompress(source)), memmap=False, lazy_load_hdus=False,
                             checksum=True)
        except DataValidationError:
            raise
        except Exception as error:  # corrupt bytes can surface as almost any exception type
            raise source.error(f"not a readable FITS file ({_describe(error)}){_size_hint(source)}",
                               "file") from error
        try:
            yield hdul
        finally:
            hdul.close()


def _size_hint(source: SourceFile) -> str:
    # A FITS file is a whole number of 2880-byte blocks; anything else was most likely cut short.
    if source.data[:2] in (b"\x1f\x8b", b"BZ") or len(source.data) % 2880 == 0:
        return ""
    return f"; the file is {len(source.data)} bytes, not a whole number of 2880-byte FITS blocks: truncated?"


def _describe(error: BaseException) -> str:
    text = str(error).split("\n")[0].strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def find_hdu(hdul: fits.HDUList, name: str) -> int | None:
    """Index of the first HDU whose EXTNAME is `name` (case-insensitive), or None."""
    for index, hdu in enumerate(hdul):
        if hdu.name.upper() == name.upper():
            return index
    return None


def hdu_data(source: SourceFile, hdul: fits.HDUList, index: int, field: str):
    """The data of HDU `index`; reading it is where a truncated file fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        try:
            return hdul[index].data
        except Exception as error:  # truncated data raises TypeError, ValueError or OSError
            raise source.error(f"cannot read HDU data, truncated or corrupt file ({_describe(error)})"
                               f"{_size_hint(source)}", field) from error


def finite_array(source: SourceFile, values, field: str, *, ndim: int,
                 non_negative: bool = False) -> np.ndarray:
    """`values` as native float64, checked for dimensionality, NaN/inf and (optionally) sign."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise source.error(f"not numeric ({_describe(error)})", field) from error
    if array.ndim != ndim:
        raise source.error(f"has shape {array.shape}, expected {ndim} dimension(s)", field)
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise source.error(f"{int(bad.sum())} non-finite values (NaN or inf), first at index "
                           f"{first if len(first) > 1 else first[0]}", field)
    if non_negative and (array < 0).any():
        raise source.error(f"{int((array < 0).sum())} negative values", field)
    return array
