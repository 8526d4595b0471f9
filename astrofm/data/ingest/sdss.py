"""SDSS/BOSS spectra: `spec-PLATE-MJD-FIBER.fits` files as SDSS DR8 and later distribute them.

What is read (HDU and column names are matched case-insensitively):
- HDU `COADD` (normally HDU 1; an unnamed table in HDU 1 is accepted too): one row per pixel with
  columns `flux` (1e-17 erg/s/cm^2/A, the dataset's unit already), `loglam` (log10 of the vacuum
  wavelength in Angstrom) and `ivar` (1/flux^2; 0 marks a bad pixel). `and_mask` and the other
  columns are ignored: the SDSS pipeline already sets ivar 0 where a pixel should not be used.
- HDU `SPECOBJ` if present (one row): `Z` -> label `redshift`, `CLASS` -> `spectral_class`, and if
  present `Z_ERR` -> `redshift_err`, `ZWARNING` -> `zwarning`.

The spectrum is resampled flux-conservingly onto the dataset grid; pixels outside the SDSS coverage
and pixels that SDSS marked with ivar 0 get ivar 0. The object id is the file stem, e.g.
`spec-0266-51602-0001`: image cut-outs and catalogue rows join to a spectrum by that id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from astrofm.data.format import DatasetSpec, Sample, SpectrumSpec, validate_sample
from astrofm.data.ingest.fitsfile import SourceFile, find_hdu, finite_array, hdu_data, open_fits
from astrofm.data.resample import resample_spectrum

COADD_HDU = "COADD"
SPECOBJ_HDU = "SPECOBJ"
COADD_COLUMNS = ("flux", "loglam", "ivar")
# SPECOBJ column -> (label name, type, required)
SPECOBJ_LABELS = {
    "Z": ("redshift", float, True),
    "CLASS": ("spectral_class", str, True),
    "Z_ERR": ("redshift_err", float, False),
    "ZWARNING": ("zwarning", int, False),
}


@dataclass
class SpectrumRecord:
    object_id: str
    spectrum: dict[str, np.ndarray]  # flux, ivar on the dataset grid (float64)
    labels: dict[str, Any] = field(default_factory=dict)


def read_sdss_spectrum(source: SourceFile, spec: SpectrumSpec) -> SpectrumRecord:
    """Read, check and resample one SDSS spectrum file; raises DataValidationError."""
    with open_fits(source) as hdul:
        table = _coadd_table(source, hdul)
        columns = {name: _column(source, table, COADD_HDU, name) for name in COADD_COLUMNS}
        labels = _specobj_labels(source, hdul)
    flux = finite_array(source, columns["flux"], f"{COADD_HDU}.flux", ndim=1)
    loglam = finite_array(source, columns["loglam"], f"{COADD_HDU}.loglam", ndim=1)
    ivar = finite_array(source, columns["ivar"], f"{COADD_HDU}.ivar", ndim=1, non_negative=True)
    for name, array in (("flux", flux), ("ivar", ivar)):
        if array.shape != loglam.shape:
            raise source.error(f"has {array.size} pixels but loglam has {loglam.size}", f"{COADD_HDU}.{name}")
    if loglam.size < 2 or np.any(np.diff(loglam) <= 0):
        raise source.error("must be strictly increasing with at least two pixels", f"{COADD_HDU}.loglam")

    wave = 10.0**loglam  # vacuum Angstrom, like the dataset grid
    flux_out, ivar_out = resample_spectrum(wave, flux, ivar, spec.wavelength())
    if not np.any(ivar_out > 0):
        raise source.error(f"no valid pixel on the dataset grid ({spec.wave_min:g}-{spec.wave_max:g} A); "
                           f"the file covers {wave[0]:.0f}-{wave[-1]:.0f} A", f"{COADD_HDU}.loglam")
    record = SpectrumRecord(source.object_id, {"flux": flux_out, "ivar": ivar_out}, labels)
    # The same check the writer makes, now, so a bad file is found before anything is written.
    validate_sample(Sample(id=record.object_id, labels=labels, spectrum=record.spectrum),
                    DatasetSpec(spectrum=spec, photometry=None, image=None), source=str(source.path))
    return record


def _coadd_table(source: SourceFile, hdul: fits.HDUList) -> fits.FITS_rec:
    index = find_hdu(hdul, COADD_HDU)
    if index is None and len(hdul) > 1 and not hdul[1].header.get("EXTNAME"):
        index = 1  # an unnamed first extension: take it as the coadd
    if index is None:
        names = [hdu.name for hdu in hdul]
        raise source.error(f"no {COADD_HDU} HDU (the file has {names}); is this an SDSS DR8+ spec file?",
                           COADD_HDU)
    if not isinstance(hdul[index], fits.BinTableHDU):
        raise source.error(f"HDU {index} is a {type(hdul[index]).__name__}, expected a binary table", COADD_HDU)
    data = hdu_data(source, hdul, index, COADD_HDU)
    if data is None or len(data) == 0:
        raise source.error("table has no rows", COADD_HDU)
    return data


def _column(source: SourceFile, table: fits.FITS_rec, hdu: str, name: str) -> np.ndarray:
    names = {column.upper(): column for column in table.columns.names}
    if name.upper() not in names:
        raise source.error(f"no column {name!r} (columns: {table.columns.names})", f"{hdu}.{name}")
    try:
        return np.array(table[names[name.upper()]])  # a copy, independent of the closed file
    except Exception as error:  # damaged table data
        raise source.error(f"cannot read column ({type(error).__name__}: {error})", f"{hdu}.{name}") from error


def _specobj_labels(source: SourceFile, hdul: fits.HDUList) -> dict[str, Any]:
    index = find_hdu(hdul, SPECOBJ_HDU)
    if index is None:
        return {}  # redshift and class are optional: a spectrum without them is still a spectrum
    table = hdu_data(source, hdul, index, SPECOBJ_HDU)
    if table is None or len(table) != 1:
        raise source.error(f"expected one row, found {0 if table is None else len(table)}", SPECOBJ_HDU)
    present = {column.upper() for column in table.columns.names}
    labels: dict[str, Any] = {}
    for column, (label, kind, required) in SPECOBJ_LABELS.items():
        if column not in present:
            if required:
                raise source.error(f"no column {column!r}", f"{SPECOBJ_HDU}.{column}")
            continue
        value = _column(source, table, SPECOBJ_HDU, column)[0]
        labels[label] = _convert(source, value, kind, f"{SPECOBJ_HDU}.{column}")
    return labels


def _convert(source: SourceFile, value: Any, kind: type, field_name: str) -> Any:
    if kind is str:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        return text.strip()
    try:
        number = kind(value)
    except (TypeError, ValueError) as error:
        raise source.error(f"value {value!r} is not a {kind.__name__}", field_name) from error
    if isinstance(number, float) and not math.isfinite(number):
        raise source.error(f"value is {number}", field_name)
    return number
