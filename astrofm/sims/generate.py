"""The mock-universe driver: suite + seed -> Samples -> a sharded dataset.

Objects are made in chunks of consecutive indices, in worker processes ("spawn") when workers > 1,
returned in order (imap) and written by this process through DatasetWriter. Every object draws from
its own streams seeded by (seed, index), so the shards are byte-identical whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.data.format import DatasetSpec, ImageSpec, PhotometrySpec, Sample, SpectrumSpec
from astrofm.data.manifest import Manifest
from astrofm.sims.suite import BAND_FILTERS, SuiteConfig, load_suite, resolve_suite_path

GENERATOR = "astrofm.sims"
CHUNK_SIZE = 32  # objects per work unit: enough to vectorise, small enough to balance and show progress
CATALOGUE_CHUNK = 1000  # objects per step of truth_catalogue (no rendering: vectorised draws)
MODALITY_ORDER = ("spectrum", "photometry", "image")  # order of the missing-modality intervals

# Every label an object carries, with its unit; recorded in the manifest's provenance.
LABEL_UNITS = {
    "redshift": "", "abs_mag_r": "AB mag, rest-frame DECam r, dust-attenuated continuum",
    "mag_r": "AB mag, observed DECam r (lines included)", "log_stellar_mass": "dex Msun",
    "log_sfr": "dex Msun/yr", "log_ssfr": "dex 1/yr", "sed_type": "0=E 1=Sbc 2=Scd 3=Im, continuous",
    "galaxy_type": "early | late (mixture component)", "star_forming": "1 if log_ssfr > -10.8",
    "dust_av": "mag, stellar A_V (Calzetti 2000)", "oii_halpha_ratio": "intrinsic [OII]/Halpha",
    "oiii_hbeta_log_ratio": "dex", "luminosity_distance_mpc": "Mpc (Planck18)",
    "halpha_flux": "1e-17 erg/s/cm2, observed, dust-attenuated", "hbeta_flux": "1e-17 erg/s/cm2",
    "oii_flux": "1e-17 erg/s/cm2 (3727+3730)", "oiii_flux": "1e-17 erg/s/cm2 (5008)",
    "halpha_ew": "A, rest-frame", "half_light_radius_arcsec": "arcsec, disk R_e (after clipping)",
    "half_light_radius_kpc": "kpc, disk R_e (after clipping)", "bulge_half_light_radius_arcsec": "arcsec",
    "size_clipped": "1 if R_e was clipped to the stamp", "bulge_fraction": "bulge-to-total flux",
    "sersic_index": "flux-weighted mean of bulge and disk", "sersic_index_bulge": "",
    "sersic_index_disk": "", "axis_ratio": "b/a", "ellipticity": "1 - b/a", "position_angle": "degrees",
    "psf_fwhm_{band}": "arcsec, Moffat FWHM of that image band", "flux_true_{band}": "nanomaggy, noiseless",
}


@dataclass
class MockConfig:
    suite: str = "observed"  # suite name (configs/mock/NAME.yaml) or path to a suite YAML
    n: int = 1000  # objects to generate
    out: str = "data/mock"  # dataset folder to create
    seed: int = 0  # objects are a pure function of (suite, seed, index)
    shard_size: int = 1000  # objects per shard
    workers: int = 1  # processes generating objects (1: in this process)
    overwrite: bool = False  # replace an existing non-empty `out`

    def __post_init__(self):
        for name, low in (("n", 1), ("shard_size", 1), ("workers", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"mock: {name} must be an integer >= {low}, got {value!r}")


def dataset_spec(suite: SuiteConfig) -> DatasetSpec:
    """The dataset's modalities: DESI-like spectra, photometry and stamps in the suite's bands (default DECam
    g, r, z with WISE W1, W2; g, r, z stamps)."""
    obs = suite.observing
    photometry = PhotometrySpec(bands=list(obs.photometry_bands),
                                filters=[BAND_FILTERS[band] for band in obs.photometry_bands])
    return DatasetSpec(spectrum=SpectrumSpec(), photometry=photometry,
                       image=ImageSpec(bands=list(obs.image_bands), size=obs.stamp_size))


def object_id(suite_name: str, seed: int, index: int) -> str:
    return f"{suite_name}-s{seed}-{index:07d}"


class Simulator:
    """What one process needs to turn object indices into Samples; built once per process."""

    def __init__(self, suite: SuiteConfig, seed: int):
        from astrofm.sims.population import Cosmology
        from astrofm.sims.sed import SedModel

        self.suite, self.seed = suite, seed
        self.spec = dataset_spec(suite)
        self.sed = SedModel(suite.lines, suite.dust, self.spec.photometry.bands, self.spec.photometry.filters)
        self.cosmo = Cosmology()
        self.image_columns = [self.spec.photometry.bands.index(b) for b in self.spec.image.bands]
        self._extra_seds: dict[tuple[str, ...], Any] = {}  # catalogue(extra_filters=...): SedModel per filter tuple

    def truth(self, start: int, stop: int) -> dict[str, Any]:
        """Noiseless truth of objects [start, stop): parameters, morphology, true fluxes (n, B), streams."""
        from astrofm.sims.observe import true_fluxes
        from astrofm.sims.population import ObjectStreams, draw_morphology, draw_population

        streams = [ObjectStreams.for_object(self.seed, i) for i in range(start, stop)]
        params = draw_population(streams, self.suite, self.sed, self.cosmo)
        morph = draw_morphology(streams, params, self.suite, self.cosmo, self.spec.image.pixel_scale)
        return {"params": params, "morph": morph, "flux_true": true_fluxes(self.sed, params),
                "streams": streams}

    def simulate(self, start: int, stop: int) -> list[Sample]:
        """Samples of objects [start, stop), in index order."""
        from astrofm.sims.observe import (
            image_sigma,
            photometry_sigma,
            render_image,
            spectrum_variance,
            true_spectrum,
        )
        from astrofm.sims.population import line_labels

        suite, spec, obs = self.suite, self.spec, self.suite.observing
        truth = self.truth(start, stop)
        params, morph, flux_true = truth["params"], truth["morph"], truth["flux_true"]
        labels = self._labels(params, morph, flux_true, line_labels(params, self.sed))
        phot_sigma = photometry_sigma(flux_true, spec.photometry.bands, obs)  # (n, B)
        img_sigma = image_sigma(spec.image.bands, obs)  # (C,)
        fractions = np.cumsum([getattr(suite.missing_fraction, m) for m in MODALITY_ORDER])
        shape = (len(spec.image.bands), spec.image.size, spec.image.size)
        meta = {"survey": "mock", "suite": suite.name, "domain": suite.domain}
        samples = []
        for j, index in enumerate(range(start, stop)):
            rng = truth["streams"][j].noise
            # Always the same draws in the same order, whatever is dropped: noise stays paired.
            u_missing = rng.random()
            phot_noise = rng.standard_normal(len(spec.photometry.bands))
            spec_noise = rng.standard_normal(spec.spectrum.n_pixels)
            img_noise = rng.standard_normal(shape)
            slot = int(np.searchsorted(fractions, u_missing, side="right"))
            drop = MODALITY_ORDER[slot] if slot < len(MODALITY_ORDER) else None
            sample = Sample(id=object_id(suite.name, self.seed, index), labels=labels[j], meta=dict(meta))
            if drop != "photometry":
                sample.photometry = {"flux": flux_true[j] + phot_sigma[j] * phot_noise,
                                     "flux_err": phot_sigma[j]}
            if drop != "spectrum":
                true = true_spectrum(self.sed, params, j, spec.spectrum)
                variance = spectrum_variance(true, obs)
                sample.spectrum = {"flux": true + np.sqrt(variance) * spec_noise, "ivar": 1.0 / variance}
            if drop != "image":
                clean = render_image(morph, j, flux_true[j, self.image_columns], spec.image.bands, spec.image,
                                     obs.psf_beta)
                sample.image = {"flux": clean + img_sigma[:, None, None] * img_noise,
                                "ivar": np.broadcast_to(1.0 / img_sigma[:, None, None] ** 2, shape)}
            for modality in sample.modalities:  # shards store float32: send no more between processes
                arrays = getattr(sample, modality)
                setattr(sample, modality, {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
            samples.append(sample)
        return samples

    def catalogue(self, start: int, stop: int, extra_filters: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The labels of objects [start, stop) as columns, beside "id" and the "split" the dataset writer gives
        them by default: the survey's true catalogue without rendering or noise (milliseconds an object, not
        tens), e.g. to measure what a suite's noiseless fluxes and shapes hold before generating it.
        `extra_filters` (speclite names, e.g. "decam2014-i") add flux_true_{filter} columns in nanomaggies: the
        same galaxies seen through bands the survey does not have."""
        from astrofm.data.format import assign_split
        from astrofm.sims.population import line_labels

        truth = self.truth(start, stop)
        params, morph, flux_true = truth["params"], truth["morph"], truth["flux_true"]
        columns = self._label_columns(params, morph, flux_true, line_labels(params, self.sed))
        if extra_filters:
            extra = self._extra_sed(tuple(extra_filters))
            columns.update({f"flux_true_{name}": extra.band_maggies(name, params) * 1e9 for name in extra_filters})
        ids = [object_id(self.suite.name, self.seed, index) for index in range(start, stop)]
        return {"id": np.array(ids), "split": np.array([assign_split(i) for i in ids]), **columns}

    def _extra_sed(self, filters: tuple[str, ...]):
        """A SedModel of this suite whose bands are `filters`, named as the filters; built once per tuple."""
        from astrofm.sims.sed import SedModel

        if filters not in self._extra_seds:
            try:
                self._extra_seds[filters] = SedModel(self.suite.lines, self.suite.dust, list(filters), list(filters))
            except (ValueError, KeyError, OSError) as error:
                raise ValueError(f"suite {self.suite.name}: extra filters {list(filters)}: {error} (speclite "
                                 f"names such as decam2014-i, sdss2010-u, lsst2023-y)") from None
        return self._extra_seds[filters]

    def _labels(self, params, morph, flux_true, lines) -> list[dict[str, Any]]:
        """Per object: every drawn quantity under a plain name, as JSON scalars."""
        columns = self._label_columns(params, morph, flux_true, lines)
        return [{key: value[j].item() for key, value in columns.items()} for j in range(len(params["redshift"]))]

    def _label_columns(self, params, morph, flux_true, lines) -> dict[str, np.ndarray]:
        """Every drawn quantity under a plain name, as (n,) columns."""
        columns: dict[str, np.ndarray] = {
            "redshift": params["redshift"], "abs_mag_r": params["abs_mag_r"], "mag_r": params["mag_r"],
            "log_stellar_mass": params["log_stellar_mass"], "log_sfr": params["log_sfr"],
            "log_ssfr": params["log_ssfr"], "sed_type": params["sed_type"], "dust_av": params["dust_av"],
            "oii_halpha_ratio": params["oii_halpha_ratio"],
            "oiii_hbeta_log_ratio": params["oiii_hbeta_log_ratio"],
            "luminosity_distance_mpc": params["luminosity_distance_mpc"], **lines,
        }
        for key in ("half_light_radius_arcsec", "half_light_radius_kpc", "bulge_half_light_radius_arcsec",
                    "bulge_fraction", "sersic_index", "sersic_index_bulge", "sersic_index_disk",
                    "axis_ratio", "ellipticity", "position_angle"):
            columns[key] = morph[key]
        for band in self.spec.image.bands:
            columns[f"psf_fwhm_{band}"] = morph[f"psf_fwhm_{band}"]
        for b, band in enumerate(self.spec.photometry.bands):
            columns[f"flux_true_{band}"] = flux_true[:, b]
        columns = {key: np.asarray(value, dtype=np.float64) for key, value in columns.items()}
        columns["galaxy_type"] = np.where(params["early"], "early", "late")
        columns["star_forming"] = (params["log_ssfr"] > -10.8).astype(np.int64)
        columns["size_clipped"] = np.asarray(morph["size_clipped"]).astype(np.int64)
        return columns


