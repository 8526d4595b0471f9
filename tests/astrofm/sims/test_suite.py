"""Suite YAMLs: every shipped suite loads, the simulated ones deviate by exactly what they document,
and mistakes (unknown names, mistyped keys, bad values) fail with the file and key named."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from astrofm.sims.suite import SuiteConfig, SuiteError, list_suites, load_suite, resolve_suite_path, suite_dir

# The reference shift documented in configs/mock/observed.yaml; sim_* move these knobs by `deviation` x.
REFERENCE_SHIFT = {
    "morphology.size_log_re_at_m0": 0.03,
    "lines.emission_line_scale": 0.08,
    "population.early_type_fraction": 0.03,
    "dust.av_mean": 0.04,
    "observing.noise_scale": 0.04,
    "observing.psf_fwhm.g": 0.03,
    "observing.psf_fwhm.r": 0.03,
    "observing.psf_fwhm.z": 0.03,
}
METADATA = {"name", "domain", "description", "deviation"}


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_shipped_suite_loads_and_validates():
    names = list_suites()
    assert {"observed", "sim_slight", "sim_moderate", "sim_strong"} <= set(names)
    for name in names:
        suite = load_suite(name)
        assert suite.name == name
        assert suite.domain in ("observed", "simulated")
        raw = yaml.safe_load((suite_dir() / f"{name}.yaml").read_text())
        assert "name" in raw and "domain" in raw


def test_observed_yaml_spells_out_the_dataclass_defaults():
    assert load_suite("observed") == SuiteConfig()
    raw = flatten(yaml.safe_load((suite_dir() / "observed.yaml").read_text()))
    assert set(raw) == set(flatten(SuiteConfig().to_dict())), "observed.yaml must name every knob"


def test_observed_yaml_comments_every_knob():
    for line in (suite_dir() / "observed.yaml").read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            key = line.split(":")[0].strip()
            if key in ("name", "description", "bulge_fraction_scatter", "z_max", "spectrum", "photometry",
                       "image"):
                continue  # self-explanatory next to a commented neighbour
            assert "#" in line, f"observed.yaml: knob {key!r} has no comment"


@pytest.mark.parametrize("name", ["sim_slight", "sim_moderate", "sim_strong"])
def test_simulated_suites_differ_by_exactly_the_documented_shift(name):
    observed = flatten(load_suite("observed").to_dict())
    suite = load_suite(name)
    assert suite.domain == "simulated" and suite.deviation > 0
    simulated = flatten(suite.to_dict())
    changed = {key for key in observed if observed[key] != simulated[key]} - METADATA
    assert changed == set(REFERENCE_SHIFT)
    for key, step in REFERENCE_SHIFT.items():
        assert simulated[key] - observed[key] == pytest.approx(suite.deviation * step, abs=1e-9), key


def test_noise_free_suite_changes_only_the_noise():
    # the README's noise-share measurement rests on this: same physics, same PSF, 1% of the noise
    observed = flatten(load_suite("observed").to_dict())
    noise_free = flatten(load_suite("noise_free").to_dict())
    changed = {key for key in observed if observed[key] != noise_free[key]} - METADATA
    assert changed == {"observing.noise_scale"}
    assert noise_free["observing.noise_scale"] == pytest.approx(0.01)


def test_deviation_ordering_is_unambiguous():
    deviations = [load_suite(name).deviation for name in ("sim_slight", "sim_moderate", "sim_strong")]
    assert deviations == [1.0, 2.5, 5.0]


def test_mistyped_key_names_file_and_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\ndomain: simulated\nbase: observed\npopulation:\n  z00: 0.4\n")
    with pytest.raises(SuiteError) as error:
        load_suite(str(path))
    message = str(error.value)
    assert str(path) in message and "population.z00" in message and "z0" in message


def test_unknown_top_level_key_and_bad_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndomain: observed\nnoise: 2\n")
    with pytest.raises(SuiteError, match="unknown key 'noise'"):
        load_suite(str(path))
    path.write_text("name: bad\ndomain: observed\nbase: observed\ndust:\n  av_mean: lots\n")
    with pytest.raises(SuiteError, match="dust.av_mean.*must be a number"):
        load_suite(str(path))


def test_bad_values_are_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndomain: observed\nbase: observed\n"
                    "missing_fraction: {spectrum: 0.6, photometry: 0.5, image: 0.0}\n")
    with pytest.raises(SuiteError, match="missing_fraction"):
        load_suite(str(path))
    path.write_text("name: bad\ndomain: elsewhere\nbase: observed\n")
    with pytest.raises(SuiteError, match="domain"):
        load_suite(str(path))
    path.write_text("name: bad\ndomain: observed\nbase: observed\nobserving:\n  psf_fwhm: {u: 1.0}\n")
    with pytest.raises(SuiteError, match="psf_fwhm"):
        load_suite(str(path))


def test_unknown_suite_name_lists_available_suites():
    with pytest.raises(SuiteError) as error:
        load_suite("no_such_suite")
    assert "no_such_suite" in str(error.value)
    for name in ("observed", "sim_slight", "sim_strong"):
        assert name in str(error.value)


def test_missing_path_and_name_resolution(tmp_path):
    assert resolve_suite_path("observed") == suite_dir() / "observed.yaml"
    with pytest.raises(FileNotFoundError):
        load_suite(str(tmp_path / "nowhere.yaml"))


def test_user_suite_with_base_overrides_only_what_it_names(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ndomain: simulated\nbase: observed\nlines:\n  emission_line_scale: 2.0\n")
    suite = load_suite(str(path))
    assert suite.name == "mine" and suite.lines.emission_line_scale == 2.0
    assert suite.lines.velocity_dispersion == SuiteConfig().lines.velocity_dispersion
    assert suite.deviation == 0.0 and suite.description == ""


def test_griz_suite_adds_the_i_band_and_changes_nothing_else():
    observed = flatten(load_suite("observed").to_dict())
    griz = flatten(load_suite("observed_griz").to_dict())
    changed = {key for key in griz if observed.get(key) != griz[key]} - METADATA
    assert changed == {"observing.photometry_bands", "observing.image_bands", "observing.psf_fwhm.i",
                       "observing.sky_sigma.i", "observing.depth.i"}
    assert griz["observing.image_bands"] == ["g", "r", "i", "z"]
    assert griz["observing.photometry_bands"] == ["g", "r", "i", "z", "W1", "W2"]


def test_bright_griz_suite_is_the_griz_survey_cut_at_r_19_5():
    griz = flatten(load_suite("observed_griz").to_dict())
    bright = flatten(load_suite("bright_griz").to_dict())
    changed = {key for key in bright if griz.get(key) != bright[key]} - METADATA
    assert changed == {"population.mag_limit_r"} and bright["population.mag_limit_r"] == 19.5


def test_bright_griz_galaxies_are_all_brighter_than_its_limit():
    from astrofm.sims.generate import Simulator

    catalogue = Simulator(load_suite("bright_griz"), seed=3).catalogue(0, 40)
    assert catalogue["mag_r"].max() <= 19.5
    assert all(object_id.startswith("bright_griz-s3-") for object_id in catalogue["id"])


@pytest.mark.parametrize("name", ["observed", "observed_griz"])
def test_sky_noise_follows_the_depth_over_the_psf_area(name):
    # observed.yaml's derivation: sigma_pixel = (5-sigma depth flux / 5) / sqrt(4 pi sigma_psf^2), per band
    o = load_suite(name).observing
    for band in o.image_bands:
        sigma_psf_pixels = o.psf_fwhm[band] / 2.3548 / 0.262
        expected = 10 ** (-0.4 * (o.depth[band] - 22.5)) / 5 / np.sqrt(4 * np.pi * sigma_psf_pixels ** 2)
        assert o.sky_sigma[band] == pytest.approx(expected, rel=0.01), band


@pytest.mark.parametrize("observing, match", [
    ("photometry_bands: [g, r, u, z, W1, W2]", r"photometry_bands' has unknown band\(s\) \['u'\]"),
    ("photometry_bands: [g, z, r, W1, W2]", "photometry_bands' must list distinct bands from blue to red"),
    ("image_bands: [g, r, r]", "image_bands' must list distinct bands"),
    ("image_bands: [g, r, W3]", r"unknown band\(s\) \['W3'\]"),
    ("photometry_bands: [g, r, i, z, W1, W2]\n  image_bands: [g, r, i, z]", r"psf_fwhm' must give exactly the bands of observing.image_bands"),
    ("image_bands: [g, r, z, W1]\n  psf_fwhm: {W1: 6.0}\n  sky_sigma: {W1: 0.1}", None),
    ("photometry_bands: [g, z, W1, W2]\n  image_bands: [g, z]", "must contain r"),
    ("photometry_bands: [g, r, z, W1]\n  image_bands: [g, r, z, W2]", r"image_bands' bands \['W2'\] are not in"),
])
def test_band_lists_are_checked(tmp_path, observing, match):
    path = tmp_path / "bands.yaml"
    path.write_text(f"name: bands\ndomain: observed\nbase: observed\nobserving:\n  {observing}\n")
    if match is None:  # W1 stamps are allowed when their PSF and sky noise are given
        assert load_suite(str(path)).observing.image_bands == ["g", "r", "z", "W1"]
        return
    with pytest.raises(SuiteError, match=match) as error:
        load_suite(str(path))
    assert str(path) in str(error.value)
