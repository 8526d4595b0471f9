"""Encoders: output shapes, masked inputs truly ignored, normalisation from the manifest statistics."""

from __future__ import annotations

import copy

import pytest
import torch

from astrofm.models.image import (
    ApertureFluxes,
    ImageCNNEncoder,
    ImageCNNEncoderConfig,
    ImageViTEncoder,
    ImageViTEncoderConfig,
)
from astrofm.models.photometry import PhotometryEncoder, PhotometryEncoderConfig
from astrofm.models.spectrum import SpectrumEncoder, SpectrumEncoderConfig
from tests.astrofm.models.helpers import SPEC, tiny_encoders

CONFIG_CLASSES = [SpectrumEncoderConfig, PhotometryEncoderConfig, ImageViTEncoderConfig, ImageCNNEncoderConfig]


def _encoder(modality: str, image: str = "cnn", manifest: dict | None = None):
    encoder = tiny_encoders(image)[modality].eval()
    if manifest is not None:
        encoder.set_statistics(manifest["modalities"][modality], manifest["statistics"][modality])
    return encoder


@pytest.mark.parametrize("modality,image", [("spectrum", "cnn"), ("photometry", "cnn"), ("image", "cnn"),
                                            ("image", "cnn_apertures"), ("image", "vit"),
                                            ("image", "vit_apertures")])
def test_each_encoder_gives_batch_by_output_dim(modality, image, manifest, batch):
    encoder = _encoder(modality, image, manifest)
    out = encoder(batch[modality])
    assert out.shape == (4, encoder.output_dim) and torch.isfinite(out).all()
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("options", [{}, {"per_object_scale": False, "noise_channel": False,
                                          "positions": "sinusoidal"}])
def test_spectrum_ignores_flux_where_ivar_is_zero(pool, options, manifest, batch):
    torch.manual_seed(1)
    config = SpectrumEncoderConfig.for_spec(SPEC["spectrum"], pool=pool, **options)
    encoder = SpectrumEncoder(config).eval()
    encoder.set_statistics(manifest["modalities"]["spectrum"], manifest["statistics"]["spectrum"])
    inputs = copy.deepcopy(batch["spectrum"])
    inputs["ivar"][0, 3:57] = 0.0  # several whole patches of object 0
    inputs["ivar"][1, ::7] = 0.0  # scattered pixels of object 1
    inputs["ivar"][2] = 0.0  # all of object 2
    before = encoder(inputs)
    changed = copy.deepcopy(inputs)
    masked = changed["ivar"] == 0
    changed["flux"][masked] = torch.randn(int(masked.sum())) * 1e4
    changed["flux"][2, :5] = float("nan")
    after = encoder(changed)
    assert torch.equal(before, after)
    assert torch.isfinite(after).all()  # a spectrum with no valid pixel still embeds
    changed["flux"][1, 1] += 5.0  # a valid pixel does count
    assert not torch.equal(encoder(changed)[1], before[1])


def test_photometry_ignores_masked_bands_and_empty_rows(manifest, batch):
    encoder = _encoder("photometry", manifest=manifest)
    inputs = copy.deepcopy(batch["photometry"])
    inputs["flux_err"][0, 1] = 0.0  # band r of object 0 missing
    inputs["flux"][1] = 0.0  # object 1 without photometry: an all-zero row, as collate builds it
    inputs["flux_err"][1] = 0.0
    before = encoder(inputs)
    changed = copy.deepcopy(inputs)
    changed["flux"][0, 1] = 1e6
    changed["flux"][1] = torch.tensor([float("nan"), -3.0])
    after = encoder(changed)
    assert torch.equal(before, after) and torch.isfinite(after).all()
    changed["flux"][0, 0] += 3.0
    assert not torch.equal(encoder(changed)[0], before[0])


@pytest.mark.parametrize("image", ["cnn", "cnn_apertures", "vit", "vit_apertures"])
def test_image_ignores_pixels_where_ivar_is_zero(image, manifest, batch):
    encoder = _encoder("image", image, manifest)
    inputs = copy.deepcopy(batch["image"])
    inputs["ivar"][0, :, 2:5, 2:5] = 0.0
    inputs["ivar"][1, 2] = 0.0  # a whole band
    before = encoder(inputs)
    changed = copy.deepcopy(inputs)
    masked = changed["ivar"] == 0
    changed["flux"][masked] = torch.randn(int(masked.sum())) * 1e3
    assert torch.equal(before, encoder(changed))
    changed["flux"][0, 0, 0, 0] += 10.0
    assert not torch.equal(encoder(changed)[0], before[0])


def test_aperture_sums_by_hand():
    """Radii about the centre of an 8-pixel stamp (centre 3.5, 3.5): the central 2x2 lie 0.71 px away, the
    next ring out 1.58 px, a corner 4.95 px."""
    apertures = ApertureFluxes(n_bands=2, image_size=8, radii=(1.0, 2.0, 4.0), out_dim=4)
    flux = torch.zeros(1, 2, 8, 8)
    flux[0, 0, 3, 4] = 1.0  # central: in every aperture
    flux[0, 0, 2, 5] = 10.0  # 2.12 px: outside radius 2, inside 4
    flux[0, 1, 3, 5] = 100.0  # 1.58 px: inside radius 2 and 4
    flux[0, 1, 0, 0] = 1000.0  # a corner: in none
    assert apertures.sums(flux).tolist() == [[[1.0, 1.0, 11.0], [0.0, 100.0, 100.0]]]
    assert apertures.masks.sum(dim=(1, 2)).tolist() == [4.0, 12.0, 52.0]  # pixels per aperture


