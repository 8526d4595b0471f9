"""Survey-format input files for the ingest tests, written with astropy and pyarrow.

SDSS spectra follow the DR8+ `spec-PLATE-MJD-FIBER.fits` layout: an empty primary HDU, a COADD
binary table (one row per pixel: flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model) and a
SPECOBJ table with one row (Z, Z_ERR, CLASS, ZWARNING, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits

LOGLAM_START = np.log10(3800.0)  # SDSS-like coverage, narrower than the dataset grid (3600-9800 A)
LOGLAM_STEP = 1e-4  # SDSS: 69 km/s per pixel
N_PIXELS = 3700  # up to about 8940 A
CONTINUUM = 5.0  # 1e-17 erg/s/cm^2/A
LINE_CENTRE, LINE_SIGMA, LINE_AMPLITUDE = 5000.0, 3.0, 40.0
PHOTOMETRY_BANDS = ("g", "r", "z", "W1", "W2")


def sdss_loglam(n: int = N_PIXELS, start: float = LOGLAM_START) -> np.ndarray:
    return start + LOGLAM_STEP * np.arange(n)


def line_spectrum(loglam: np.ndarray) -> np.ndarray:
    """A flat continuum with one Gaussian emission line (flux density at the pixel centres)."""
    wave = 10.0**loglam
    return CONTINUUM + LINE_AMPLITUDE * np.exp(-0.5 * ((wave - LINE_CENTRE) / LINE_SIGMA) ** 2)


def write_sdss_spectrum(path: Path, *, loglam=None, flux=None, ivar=None, z: float = 0.1,
                        spectral_class: str = "GALAXY", coadd_name: str = "COADD", specobj: bool = True,
                        drop_columns: tuple[str, ...] = ()) -> Path:
    loglam = sdss_loglam() if loglam is None else np.asarray(loglam)
    flux = line_spectrum(loglam) if flux is None else np.asarray(flux)
    ivar = np.full(loglam.shape, 4.0) if ivar is None else np.asarray(ivar)
    zeros = np.zeros(loglam.shape)
    columns = {
        "flux": ("E", flux), "loglam": ("E", loglam), "ivar": ("E", ivar),
        "and_mask": ("J", zeros.astype(np.int32)), "or_mask": ("J", zeros.astype(np.int32)),
        "wdisp": ("E", zeros + 1.0), "sky": ("E", zeros + 2.0), "model": ("E", flux),
    }
    coadd = fits.BinTableHDU.from_columns(
        [fits.Column(name=name, format=fmt, array=values) for name, (fmt, values) in columns.items()
         if name not in drop_columns], name=coadd_name)
    hdus = [fits.PrimaryHDU(), coadd]
    if specobj:
        hdus.append(fits.BinTableHDU.from_columns([
            fits.Column(name="PLATE", format="J", array=[266]),
            fits.Column(name="Z", format="E", array=[z]),
            fits.Column(name="Z_ERR", format="E", array=[1e-4]),
            fits.Column(name="CLASS", format="6A", array=[spectral_class]),
            fits.Column(name="ZWARNING", format="J", array=[0]),
        ], name="SPECOBJ"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def stamp(bands: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    """A round blob on a little noise, brighter in redder bands."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    blob = np.exp(-0.5 * (x**2 + y**2) / 3.0**2)
    return np.stack([(c + 1) * blob + 0.01 * rng.standard_normal((size, size)) for c in range(bands)])


def write_image_cube(path: Path, *, data=None, bands: str | None = "g,r,z", ivar: bool = True,
                     pixscale: float | None = 0.262, in_extension: bool = False) -> Path:
    data = stamp() if data is None else np.asarray(data)
    header = fits.Header()
    if bands is not None:
        header["BANDS"] = bands
    if pixscale is not None:
        header["PIXSCALE"] = pixscale
    if in_extension:
        hdus = [fits.PrimaryHDU(), fits.ImageHDU(data.astype(np.float32), header=header, name="IMAGE")]
    else:
        hdus = [fits.PrimaryHDU(data.astype(np.float32), header=header)]
    if ivar:
        hdus.append(fits.ImageHDU(np.full(data.shape, 100.0, dtype=np.float32), name="IVAR"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_image_bands(path: Path, *, data=None, bands=("g", "r", "z"), ivar: bool = True,
                      cd_scale_deg: float | None = 0.262 / 3600) -> Path:
    """One image HDU per band (EXTNAME = band), with a CD-matrix WCS, and IVAR_<band> HDUs."""
    data = stamp(len(bands)) if data is None else np.asarray(data)
    hdus = [fits.PrimaryHDU()]
    for band, plane in zip(bands, data, strict=True):
        header = fits.Header()
        if cd_scale_deg is not None:
            header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -cd_scale_deg, "CD1_2": 0.0,
                           "CD2_1": 0.0, "CD2_2": cd_scale_deg})
        hdus.append(fits.ImageHDU(plane.astype(np.float32), header=header, name=band))
        if ivar:
            hdus.append(fits.ImageHDU(np.full(plane.shape, 50.0, dtype=np.float32), name=f"IVAR_{band}"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def photometry_rows(ids, bands=PHOTOMETRY_BANDS) -> list[dict]:
    return [{"id": object_id, **{f"flux_{b}": 10.0 + i + j for j, b in enumerate(bands)},
             **{f"flux_err_{b}": 0.5 for b in bands}} for i, object_id in enumerate(ids)]


def write_catalog(path: Path, rows: list[dict]) -> Path:
    """CSV or Parquet by suffix; text columns (ids) stay text, the rest are floats."""
    columns = {name: [row.get(name) for row in rows] for name in rows[0]}
    table = pa.table({name: pa.array(values, type=pa.string() if isinstance(values[0], str) else pa.float64())
                      for name, values in columns.items()})
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# ---------------------------------------------------------------------------------------------
# Running the command and checking that a failed run leaves nothing behind.
# ---------------------------------------------------------------------------------------------


def ingest_cli(out: Path, *args: str | Path) -> int:
    """`astrofm data ingest --out OUT ARGS... --no-progress`, in process; returns the exit status."""
    from astrofm.cli.main import main

    return main(["data", "ingest", "--out", str(out), *map(str, args), "--no-progress"])


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was created"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, f"staging folders left behind: {leftovers}"


def assert_names(error, file: Path | None, object_id: str | None, field: str) -> None:
    """The error carries file, object and field, and its message names each of them."""
    assert error.file == (None if file is None else str(file))
    assert error.object_id == object_id
    assert error.field == field
    message = str(error)
    for part in (file, object_id, field):
        if part is not None:
            assert str(part) in message
