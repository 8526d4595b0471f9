"""Redshifted hard negatives: the copy is the same spectrum at another redshift, the view loses a matching
edge, and the term trains the spectrum encoder to tell the two apart."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from astrofm.data.collate import collate_samples
from astrofm.data.format import DatasetSpec
from astrofm.data.manifest import load_manifest
from pretrain.datamodule import ShardDataModule
from pretrain.masked_spectrum import MaskedSpectrumConfig
from pretrain.redshift_negatives import (
    RedshiftNegativesConfig,
    draw_shifts,
    hard_negative_loss,
    redshifted,
    view_target,
    without_edge,
)
from tests.pretrain.conftest import latent_sample
from tests.pretrain.test_module import tiny_module

WAVE_MIN, WAVE_STEP, LENGTH = 3600.0, 2.0, 3101


def _spectrum_with_a_line(batch: int, line_wave: float) -> dict[str, torch.Tensor]:
    wave = WAVE_MIN + WAVE_STEP * torch.arange(LENGTH, dtype=torch.float64)
    flux = torch.randn(batch, LENGTH, dtype=torch.float64) * 0.1
    flux[:, int(round((line_wave - WAVE_MIN) / WAVE_STEP))] = 50.0
    ivar = (1.0 + wave / 1e4).repeat(batch, 1)  # distinct per pixel, so a moved ivar can be traced
    return {"flux": flux, "ivar": ivar}


def test_a_redshifted_copy_moves_a_line_by_the_factor_and_invalidates_the_edge_it_lost():
    spectrum = _spectrum_with_a_line(2, 6564.6)
    shift = torch.tensor([0.05, -0.05], dtype=torch.float64)
    copy = redshifted(spectrum, shift, WAVE_MIN, WAVE_STEP)
    wave = WAVE_MIN + WAVE_STEP * np.arange(LENGTH)
    for row, delta in enumerate(shift.tolist()):
        peak = wave[int(copy["flux"][row].argmax())]
        assert peak == pytest.approx(6564.6 * math.exp(delta), abs=WAVE_STEP)
    # Moved redward, the blue end has no source; moved blueward, the red end.
    blue_lost = WAVE_MIN * (math.exp(0.05) - 1) / WAVE_STEP
    assert bool((copy["ivar"][0, :int(blue_lost) - 1] == 0).all()) and float(copy["ivar"][0, -1]) > 0
    assert bool((copy["ivar"][1, -100:] == 0).all()) and float(copy["ivar"][1, 0]) > 0
    # Nearest pixel, not interpolation: every value is one of the row's own, unsmoothed.
    valid = copy["ivar"][0] > 0
    assert set(copy["flux"][0][valid].tolist()) <= set(spectrum["flux"][0].tolist())


def test_the_second_view_loses_the_same_edge_as_a_copy_with_that_shift_and_keeps_its_flux():
    spectrum = _spectrum_with_a_line(3, 5008.2)
    shift = torch.tensor([0.02, -0.08, 0.005], dtype=torch.float64)
    trimmed = without_edge(spectrum, shift, WAVE_MIN, WAVE_STEP)
    copy = redshifted(spectrum, shift, WAVE_MIN, WAVE_STEP)
    assert torch.equal(trimmed["ivar"] == 0, copy["ivar"] == 0)
    assert torch.equal(trimmed["flux"], spectrum["flux"])
    assert 0 < int((trimmed["ivar"][2] == 0).sum()) < int((trimmed["ivar"][1] == 0).sum())


def test_shifts_are_log_uniform_within_the_bounds_with_both_signs_and_seeded():
    config = RedshiftNegativesConfig(weight=1.0, min_shift=0.01, max_shift=0.1)
    shifts = draw_shifts(4000, config, generator=torch.Generator().manual_seed(0))
    magnitude = shifts.abs()
    assert float(magnitude.min()) >= 0.01 and float(magnitude.max()) <= 0.1
    assert 0.45 < float((shifts > 0).float().mean()) < 0.55
    # Log-uniform: the geometric middle splits the draws in half.
    assert 0.45 < float((magnitude < math.sqrt(0.01 * 0.1)).float().mean()) < 0.55
    again = draw_shifts(4000, config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifts, again)


def test_the_loss_is_low_when_the_view_is_nearer_than_the_copy_and_skips_objects_without_a_spectrum():
    anchor = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    far = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    rows = torch.tensor([True, True, True, False])
    scale = torch.tensor(20.0)
    easy = hard_negative_loss(anchor, anchor, -anchor, rows, scale)
    hard = hard_negative_loss(anchor, -anchor, anchor, rows, scale)
    assert float(easy) < 1e-6 < math.log(2) < float(hard)
    assert float(hard_negative_loss(anchor, far, far, rows, scale)) == pytest.approx(math.log(2))
    none = hard_negative_loss(anchor.requires_grad_(), far, far, torch.zeros(4, dtype=torch.bool), scale)
    assert float(none.detach()) == 0.0
    none.backward()  # still in the graph, as DDP needs


def test_with_a_shift_scale_the_loss_is_lowest_where_similarity_falls_linearly_with_the_shift():
    config = RedshiftNegativesConfig(weight=1.0, shift_scale=0.01)
    shift = torch.tensor([0.005, -0.02])
    target = view_target(shift, config)
    assert torch.allclose(target, torch.sigmoid(torch.tensor([0.5, 2.0])))
    assert view_target(shift, RedshiftNegativesConfig(weight=1.0)) is None
    # Unit vectors in a plane: a . p = 1 and a . n = cos(theta), so the logit gap is scale * (1 - cos theta).
    anchor = torch.tensor([[1.0, 0.0]])
    rows, scale = torch.tensor([True]), torch.tensor(10.0)
    for row in range(2):
        thetas = torch.linspace(0.0, 1.5, 1501)
        losses = [float(hard_negative_loss(anchor, anchor, torch.stack([torch.cos(t), torch.sin(t)])[None], rows,
                                           scale, target[row:row + 1])) for t in thetas]
        best_gap = float(scale * (1 - torch.cos(thetas[int(np.argmin(losses))])))
        assert best_gap == pytest.approx(abs(float(shift[row])) / 0.01, rel=0.02)


def test_the_config_is_checked():
    with pytest.raises(ValueError, match="weight must be >= 0"):
        RedshiftNegativesConfig(weight=-1.0)
    with pytest.raises(ValueError, match="min_shift <= max_shift"):
        RedshiftNegativesConfig(weight=1.0, min_shift=0.2, max_shift=0.1)
    with pytest.raises(ValueError, match="shift_scale must be positive"):
        RedshiftNegativesConfig(weight=1.0, shift_scale=0.0)
    with pytest.raises(ValueError, match="ln\\(1 \\+ z\\)"):
        RedshiftNegativesConfig(weight=1.0, max_shift=1.5)
    with pytest.raises(ValueError, match="needs a spectrum self view"):
        tiny_module(redshift_negatives=RedshiftNegativesConfig(weight=1.0))


@pytest.mark.parametrize("masked_view", [False, True])
def test_a_training_step_scores_the_copies_and_trains_the_spectrum_encoder(latent_dataset, tmp_path, masked_view):
    torch.manual_seed(0)
    masked = MaskedSpectrumConfig(weight=1.0, self_view=True) if masked_view else None
    module = tiny_module(self_views=("spectrum",), masked_spectrum=masked,
                         redshift_negatives=RedshiftNegativesConfig(weight=1.0))
    seen: list[torch.Tensor] = []
    module.model.encoders["spectrum"].register_forward_pre_hook(lambda _, args: seen.append(args[0]["ivar"].clone()))
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=ShardDataModule(str(latent_dataset), batch_size=16, num_workers=0,
                                                   samples_per_epoch=16))
    metrics = trainer.callback_metrics
    assert 0.0 < float(metrics["train/loss/redshift_negatives"]) < 10.0
    # The batch, its second view, the copies: the batch is whole, view and copies each lack an edge.
    assert len(seen) == 3
    assert float((seen[0] == 0).float().mean()) == 0.0
    for ivar in seen[1:]:
        lost_an_edge = (ivar[:, 0] == 0) | (ivar[:, -1] == 0)
        assert bool(lost_an_edge.all())


def test_the_term_reaches_the_spectrum_encoder_and_head_but_not_the_temperature(latent_dataset):
    torch.manual_seed(0)
    module = tiny_module(self_views=("spectrum",), redshift_negatives=RedshiftNegativesConfig(weight=1.0))
    module.model.set_statistics(load_manifest(latent_dataset).to_dict())
    spec, rng = DatasetSpec(), np.random.default_rng(4)
    batch = collate_samples([latent_sample(i, spec, rng) for i in range(16)], spec.modalities)
    first = module.model(batch)["spectrum"]
    second = module.model(module._without_edge(batch))["spectrum"]
    loss = module._redshift_negative_loss(batch, first, second)
    assert 0.0 < float(loss) < 10.0
    loss.backward()
    for name, part in [("encoder", module.model.encoders["spectrum"]), ("head", module.model.heads["spectrum"])]:
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name
    assert module.model.logit_scale.grad is None


def test_without_the_dataset_grid_the_term_says_what_it_needs():
    module = tiny_module(self_views=("spectrum",), redshift_negatives=RedshiftNegativesConfig(weight=1.0))
    spec, rng = DatasetSpec(), np.random.default_rng(5)
    batch = collate_samples([latent_sample(i, spec, rng) for i in range(4)], spec.modalities)
    with pytest.raises(ValueError, match="wavelength grid.*set_statistics"):
        module._without_edge(batch)