def truth_catalogue(suite: SuiteConfig, n: int, seed: int, progress: bool = True,
                    extra_filters: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Simulator.catalogue of objects [0, n) of `suite` with `seed`: the same objects, labels, ids and
    splits that `astrofm data mock` would write with that seed, drawn in one process with a progress bar."""
    from tqdm import tqdm

    simulator = Simulator(suite, seed)
    parts = [simulator.catalogue(start, min(start + CATALOGUE_CHUNK, n), extra_filters)
             for start in tqdm(range(0, n, CATALOGUE_CHUNK), desc=f"catalogue {suite.name}", unit="chunk",
                               disable=not progress)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


# ---------------------------------------------------------------------------------------------
# Worker processes.
# ---------------------------------------------------------------------------------------------

_SIMULATOR: Simulator | None = None


def _init_worker(suite: SuiteConfig, seed: int) -> None:
    global _SIMULATOR
    _SIMULATOR = Simulator(suite, seed)


def _run_chunk(bounds: tuple[int, int]) -> list[Sample]:
    return _SIMULATOR.simulate(*bounds)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK_SIZE, n)) for start in range(0, n, CHUNK_SIZE)]


def generate_mock(config: MockConfig, progress: bool = True) -> Manifest:
    """Generate `config.n` objects of a suite into the dataset folder `config.out`; returns its manifest.

    With workers > 1 the workers are spawned processes: a calling script needs the usual
    `if __name__ == "__main__":` guard.
    """
    import multiprocessing

    from tqdm import tqdm

    import astrofm
    from astrofm.data.writer import DatasetWriter, WriterConfig

    path = resolve_suite_path(config.suite)
    suite = load_suite(path)
    provenance = {
        "generator": GENERATOR, "suite": suite.name, "domain": suite.domain, "suite_file": str(path),
        "suite_config": suite.to_dict(), "seed": config.seed, "n": config.n, "label_units": LABEL_UNITS,
        "astrofm_version": astrofm.__version__, **_library_versions(),
    }
    chunks = _chunks(config.n)
    workers = min(config.workers, len(chunks))
    writer_config = WriterConfig(shard_size=config.shard_size, overwrite=config.overwrite)
    with DatasetWriter(config.out, dataset_spec(suite), name=Path(config.out).name, provenance=provenance,
                       config=writer_config) as writer, \
            tqdm(total=config.n, unit="obj", desc=f"mock {suite.name}", disable=not progress) as bar:
        if workers <= 1:
            _init_worker(suite, config.seed)
            results = map(_run_chunk, chunks)
            _write_all(writer, results, bar)
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(suite, config.seed)) as pool:
                _write_all(writer, pool.imap(_run_chunk, chunks), bar)
    return writer.manifest


def _write_all(writer, results, bar) -> None:
    for samples in results:
        for sample in samples:
            writer.add(sample)
        bar.update(len(samples))


def _library_versions() -> dict[str, str]:
    import galsim
    import speclite

    return {"galsim_version": galsim.__version__, "speclite_version": speclite.__version__}

