"""FITS image cut-outs, one object per file; the object id is the file stem (as for spectra).

Two layouts are read (HDU names and band names are matched case-insensitively):
- a cube, C x H x W, in the primary HDU or the first image extension. Its bands come from the header
  keyword `BANDS` (e.g. `BANDS = 'g,r,z'`; the configured bands are picked out of it in order), else
  the cube must hold exactly the configured bands in the configured order. An optional inverse
  variance cube of the same shape lives in an HDU named `IVAR`.
- one 2-D image HDU per band, with EXTNAME equal to the band name (`G`, `R`, `Z`), and optional
  inverse variance HDUs `IVAR_<band>` (for every band or for none).

Stamps must be `size` x `size` pixels. A pixel scale in the header (`PIXSCALE` in arcsec/pixel, or a
CD matrix, or CDELT1/CDELT2, in degrees) must agree with the dataset's within 1%: a cut-out at another
scale would silently teach the encoder wrong sizes. No resampling is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from astrofm.data.format import DatasetSpec, ImageSpec, Sample, validate_sample
from astrofm.data.ingest.fitsfile import SourceFile, find_hdu, finite_array, hdu_data, open_fits

IVAR_HDU = "IVAR"
BANDS_KEYWORD = "BANDS"
PIXEL_SCALE_RTOL = 0.01


@dataclass
class ImageRecord:
    object_id: str
    image: dict[str, np.ndarray]  # flux (C, H, W), optional ivar (C, H, W)


def read_image(source: SourceFile, spec: ImageSpec) -> ImageRecord:
    """Read and check one cut-out file; raises DataValidationError."""
    with open_fits(source) as hdul:
        if any(find_hdu(hdul, band) is not None for band in spec.bands):
            image = _read_per_band(source, hdul, spec)
        else:
            image = _read_cube(source, hdul, spec)
    validate_sample(Sample(id=source.object_id, image=image),
                    DatasetSpec(spectrum=None, photometry=None, image=spec), source=str(source.path))
    return ImageRecord(source.object_id, image)


def _read_per_band(source: SourceFile, hdul: fits.HDUList, spec: ImageSpec) -> dict[str, np.ndarray]:
    for band in spec.bands:
        if find_hdu(hdul, band) is None:
            names = [hdu.name for hdu in hdul]
            raise source.error(f"no HDU for band {band!r} (the file has {names})", band)
    ivar_names = [f"{IVAR_HDU}_{band}" for band in spec.bands]
    has_ivar = [find_hdu(hdul, name) is not None for name in ivar_names]
    if any(has_ivar) and not all(has_ivar):
        missing = ivar_names[has_ivar.index(False)]
        raise source.error("inverse variance HDUs must be given for every band or for none", missing)
    flux, ivar = [], []
    for band, ivar_name in zip(spec.bands, ivar_names, strict=True):
        index = find_hdu(hdul, band)
        _check_pixel_scale(source, hdul, index, spec, band)
        flux.append(_plane(source, hdul, index, band, spec))
        if all(has_ivar):
            ivar.append(_plane(source, hdul, find_hdu(hdul, ivar_name), ivar_name, spec, non_negative=True))
    image = {"flux": np.stack(flux)}
    if ivar:
        image["ivar"] = np.stack(ivar)
    return image


def _plane(source: SourceFile, hdul: fits.HDUList, index: int, field: str, spec: ImageSpec,
           non_negative: bool = False) -> np.ndarray:
    data = hdu_data(source, hdul, index, field)
    if data is None:
        raise source.error("HDU has no data", field)
    array = finite_array(source, data, field, ndim=2, non_negative=non_negative)
    _check_size(source, array.shape, field, spec)
    return array


def _read_cube(source: SourceFile, hdul: fits.HDUList, spec: ImageSpec) -> dict[str, np.ndarray]:
    index = _cube_hdu(source, hdul, spec)
    name = hdul[index].name or "PRIMARY"
    data = hdu_data(source, hdul, index, name)
    cube = finite_array(source, data if data.ndim == 3 else data[np.newaxis], name, ndim=3)
    picks = _band_indices(source, hdul, index, cube.shape[0], spec, name)
    _check_size(source, cube.shape[1:], name, spec)
    _check_pixel_scale(source, hdul, index, spec, name)
    image = {"flux": cube[picks]}
    ivar_index = find_hdu(hdul, IVAR_HDU)
    if ivar_index is not None:
        ivar_data = hdu_data(source, hdul, ivar_index, IVAR_HDU)
        if ivar_data is None or ivar_data.shape != data.shape:
            shape = None if ivar_data is None else ivar_data.shape
            raise source.error(f"shape {shape}, expected the image's {data.shape}", IVAR_HDU)
        ivar = finite_array(source, ivar_data if ivar_data.ndim == 3 else ivar_data[np.newaxis], IVAR_HDU,
                            ndim=3, non_negative=True)
        image["ivar"] = ivar[picks]
    return image


def _cube_hdu(source: SourceFile, hdul: fits.HDUList, spec: ImageSpec) -> int:
    """The primary HDU if it holds data, else the first image extension (never the IVAR one)."""
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        if hdu.name.upper() == IVAR_HDU or hdu.header.get("NAXIS", 0) == 0:
            continue
        naxis = hdu.header["NAXIS"]
        if naxis == 3 or (naxis == 2 and len(spec.bands) == 1):
            return index
        shape = tuple(hdu.header.get(f"NAXIS{axis}") for axis in range(naxis, 0, -1))
        raise source.error(f"image has shape {shape}, expected ({len(spec.bands)}, {spec.size}, {spec.size})"
                           f" (bands x height x width)", hdu.name or "PRIMARY")
    bands = ", ".join(band.upper() for band in spec.bands)
    raise source.error(f"no image cube and no per-band HDUs ({bands}) found", "image")


def _band_indices(source: SourceFile, hdul: fits.HDUList, index: int, n_planes: int, spec: ImageSpec,
                  name: str) -> list[int]:
    keyword = hdul[index].header.get(BANDS_KEYWORD, hdul[0].header.get(BANDS_KEYWORD))
    if keyword is None:
        if n_planes != len(spec.bands):
            raise source.error(f"cube has {n_planes} planes but {len(spec.bands)} bands are configured "
                               f"({','.join(spec.bands)}) and no {BANDS_KEYWORD} keyword names them", name)
        return list(range(n_planes))
    file_bands = [band.strip().lower() for band in str(keyword).split(",")]
    field = f"{name}.{BANDS_KEYWORD}"
    if len(file_bands) != n_planes:
        raise source.error(f"names {len(file_bands)} bands ({keyword!r}) but the cube has {n_planes} planes", field)
    missing = [band for band in spec.bands if band.lower() not in file_bands]
    if missing:
        raise source.error(f"the file has bands {keyword!r}, lacking configured band(s) {missing}", field)
    return [file_bands.index(band.lower()) for band in spec.bands]


def _check_size(source: SourceFile, shape: tuple[int, ...], field: str, spec: ImageSpec) -> None:
    if tuple(shape) != (spec.size, spec.size):
        raise source.error(f"stamp is {shape[0]} x {shape[1]} pixels, expected {spec.size} x {spec.size} "
                           f"(set the image size to match, or cut the stamps again)", field)


def _check_pixel_scale(source: SourceFile, hdul: fits.HDUList, index: int, spec: ImageSpec, name: str) -> None:
    for header in (hdul[index].header, hdul[0].header):
        found = header_pixel_scale(header)
        if found is None:
            continue
        keyword, scale = found
        if not math.isfinite(scale):
            raise source.error("unreadable pixel scale", f"{name}.{keyword}")
        if not math.isclose(scale, spec.pixel_scale, rel_tol=PIXEL_SCALE_RTOL):
            raise source.error(f"pixel scale {scale:.4g} arcsec/pixel, the dataset's is {spec.pixel_scale:g}",
                               f"{name}.{keyword}")
        return


def header_pixel_scale(header: fits.Header) -> tuple[str, float] | None:
    """(keyword, arcsec per pixel) from PIXSCALE, a CD matrix or CDELT1/2; None if none is there.
    An unreadable value gives NaN, which the caller reports."""
    if "PIXSCALE" in header:
        keyword, keys = "PIXSCALE", ("PIXSCALE",)
    elif "CD1_1" in header or "CD2_2" in header:
        keyword, keys = "CD1_1", ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
    elif "CDELT1" in header and "CDELT2" in header:
        keyword, keys = "CDELT1", ("CDELT1", "CDELT2")
    else:
        return None
    try:
        values = [float(header.get(key, 0.0)) for key in keys]
    except (TypeError, ValueError):
        return keyword, math.nan
    if keyword == "PIXSCALE":
        return keyword, abs(values[0])
    if keyword == "CD1_1":  # degrees per pixel; the square root of |det CD| is the mean scale
        return keyword, math.sqrt(abs(values[0] * values[3] - values[1] * values[2])) * 3600.0
    return keyword, math.sqrt(abs(values[0] * values[1])) * 3600.0
