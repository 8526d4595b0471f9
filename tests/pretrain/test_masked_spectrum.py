"""Masked-spectrum modelling: the hidden spans, that nothing hidden leaks to the encoder, the loss, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrofm.data.collate import collate_samples
from astrofm.data.format import DatasetSpec
from astrofm.data.manifest import load_manifest
from astrofm.models import ImageCNNEncoder, PhotometryEncoder, SpectrumEncoder
from pretrain.masked_spectrum import MaskedSpectrumConfig, MaskedSpectrumHead, span_mask
from pretrain.module import ContrastivePretrainer
from tests.pretrain.conftest import latent_sample


def latent_batch(dataset, n: int = 16, seed: int = 3):
    spec, rng = DatasetSpec(), np.random.default_rng(seed)
    return collate_samples([latent_sample(i, spec, rng) for i in range(n)], spec.modalities)


def normalised_encoder(dataset) -> SpectrumEncoder:
    torch.manual_seed(0)
    encoder = SpectrumEncoder()
    manifest = load_manifest(dataset).to_dict()
    encoder.set_statistics(manifest["modalities"]["spectrum"], manifest["statistics"]["spectrum"])
    return encoder


def test_spans_hide_about_the_asked_fraction_in_runs_and_repeat_with_a_seed():
    config = MaskedSpectrumConfig(weight=1.0, mask_fraction=0.3, span_pixels=160)
    hidden = span_mask(256, 3101, config, generator=torch.Generator().manual_seed(0))
    assert hidden.shape == (256, 3101) and hidden.dtype == torch.bool
    assert 0.25 < hidden.float().mean() < 0.35
    # Hidden pixels come in runs: a row changes state at most once per span, plus the edges.
    changes = (hidden[:, 1:] != hidden[:, :-1]).sum(1)
    assert int(changes.max()) <= 3101 // 160 + 2
    again = span_mask(256, 3101, config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hidden, again)


def test_the_encoder_never_reads_the_flux_it_is_asked_to_fill_in(latent_dataset):
    encoder = normalised_encoder(latent_dataset).eval()
    spectrum = latent_batch(latent_dataset)["spectrum"]
    hidden = span_mask(16, 3101, MaskedSpectrumConfig(weight=1.0), generator=torch.Generator().manual_seed(1))
    ivar = torch.where(hidden, torch.zeros_like(spectrum["ivar"]), spectrum["ivar"])
    other_flux = torch.where(hidden, torch.randn_like(spectrum["flux"]) * 100, spectrum["flux"])
    with torch.no_grad():
        pooled, patches = encoder({"flux": spectrum["flux"], "ivar": ivar}, return_patches=True)
        pooled2, patches2 = encoder({"flux": other_flux, "ivar": ivar}, return_patches=True)
    assert patches.shape == (16, encoder.config.n_patches, encoder.config.dim)
    assert torch.equal(pooled, pooled2) and torch.equal(patches, patches2)
    # Without return_patches the encoder gives the same pooled features as before.
    with torch.no_grad():
        assert torch.equal(encoder({"flux": spectrum["flux"], "ivar": ivar}), pooled)


def test_loss_scores_only_hidden_pixels_of_objects_with_spectra_and_trains_encoder_and_head(latent_dataset):
    encoder = normalised_encoder(latent_dataset)
    head = MaskedSpectrumHead(encoder, MaskedSpectrumConfig(weight=1.0))
    spectrum = latent_batch(latent_dataset)["spectrum"]
    hidden = span_mask(16, 3101, head.config, generator=torch.Generator().manual_seed(2))
    has = torch.ones(16, dtype=torch.bool)

    loss = head(encoder, spectrum, has, hidden)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert head.decode.weight.grad.abs().sum() > 0
    assert encoder.patch_embed.weight.grad.abs().sum() > 0

    with torch.no_grad():  # nothing hidden, or no object with a spectrum: nothing to score
        nothing_hidden = head(encoder, spectrum, has, torch.zeros_like(hidden))
        no_spectra = head(encoder, spectrum, torch.zeros_like(has), hidden)
    assert float(nothing_hidden) == 0.0 and float(no_spectra) == 0.0


def test_filling_in_spans_is_learned_on_a_fixed_batch(latent_dataset):
    encoder = normalised_encoder(latent_dataset)
    head = MaskedSpectrumHead(encoder, MaskedSpectrumConfig(weight=1.0))
    spectrum = latent_batch(latent_dataset, n=32)["spectrum"]
    has = torch.ones(32, dtype=torch.bool)
    hidden = span_mask(32, 3101, head.config, generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(100):
        loss = head(encoder, spectrum, has, hidden)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    # The latent spectra are 8 flat steps plus noise; the hidden steps can be inferred from the others.
    assert losses[-1] < 0.5 * losses[0], losses[::20]


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="mask_fraction"):
        MaskedSpectrumConfig(weight=1.0, mask_fraction=1.0)
    with pytest.raises(ValueError, match="weight"):
        MaskedSpectrumConfig(weight=-1.0)
    with pytest.raises(ValueError, match="span_pixels"):
        MaskedSpectrumConfig(span_pixels=0)
    with pytest.raises(ValueError, match="needs a spectrum encoder"):
        ContrastivePretrainer({"photometry": PhotometryEncoder(), "image": ImageCNNEncoder()},
                              masked_spectrum=MaskedSpectrumConfig(weight=1.0))


def test_the_head_belongs_to_training_not_to_the_model():
    module = ContrastivePretrainer({"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder()},
                                   embed_dim=32, masked_spectrum=MaskedSpectrumConfig(weight=0.5))
    assert module.masked_spectrum_head is not None
    assert not any("masked_spectrum" in name for name in module.model.state_dict())
    off = ContrastivePretrainer({"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder()}, embed_dim=32)
    assert off.masked_spectrum_head is None