@pytest.mark.parametrize("image", ["cnn", "vit"])
def test_aperture_branch_widens_the_output_and_turns_with_the_stamp(image, manifest, batch):
    plain, with_apertures = _encoder("image", image, manifest), _encoder("image", f"{image}_apertures", manifest)
    assert with_apertures.output_dim == plain.output_dim + with_apertures.config.aperture_dim
    inputs = batch["image"]
    flux = with_apertures.linear_flux(inputs)
    turned = torch.rot90(flux, 1, dims=(2, 3)).flip(3)  # apertures about the centre see any rotation or flip alike
    assert torch.allclose(with_apertures.apertures.sums(turned), with_apertures.apertures.sums(flux), atol=1e-5)
    bright = {**inputs, "flux": inputs["flux"].clone()}
    bright["flux"][0, 1, 3:5, 3:5] += 50.0  # more central flux in one band: the branch's output moves
    head = slice(plain.output_dim, None)
    assert not torch.allclose(with_apertures(bright)[0, head], with_apertures(inputs)[0, head])
    config_class = type(with_apertures.config)
    with pytest.raises(ValueError, match=r"aperture_radii \[5.0\] must lie in \(0, image_size / 2 = 4.0\]"):
        config_class(image_size=8, aperture_radii=(5.0,))


def test_image_without_ivar_is_unit_weight(batch):
    encoder = _encoder("image")
    inputs = batch["image"]
    assert torch.equal(encoder({"flux": inputs["flux"]}), encoder({**inputs, "ivar": torch.ones_like(inputs["flux"])}))


def test_buffers_start_as_identity_and_follow_set_statistics(manifest):
    stats = manifest["statistics"]
    for modality, image in [("spectrum", "cnn"), ("photometry", "cnn"), ("image", "cnn"), ("image", "vit")]:
        encoder = _encoder(modality, image)
        assert torch.all(encoder.flux_median == 0) and torch.all(encoder.flux_scale == 1)
        encoder.set_statistics(manifest["modalities"][modality], stats[modality])
        expected = torch.tensor(stats[modality]["flux_median"], dtype=torch.float32)
        assert torch.equal(encoder.flux_median, expected)
        assert torch.equal(encoder.flux_scale, torch.tensor(stats[modality]["flux_scale"], dtype=torch.float32))
        state = encoder.state_dict()
        assert torch.equal(state["flux_median"], expected) and "flux_scale" in state
    spectrum = _encoder("spectrum", manifest=manifest)
    assert spectrum.noise_median.item() == pytest.approx(stats["spectrum"]["noise_median"])


def test_statistics_change_the_embedding(manifest, batch):
    encoder = _encoder("spectrum", manifest=manifest)
    before = encoder(batch["spectrum"])
    shifted = copy.deepcopy(manifest["statistics"]["spectrum"])
    shifted["flux_scale"] *= 3.0
    encoder.set_statistics(manifest["modalities"]["spectrum"], shifted)
    assert not torch.allclose(before, encoder(batch["spectrum"]))


def test_shape_mismatches_raise_clear_errors(manifest):
    spec, stats = manifest["modalities"], manifest["statistics"]
    four_bands = ImageCNNEncoder(ImageCNNEncoderConfig(n_bands=4, image_size=8))
    with pytest.raises(ValueError, match="image has 3 bands .* encoder expects 4"):
        four_bands.set_statistics(spec["image"], stats["image"])
    with pytest.raises(ValueError, match="stamps are 8 px but the encoder expects 32 px"):
        ImageViTEncoder(ImageViTEncoderConfig()).set_statistics(spec["image"], stats["image"])
    with pytest.raises(ValueError, match="spectrum has 100 pixels but the encoder expects 3101"):
        SpectrumEncoder().set_statistics(spec["spectrum"], stats["spectrum"])
    with pytest.raises(ValueError, match="photometry has 2 bands .* encoder expects 5"):
        PhotometryEncoder().set_statistics(spec["photometry"], stats["photometry"])
    photometry = _encoder("photometry")
    bad = {**stats["photometry"], "flux_median": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match="'flux_median' has 3 values but the encoder expects 2 bands"):
        photometry.set_statistics(spec["photometry"], bad)
    with pytest.raises(ValueError, match="must be positive"):
        photometry.set_statistics(spec["photometry"], {**stats["photometry"], "flux_scale": [1.0, 0.0]})
    with pytest.raises(ValueError, match="lack 'flux_median' .*count is 0"):
        _encoder("spectrum").set_statistics(spec["spectrum"], {"count": 0})
    with pytest.raises(ValueError, match=r"expected \(B, 100\)"):
        _encoder("spectrum")({"flux": torch.zeros(2, 99), "ivar": torch.ones(2, 99)})


@pytest.mark.parametrize("config_class", CONFIG_CLASSES)
def test_presets_and_config_round_trip(config_class):
    tiny = config_class.preset("tiny")
    assert tiny == config_class()  # the default is the tiny size
    for name in ("small", "base"):
        config = config_class.preset(name)
        assert config_class.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config_class.preset("huge")
    with pytest.raises(ValueError, match="unknown fields"):
        config_class.from_dict({"no_such_field": 1})


def test_spectrum_patches_cover_every_pixel():
    config = SpectrumEncoderConfig(n_pixels=3101, patch_size=20, patch_stride=10)
    assert config.n_patches == 310 and config.padded_length >= 3101
    assert SpectrumEncoderConfig().n_patches == 78  # tiny: 40 pixels every 40
    with pytest.raises(ValueError, match="patch_stride"):
        SpectrumEncoderConfig(patch_size=10, patch_stride=20)
