"""The driver and the CLI: determinism across worker counts, provenance, missing modalities, refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import astrofm
from astrofm.cli.main import main
from astrofm.data.reader import Dataset
from astrofm.sims import MockConfig, generate, generate_mock
from astrofm.sims.generate import Simulator
from astrofm.sims.suite import MissingConfig, load_suite


def shard_digests(manifest) -> list[tuple[str, str]]:
    return [(shard.path, shard.sha256) for shards in manifest.splits.values() for shard in shards]


@pytest.mark.slow
def test_same_seed_same_shards_whatever_the_worker_count(tmp_path, monkeypatch):
    config = MockConfig(n=24, out=str(tmp_path / "one"), seed=5, shard_size=8, workers=1)
    one = generate_mock(config, progress=False)  # one chunk of 24, in this process
    monkeypatch.setattr(generate, "CHUNK_SIZE", 7)  # four chunks over two spawned workers
    two = generate_mock(dataclasses.replace(config, out=str(tmp_path / "two"), workers=2), progress=False)
    assert shard_digests(one) == shard_digests(two)
    other = generate_mock(dataclasses.replace(config, out=str(tmp_path / "other"), seed=6), progress=False)
    assert {d for _, d in shard_digests(other)}.isdisjoint({d for _, d in shard_digests(one)})


def test_objects_do_not_depend_on_chunking(simulator):
    whole = simulator.simulate(0, 6)
    pieces = simulator.simulate(0, 2) + simulator.simulate(2, 6)
    for a, b in zip(whole, pieces, strict=True):
        assert a.id == b.id and a.labels == b.labels and a.modalities == b.modalities
        for modality in a.modalities:
            for name, array in getattr(a, modality).items():
                np.testing.assert_array_equal(array, getattr(b, modality)[name])


def test_manifest_provenance_ids_and_meta(tmp_path):
    manifest = generate_mock(MockConfig(suite="sim_slight", n=12, out=str(tmp_path / "d"), seed=3), progress=False)
    assert manifest.count() == 12
    prov = manifest.provenance
    assert prov["generator"] == "astrofm.sims" and prov["suite"] == "sim_slight"
    assert prov["seed"] == 3 and prov["n"] == 12 and prov["astrofm_version"] == astrofm.__version__
    assert prov["suite_config"] == load_suite("sim_slight").to_dict()
    assert json.loads(json.dumps(prov)) == prov
    samples = sorted(Dataset(tmp_path / "d").iter_samples(), key=lambda s: s.id)
    assert [s.id for s in samples] == [f"sim_slight-s3-{i:07d}" for i in range(12)]
    for sample in samples:
        assert sample.meta["survey"] == "mock" and sample.meta["suite"] == "sim_slight"
        assert sample.meta["domain"] == "simulated"
        for key in ("redshift", "log_stellar_mass", "abs_mag_r", "log_sfr", "log_ssfr", "sed_type", "galaxy_type",
                    "half_light_radius_arcsec", "sersic_index", "ellipticity", "dust_av", "halpha_ew"):
            assert key in sample.labels
        assert len(sample.modalities) >= 2
    assert set(manifest.spec.modalities) == {"spectrum", "photometry", "image"}


def test_the_truth_catalogue_is_the_generated_survey_without_pixels(tmp_path):
    manifest = generate_mock(MockConfig(suite="sim_slight", n=12, out=str(tmp_path / "d"), seed=3), progress=False)
    catalogue = generate.truth_catalogue(load_suite("sim_slight"), 12, seed=3, progress=False)
    samples = {s.id: s for s in Dataset(tmp_path / "d").iter_samples()}
    split_of = {s.id: split for split in manifest.splits for s in Dataset(tmp_path / "d").iter_samples(split)}
    assert sorted(catalogue["id"].tolist()) == sorted(samples) and len(catalogue["id"]) == 12
    for row, object_id in enumerate(catalogue["id"].tolist()):
        assert catalogue["split"][row] == split_of[object_id]  # the split the writer gave it
        labels = samples[object_id].labels
        assert set(labels) <= set(catalogue)
        for key, value in labels.items():  # the same objects, label for label
            assert catalogue[key][row].item() == value, key


def test_extra_filters_see_the_same_galaxies_and_an_unknown_one_is_named(simulator):
    catalogue = simulator.catalogue(0, 6, extra_filters=["decam2014-r", "decam2014-i"])
    # the survey's own r band through its own speclite curve: the same fluxes
    np.testing.assert_allclose(catalogue["flux_true_decam2014-r"], catalogue["flux_true_r"], rtol=1e-12)
    assert np.all(catalogue["flux_true_decam2014-i"] > 0)
    with pytest.raises(ValueError, match=r"suite observed: extra filters \['nope-x'\]"):
        simulator.catalogue(0, 2, extra_filters=["nope-x"])


def test_missing_fractions_follow_the_knobs():
    suite = dataclasses.replace(load_suite("observed"), missing_fraction=MissingConfig(0.3, 0.2, 0.1))
    simulator = Simulator(suite, seed=1)
    n = 200
    samples = []
    for start in range(0, n, 50):
        samples += simulator.simulate(start, start + 50)
    for modality, fraction in (("spectrum", 0.3), ("photometry", 0.2), ("image", 0.1)):
        missing = sum(getattr(s, modality) is None for s in samples)
        sigma = np.sqrt(n * fraction * (1 - fraction))
        assert abs(missing - n * fraction) < 4 * sigma, (modality, missing)
    assert all(len(s.modalities) == 2 or len(s.modalities) == 3 for s in samples)


def test_cli_writes_dataset_and_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "mock"
    argv = ["data", "mock", "--suite", "observed", "--n", "20", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(split["count"] for split in manifest["splits"].values()) == 20
    assert manifest["provenance"]["generator"] == "astrofm.sims"
    before = (out / "manifest.json").read_text()
    capsys.readouterr()
    assert main(argv) == 1
    assert "exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["provenance"]["seed"] == 1


def test_cli_unknown_suite_lists_the_available_ones(tmp_path, capsys):
    assert main(["data", "mock", "--suite", "nope", "--n", "5", "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "observed" in err and "sim_strong" in err
    assert not (tmp_path / "x").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="n must be"):
        MockConfig(n=0)
    with pytest.raises(ValueError, match="workers"):
        MockConfig(workers=0)


def test_importing_the_package_loads_no_heavy_simulation_library():
    import subprocess
    import sys

    code = ("import sys, astrofm.sims; "
            "print(sorted(m for m in ('galsim', 'speclite', 'astropy.cosmology') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_label_has_a_documented_unit(simulator):
    from astrofm.sims.generate import LABEL_UNITS

    sample = simulator.simulate(0, 1)[0]
    documented = {key.replace("{band}", band) for key in LABEL_UNITS for band in ("g", "r", "z", "W1", "W2")}
    assert set(sample.labels) <= documented


def test_a_griz_suite_renders_four_band_stamps_of_the_same_galaxies(simulator):
    griz = Simulator(load_suite("observed_griz"), seed=simulator.seed)
    assert griz.spec.image.bands == ["g", "r", "i", "z"]
    assert griz.spec.photometry.filters[2] == "decam2014-i" and len(griz.spec.photometry.bands) == 6
    reference = simulator.catalogue(0, 6)
    catalogue = griz.catalogue(0, 6)
    for key in ("redshift", "mag_r", "half_light_radius_arcsec", "flux_true_g", "flux_true_z", "psf_fwhm_r"):
        np.testing.assert_array_equal(catalogue[key], reference[key], err_msg=key)  # same galaxies, same seeing
    assert np.all(catalogue["flux_true_i"] > 0) and "psf_fwhm_i" in catalogue
    for sample in griz.simulate(0, 6):
        assert sample.id.startswith("observed_griz-s7-")
        if sample.image is not None:
            assert sample.image["flux"].shape == sample.image["ivar"].shape == (4, 32, 32)
        if sample.photometry is not None:
            assert sample.photometry["flux"].shape == (6,)
        assert sample.labels["psf_fwhm_i"] > 0 and sample.labels["flux_true_i"] > 0
