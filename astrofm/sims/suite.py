"""Suite configs: the physics knobs of one mock universe, loaded from `configs/mock/*.yaml`.

A suite YAML has `name`, `domain` (observed | simulated), an optional `base` (another suite whose
knobs it starts from, by name or path) and the sections below. Every key is checked against the
dataclasses here, so a typo fails loudly with the file and the key instead of being ignored.

The dataclass defaults are the reference (`observed`) universe; `configs/mock/observed.yaml` spells
every knob out with a comment, and a test checks the two agree.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

DOMAINS = ("observed", "simulated")
SED_TYPES = ("E", "Sbc", "Scd", "Im")  # CWW templates, type t = 0, 1, 2, 3
# The bands a suite may observe in, blue to red, and the speclite filter curve each is drawn through.
BAND_FILTERS = {"g": "decam2014-g", "r": "decam2014-r", "i": "decam2014-i", "z": "decam2014-z",
                "Y": "decam2014-Y", "W1": "wise2010-W1", "W2": "wise2010-W2"}


class SuiteError(ValueError):
    """A suite that cannot be found, parsed or validated; the message names the file and the key."""


# ---------------------------------------------------------------------------------------------
# The knobs. Units in the comments; "dex" is log10.
# ---------------------------------------------------------------------------------------------


@dataclass
class PopulationConfig:
    z0: float = 0.3  # p(z) ∝ z^2 exp(-(z/z0)^1.5) before the magnitude limit
    z_min: float = 0.01  # redshift range; draws outside are redrawn (truncated, not clipped)
    z_max: float = 1.0
    abs_mag_mean: float = -20.5  # M_r (AB, rest-frame DECam r, dust-attenuated continuum) ~ Gaussian
    abs_mag_sigma: float = 1.2
    abs_mag_range: list[float] = field(default_factory=lambda: [-24.5, -15.0])  # redrawn outside
    mag_limit_r: float = 22.5  # apparent r (AB) limit; fainter candidates are redrawn
    early_type_fraction: float = 0.35  # mixture weight of the early-type (E-like) component
    early_type_width: float = 0.3  # early types: t = |N(0, width)|, at most 1
    late_type_min: float = 0.8  # late types: t ~ U(late_type_min, 3)
    log_ml_by_type: list[float] = field(default_factory=lambda: [0.45, 0.2, 0.0, -0.25])  # dex M/L_r at t=0..3
    log_ml_scatter: float = 0.1  # dex
    log_ssfr_by_type: list[float] = field(default_factory=lambda: [-11.8, -10.4, -9.9, -9.4])  # dex /yr at t=0..3
    log_ssfr_scatter: float = 0.3  # dex


@dataclass
class EmissionLineConfig:
    emission_line_scale: float = 1.0  # multiplies every line luminosity (Kennicutt Hα from SFR)
    velocity_dispersion: float = 90.0  # km/s, Gaussian sigma of every line
    oii_halpha_ratio: float = 0.7  # intrinsic [OII]3727+3730 / Hα
    oii_scatter: float = 0.1  # dex, log-normal scatter of that ratio
    oiii_hbeta_log_range: list[float] = field(default_factory=lambda: [-0.5, 0.5])  # log [OIII]5008/Hβ ~ U
    nii_halpha_ratio: float = 0.3  # [NII]6585 / Hα


@dataclass
class DustConfig:
    av_mean: float = 0.4  # mag, mean stellar A_V of star-forming galaxies (Calzetti 2000 curve)
    av_passive_factor: float = 0.25  # passive galaxies get this fraction of av_mean
    av_shape: float = 2.0  # A_V ~ Gamma(shape) with the mean above
    av_max: float = 3.0  # mag, cap
    r_v: float = 4.05  # Calzetti total-to-selective extinction
    stellar_to_gas: float = 0.44  # E(B-V)_stars / E(B-V)_gas (Calzetti 2000): lines see more dust


@dataclass
class MorphologyConfig:
    size_log_re_at_m0: float = 0.55  # dex kpc: log10 R_e at M_r = size_m0 (size-luminosity zero point)
    size_m0: float = -21.0  # pivot magnitude
    size_slope: float = -0.15  # dex per mag: log10 R_e = a + slope (M_r - m0)
    size_scatter: float = 0.2  # dex
    size_early_offset: float = -0.15  # dex, early types are more compact at fixed M_r
    bulge_fraction_by_type: list[float] = field(default_factory=lambda: [0.8, 0.35, 0.15, 0.05])  # B/T at t=0..3
    bulge_fraction_scatter: float = 0.1
    bulge_size_ratio: float = 0.5  # bulge R_e / disk R_e
    sersic_bulge_range: list[float] = field(default_factory=lambda: [3.0, 5.0])  # U, rounded to 0.05
    sersic_disk_range: list[float] = field(default_factory=lambda: [0.8, 1.5])  # U, rounded to 0.05
    axis_ratio_min_early: float = 0.5  # q ~ U(min, 1)
    axis_ratio_min_late: float = 0.2
    max_radius_fraction: float = 0.25  # R_e is clipped to this fraction of the stamp side


@dataclass
class ObservingConfig:
    # Bands of the photometry and of the image stamps, blue to red (BAND_FILTERS); stamps in a subset of the
    # photometry's bands. Must contain r: the magnitude limit and M_r are r-band.
    photometry_bands: list[str] = field(default_factory=lambda: ["g", "r", "z", "W1", "W2"])
    image_bands: list[str] = field(default_factory=lambda: ["g", "r", "z"])
    noise_scale: float = 1.0  # multiplies every noise sigma (images, photometry, spectra)
    psf_fwhm: dict[str, float] = field(default_factory=lambda: {"g": 1.45, "r": 1.3, "z": 1.2})  # arcsec
    psf_fwhm_scatter: float = 0.1  # fractional per-object seeing variation (log-normal)
    psf_beta: float = 3.5  # Moffat beta
    stamp_size: int = 32  # image side in pixels (0.262 arcsec each)
    # nanomaggy per pixel; from the 5-sigma point-source depths below and the PSF's noise-equivalent area
    sky_sigma: dict[str, float] = field(default_factory=lambda: {"g": 0.006, "r": 0.0117, "z": 0.029})
    depth: dict[str, float] = field(default_factory=lambda: {  # AB 5-sigma point-source depth per band
        "g": 24.0, "r": 23.4, "z": 22.5, "W1": 21.0, "W2": 20.3})
    photometry_floor: float = 0.01  # fractional calibration error added in quadrature
    spectrum_sky_sigma: float = 0.3  # 1e-17 erg/s/cm2/A per 2 A pixel: the flux-independent term
    spectrum_poisson: float = 0.05  # variance += this * max(flux, 0) (flux in 1e-17 units)


@dataclass
class MissingConfig:
    """Fraction of objects lacking each modality. At most one modality is dropped per object."""

    spectrum: float = 0.1
    photometry: float = 0.05
    image: float = 0.05


@dataclass
class SuiteConfig:
    name: str = "observed"
    domain: str = "observed"  # observed | simulated
    description: str = "Reference universe (stands in for the real sky)"
    deviation: float = 0.0  # multiples of the reference shift (see sim_*.yaml); 0 for the reference
    population: PopulationConfig = field(default_factory=PopulationConfig)
    lines: EmissionLineConfig = field(default_factory=EmissionLineConfig)
    dust: DustConfig = field(default_factory=DustConfig)
    morphology: MorphologyConfig = field(default_factory=MorphologyConfig)
    observing: ObservingConfig = field(default_factory=ObservingConfig)
    missing_fraction: MissingConfig = field(default_factory=MissingConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> SuiteConfig:
        suite = _build(cls, data, source, prefix="")
        validate_suite(suite, source=source)
        return suite


# ---------------------------------------------------------------------------------------------
# Building dataclasses from dicts, strictly.
# ---------------------------------------------------------------------------------------------


def _check_keys(cls: type, data: dict[str, Any], source: str, prefix: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise SuiteError(f"{source}: unknown key '{prefix}{key}'{hint}; "
                             f"valid keys here: {', '.join(names)}")


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SuiteError(f"{source}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SuiteError(f"{source}: key {key!r} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise SuiteError(f"{source}: key {key!r} must be a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SuiteError(f"{source}: key {key!r} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SuiteError(f"{source}: key {key!r} must be a mapping, got {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(v, item, source, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported knob type {hint!r}")  # a bug here, not the user's


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: {prefix.rstrip('.') or 'the suite'} must be a mapping, got {data!r}")
    _check_keys(cls, data, source, prefix)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, source, f"{prefix}{name}")
    return cls(**kwargs)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update: nested mappings merge key by key, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Validation of values (ranges, band names, lengths).
# ---------------------------------------------------------------------------------------------


def validate_suite(suite: SuiteConfig, *, source: str = "<suite>") -> None:
    def fail(key: str, message: str) -> None:
        raise SuiteError(f"{source}: key {key!r} {message}")

    if suite.domain not in DOMAINS:
        fail("domain", f"must be one of {DOMAINS}, got {suite.domain!r}")
    if not suite.name or not suite.name.replace("_", "").replace("-", "").isalnum():
        fail("name", f"must be a non-empty name of letters, digits, '_' or '-', got {suite.name!r}")
    p, m, o, d, li = suite.population, suite.morphology, suite.observing, suite.dust, suite.lines
    if not 0 < p.z_min < p.z_max:
        fail("population.z_min", f"must satisfy 0 < z_min < z_max, got {p.z_min}, {p.z_max}")
    if p.z_max > 2.5:  # DECam g starts at 3330 A, which must stay redder than the rest grid's 900 A
        fail("population.z_max", f"must be at most 2.5, got {p.z_max}")
    for key, values, length in (("population.log_ml_by_type", p.log_ml_by_type, 4),
                                ("population.log_ssfr_by_type", p.log_ssfr_by_type, 4),
                                ("morphology.bulge_fraction_by_type", m.bulge_fraction_by_type, 4),
                                ("population.abs_mag_range", p.abs_mag_range, 2),
                                ("lines.oiii_hbeta_log_range", li.oiii_hbeta_log_range, 2),
                                ("morphology.sersic_bulge_range", m.sersic_bulge_range, 2),
                                ("morphology.sersic_disk_range", m.sersic_disk_range, 2)):
        if len(values) != length:
            fail(key, f"must have {length} values, got {len(values)}")
    for key, (low, high) in (("population.abs_mag_range", p.abs_mag_range),
                             ("lines.oiii_hbeta_log_range", li.oiii_hbeta_log_range),
                             ("morphology.sersic_bulge_range", m.sersic_bulge_range),
                             ("morphology.sersic_disk_range", m.sersic_disk_range)):
        if low > high:
            fail(key, f"must be [low, high] with low <= high, got {[low, high]}")
    for key, (low, high) in (("morphology.sersic_bulge_range", m.sersic_bulge_range),
                             ("morphology.sersic_disk_range", m.sersic_disk_range)):
        if low < 0.3 or high > 6.2:
            fail(key, "must lie within galsim's Sersic range [0.3, 6.2]")
    for key, value in (("population.z0", p.z0), ("population.abs_mag_sigma", p.abs_mag_sigma),
                       ("lines.velocity_dispersion", li.velocity_dispersion), ("dust.r_v", d.r_v),
                       ("dust.av_shape", d.av_shape), ("dust.stellar_to_gas", d.stellar_to_gas),
                       ("observing.noise_scale", o.noise_scale), ("observing.psf_beta", o.psf_beta),
                       ("observing.spectrum_sky_sigma", o.spectrum_sky_sigma),
                       ("morphology.bulge_size_ratio", m.bulge_size_ratio),
                       ("morphology.max_radius_fraction", m.max_radius_fraction)):
        if value <= 0:
            fail(key, f"must be positive, got {value}")
    for key, value in (("population.early_type_fraction", p.early_type_fraction),
                       ("morphology.axis_ratio_min_early", m.axis_ratio_min_early),
                       ("morphology.axis_ratio_min_late", m.axis_ratio_min_late)):
        if not 0 <= value <= 1:
            fail(key, f"must lie in [0, 1], got {value}")
    for key, value in (("lines.emission_line_scale", li.emission_line_scale), ("dust.av_mean", d.av_mean),
                       ("observing.photometry_floor", o.photometry_floor),
                       ("observing.spectrum_poisson", o.spectrum_poisson)):
        if value < 0:
            fail(key, f"must not be negative, got {value}")
    if not 0 <= p.late_type_min < 3:
        fail("population.late_type_min", f"must lie in [0, 3), got {p.late_type_min}")
    if o.stamp_size < 8:
        fail("observing.stamp_size", f"must be at least 8 pixels, got {o.stamp_size}")
    _validate_bands(o, fail)
    for key, mapping, bands_key in (("observing.psf_fwhm", o.psf_fwhm, "image_bands"),
                                    ("observing.sky_sigma", o.sky_sigma, "image_bands"),
                                    ("observing.depth", o.depth, "photometry_bands")):
        bands = getattr(o, bands_key)
        if sorted(mapping) != sorted(bands):
            fail(key, f"must give exactly the bands of observing.{bands_key} {bands}, got {sorted(mapping)} "
                      f"(a suite with a base inherits the base's entries: one that drops a band must not use base)")
        if key != "observing.depth" and min(mapping.values()) <= 0:
            fail(key, "values must be positive")
    missing = asdict(suite.missing_fraction)
    if min(missing.values()) < 0 or sum(missing.values()) > 1:
        fail("missing_fraction", f"fractions must be >= 0 and sum to at most 1 (one modality is dropped "
                                 f"per object at most), got {missing}")


def _validate_bands(o: ObservingConfig, fail) -> None:
    order = list(BAND_FILTERS)
    for key, bands in (("observing.photometry_bands", o.photometry_bands), ("observing.image_bands", o.image_bands)):
        unknown = [b for b in bands if b not in BAND_FILTERS]
        if unknown:
            fail(key, f"has unknown band(s) {unknown}; known bands: {order}")
        if not bands or len(set(bands)) != len(bands) or bands != sorted(bands, key=order.index):
            fail(key, f"must list distinct bands from blue to red in the order {order}, got {bands}")
    if "r" not in o.photometry_bands:
        fail("observing.photometry_bands", f"must contain r (the magnitude limit is in r), got {o.photometry_bands}")
    outside = [b for b in o.image_bands if b not in o.photometry_bands]
    if outside:
        fail("observing.image_bands", f"bands {outside} are not in observing.photometry_bands {o.photometry_bands} "
                                      f"(a stamp's total flux is its photometry band's true flux)")


# ---------------------------------------------------------------------------------------------
# Finding and loading suites.
# ---------------------------------------------------------------------------------------------


def suite_dir() -> Path:
    """`configs/mock/` of the repository this package lives in."""
    import astrofm

    return Path(astrofm.__file__).resolve().parents[1] / "configs" / "mock"


def list_suites() -> list[str]:
    folder = suite_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_suite_path(name_or_path: str | Path, *, relative_to: Path | None = None) -> Path:
    """A suite name (`observed`) -> `configs/mock/observed.yaml`; a path to a YAML file -> itself."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        if not path.is_file() and Path(text).name == text and (suite_dir() / text).is_file():
            path = suite_dir() / text  # "sim_slight.yaml": a shipped suite by its file name
        if not path.is_file():
            raise FileNotFoundError(f"suite file {text!r} does not exist")
        return path
    path = suite_dir() / f"{text}.yaml"
    if not path.is_file():
        available = ", ".join(list_suites()) or f"none found in {suite_dir()}"
        raise SuiteError(f"unknown suite {text!r}; available suites: {available} "
                         f"(or give a path to a suite YAML file)")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite must be a YAML mapping, got {type(data).__name__}")
    return data


def _resolved_dict(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The suite's dict with its `base` chain merged in; each file's keys checked against the schema."""
    if path.resolve() in seen:
        raise SuiteError(f"{path}: circular 'base' chain: {' -> '.join(str(p) for p in seen)}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    for key in ("name", "domain"):
        if key not in data:
            raise SuiteError(f"{path}: missing required key {key!r}")
    _build(SuiteConfig, data, str(path), prefix="")  # schema and types of this file's own keys
    if base is None:
        return data
    if not isinstance(base, str):
        raise SuiteError(f"{path}: key 'base' must be a suite name or path, got {base!r}")
    base_data = _resolved_dict(resolve_suite_path(base, relative_to=path.parent), seen + (path.resolve(),))
    base_data["description"] = ""  # a description and a deviation speak for their own file only
    base_data["deviation"] = 0.0
    return _merge(base_data, data)


def load_suite(name_or_path: str | Path) -> SuiteConfig:
    """Load, merge (`base`) and validate a suite given by name or YAML path."""
    path = resolve_suite_path(name_or_path)
    return SuiteConfig.from_dict(_resolved_dict(path), source=str(path))
