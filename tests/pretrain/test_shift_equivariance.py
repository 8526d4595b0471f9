"""Shift equivariance: the moved copies, the edges both lose, the loss, training, and the head's place."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from astrofm.data.manifest import load_manifest
from astrofm.models import ImageCNNEncoder, PhotometryEncoder, SpectrumEncoder
from pretrain.module import ContrastivePretrainer
from pretrain.shift_equivariance import (
    ShiftEquivarianceConfig,
    ShiftEquivarianceHead,
    draw_shifts,
    moved_copy,
)
from tests.pretrain.test_masked_spectrum import latent_batch

WAVE_MIN, WAVE_STEP, LENGTH = 3600.0, 2.0, 3101  # the DatasetSpec default grid


def _line_spectrum(wave_line: float) -> dict[str, torch.Tensor]:
    wave = WAVE_MIN + WAVE_STEP * torch.arange(LENGTH, dtype=torch.float64)
    flux = torch.exp(-0.5 * ((wave - wave_line) / 3.0) ** 2).float()[None]  # (1, L): one narrow line
    return {"flux": flux, "ivar": torch.ones_like(flux)}


@pytest.mark.parametrize("shift", [-0.05, -0.013, 0.0, 0.021, 0.05])
def test_a_move_puts_a_line_at_e_delta_times_its_wavelength_and_the_edges_do_not_tell_it(shift):
    copy = moved_copy(_line_spectrum(6000.0), torch.tensor([shift]), WAVE_MIN, WAVE_STEP, max_shift=0.05)
    peak = WAVE_MIN + WAVE_STEP * int(copy["flux"][0].argmax())
    assert abs(peak - 6000.0 * math.exp(shift)) <= WAVE_STEP
    # The pixels kept are the same for every move within max_shift: [3600 e^0.05, 9800 e^-0.05].
    wave = WAVE_MIN + WAVE_STEP * np.arange(LENGTH)
    expected = (wave >= WAVE_MIN * math.exp(0.05)) & (wave <= (WAVE_MIN + WAVE_STEP * (LENGTH - 1)) * math.exp(-0.05))
    assert np.array_equal(copy["ivar"][0].numpy() > 0, expected)
    assert torch.all(copy["flux"][0][~torch.from_numpy(expected)] == 0)


def test_shifts_are_uniform_within_the_bound():
    shifts = draw_shifts(20000, 0.05, generator=torch.Generator().manual_seed(0))
    assert shifts.abs().max() <= 0.05 and abs(float(shifts.mean())) < 0.002
    assert abs(float(shifts.abs().mean()) - 0.025) < 0.001


def test_the_loss_is_zero_for_an_equivariant_embedding_and_counts_only_scored_rows():
    torch.manual_seed(0)
    config = ShiftEquivarianceConfig(weight=1.0, max_shift=0.05, distance_per_shift=2.0)
    head = ShiftEquivarianceHead(8, config)
    w = (head.direction / head.direction.norm()).detach()
    base, first_shift, second_shift = torch.randn(6, 8), draw_shifts(6, 0.05), draw_shifts(6, 0.05)
    first = base + 2.0 * first_shift.float()[:, None] * w
    second = base + 2.0 * second_shift.float()[:, None] * w
    rows = torch.ones(6, dtype=torch.bool)
    assert head(first, second, first_shift, second_shift, rows).item() == pytest.approx(0, abs=1e-10)
    # An embedding that ignores the move scores (delta_b - delta_a)^2 / max_shift^2 per row.
    expected = float(((second_shift - first_shift) ** 2).mean() / 0.05 ** 2)
    assert head(base, base, first_shift, second_shift, rows).item() == pytest.approx(expected, rel=1e-5)
    bad = second.clone()
    bad[2] += 10 * w  # a wrong row that is not scored changes nothing
    partly = rows.clone()
    partly[2] = False
    assert head(first, bad, first_shift, second_shift, partly).item() == pytest.approx(0, abs=1e-10)
    none = head(base.requires_grad_(), base, first_shift, second_shift, torch.zeros(6, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad


def _module(dataset, **kwargs) -> ContrastivePretrainer:
    torch.manual_seed(0)
    module = ContrastivePretrainer({"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder()}, embed_dim=32,
                                   shift_equivariance=ShiftEquivarianceConfig(weight=1.0, **kwargs))
    module.model.set_statistics(load_manifest(dataset).to_dict())
    return module


def test_the_move_is_learned_on_a_fixed_batch(latent_dataset):
    module = _module(latent_dataset)
    batch = latent_batch(latent_dataset, n=32)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        loss = module._shift_equivariance_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    # The latent spectra are 8 flat steps: where the steps' edges fall tells the move. Unmoved, the loss is 2/3.
    start, end = np.mean(losses[:10]), np.mean(losses[-20:])
    assert start > 0.5 and end < 0.6 * start, losses[::10]


def test_the_term_is_logged_in_training_and_its_head_is_not_part_of_the_model(latent_dataset):
    module = _module(latent_dataset)
    assert module.shift_equivariance_head is not None
    assert not any("shift" in name for name in module.model.state_dict())
    assert "shift_equivariance_head.direction" in module.state_dict()  # in checkpoints, so a run resumes
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    module._stop_on_non_finite = lambda loss, parts: None  # no Trainer here
    loss = module.training_step(latent_batch(latent_dataset, n=8), 0)
    assert torch.isfinite(loss) and logged["train/loss/shift_equivariance"].item() > 0
    off = ContrastivePretrainer({"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder()}, embed_dim=32)
    assert off.shift_equivariance_head is None


def test_max_objects_gives_copies_to_the_first_objects_with_a_spectrum_only(latent_dataset):
    module = _module(latent_dataset, max_objects=3)
    seen = []
    module.model.encoders["spectrum"].register_forward_hook(lambda m, inputs, out: seen.append(out.shape[0]))
    batch = latent_batch(latent_dataset, n=8)
    batch["mask"]["spectrum"][:2] = False
    loss = module._shift_equivariance_loss(batch)
    assert seen == [6] and loss.item() > 0  # two copies of objects 2, 3 and 4
    batch["mask"]["spectrum"][:] = False
    empty = module._shift_equivariance_loss(batch)
    assert seen[-1] == 2 and empty.item() == 0 and empty.requires_grad


def test_bad_settings_are_refused_naming_the_field(latent_dataset):
    with pytest.raises(ValueError, match="shift_equivariance.weight"):
        ShiftEquivarianceConfig(weight=-1.0)
    with pytest.raises(ValueError, match="max_shift"):
        ShiftEquivarianceConfig(max_shift=0.7)
    with pytest.raises(ValueError, match="distance_per_shift"):
        ShiftEquivarianceConfig(distance_per_shift=0)
    with pytest.raises(ValueError, match="max_objects"):
        ShiftEquivarianceConfig(max_objects=0)
    with pytest.raises(ValueError, match="needs a spectrum encoder"):
        ContrastivePretrainer({"photometry": PhotometryEncoder(), "image": ImageCNNEncoder()},
                              shift_equivariance=ShiftEquivarianceConfig(weight=1.0))
    unnormalised = ContrastivePretrainer({"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder()},
                                         shift_equivariance=ShiftEquivarianceConfig(weight=1.0))
    with pytest.raises(ValueError, match="wavelength grid"):
        unnormalised._shift_equivariance_loss(latent_batch(latent_dataset, n=4))
