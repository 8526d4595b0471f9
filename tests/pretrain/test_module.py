"""The training loop's pieces in-process: overfitting, the non-finite stop, the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import replace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from astrofm.augment import AugmentConfig
from astrofm.data.collate import collate_samples
from astrofm.data.format import DatasetSpec
from astrofm.data.manifest import load_manifest
from astrofm.losses import MultiModalContrastiveLoss
from astrofm.models import ImageCNNEncoder, PhotometryEncoder, SpectrumEncoder
from pretrain.callbacks import RunCheckpoint
from pretrain.datamodule import ShardDataModule
from pretrain.masked_spectrum import MaskedSpectrumConfig
from pretrain.module import ContrastivePretrainer, NonFiniteLossError
from pretrain.optim import OptimizerConfig, warmup_cosine
from tests.pretrain.conftest import latent_sample


def tiny_module(**kwargs) -> ContrastivePretrainer:
    encoders = {"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder(), "image": ImageCNNEncoder()}
    return ContrastivePretrainer(encoders, embed_dim=32, **kwargs)


def test_a_tiny_fixed_batch_is_overfitted(latent_dataset):
    torch.manual_seed(0)
    module = tiny_module(use_augmentations=False)
    module.model.set_statistics(load_manifest(latent_dataset).to_dict())
    spec, rng = DatasetSpec(), np.random.default_rng(1)
    batch = collate_samples([latent_sample(i, spec, rng) for i in range(16)], spec.modalities)
    loss_fn = MultiModalContrastiveLoss()
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    for _ in range(220):
        loss, parts = loss_fn(module.model(batch), batch["mask"], module.model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Three pairs start near ln(16) = 2.77 each; a memorised batch scores each pair far below that.
    assert len(parts) == 3
    assert all(float(value) < 0.1 * math.log(16) for value in parts.values()), parts


def test_fewer_than_two_encoders_is_refused():
    with pytest.raises(ValueError, match="at least two modalities"):
        ContrastivePretrainer({"spectrum": SpectrumEncoder()})


# The message reads the loss without torch's warning about converting a tensor that requires grad.
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad")
def test_a_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
        latent_dataset, tmp_path, monkeypatch):
    module = tiny_module()
    real_forward = MultiModalContrastiveLoss.forward

    def poisoned(self, embeddings, masks, logit_scale, gather=True):
        total, parts = real_forward(self, embeddings, masks, logit_scale, gather)
        return (total * float("nan"), parts) if module.global_step >= 3 else (total, parts)

    monkeypatch.setattr(MultiModalContrastiveLoss, "forward", poisoned)
    checkpoints = RunCheckpoint(every_n_train_steps=1, save_last=True, monitor=None)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=10, accelerator="cpu", devices=1, logger=False,
                         callbacks=[checkpoints], enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    data = ShardDataModule(str(latent_dataset), batch_size=16, num_workers=0, samples_per_epoch=160)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 0, step 3.*last.ckpt"):
        trainer.fit(module, datamodule=data)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    config = OptimizerConfig(warmup_steps=10, min_lr_ratio=0.1)
    factors = [warmup_cosine(step, config.warmup_steps, 110, config.min_lr_ratio) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.55, abs=0.01)
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_the_cosine_follows_the_clock_when_the_time_limit_comes_first():
    # Halfway through the time limit but only a tenth through the steps: the cosine is at its middle.
    assert warmup_cosine(20, 10, 110, 0.0, time_fraction=0.5) == pytest.approx(0.5)
    assert warmup_cosine(20, 10, 110, 0.1, time_fraction=1.0) == pytest.approx(0.1)
    assert warmup_cosine(5, 10, 110, 0.1, time_fraction=0.9) == pytest.approx(0.6)  # warm-up is by steps
    assert warmup_cosine(100, 10, 110, 0.0, time_fraction=0.1) == pytest.approx(warmup_cosine(100, 10, 110, 0.0))


@pytest.mark.parametrize("anneal_by_time", [True, False])
def test_a_run_capped_by_time_ends_at_the_floor_learning_rate(latent_dataset, tmp_path, anneal_by_time):
    config = OptimizerConfig(lr=1e-3, warmup_steps=1, min_lr_ratio=0.05, anneal_by_time=anneal_by_time)
    module = tiny_module(optimizer=config)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1000, max_time={"seconds": 4}, accelerator="cpu",
                         devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    data = ShardDataModule(str(latent_dataset), batch_size=16, num_workers=0, samples_per_epoch=32)
    trainer.fit(module, datamodule=data)
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    planned = trainer.estimated_stepping_batches
    assert trainer.global_step < 0.5 * planned  # the clock, not the step count, ended the run
    if anneal_by_time:
        # Near the floor (5e-5); the bound leaves room for slow steps when other work shares the cores
        # (the last step can start a few tenths of the limit early), yet sits far below the 0.9 peak below.
        assert final_lr < 1e-3 * 0.3
    else:
        assert final_lr > 1e-3 * 0.9  # still near the peak: the cosine had barely begun


def test_self_view_term_matches_a_spectrum_with_a_new_noise_draw_of_itself(latent_dataset):
    torch.manual_seed(0)
    module = tiny_module(self_views=("spectrum",), self_view_weight=0.5)
    module.model.set_statistics(load_manifest(latent_dataset).to_dict())
    spec, rng = DatasetSpec(), np.random.default_rng(2)
    batch = collate_samples([latent_sample(i, spec, rng) for i in range(16)], spec.modalities)
    first = module.model(batch)["spectrum"]
    loss, parts = module._self_view_loss(batch, "spectrum", first)
    assert list(parts) == ["spectrum-spectrum_view"]
    assert 0.0 < loss.item() < 2 * math.log(16)  # an untrained InfoNCE over 16 objects, not a trivial 0
    loss.backward()
    spectrum_grads = [p.grad for p in module.model.encoders["spectrum"].parameters() if p.grad is not None]
    assert spectrum_grads and any(float(g.abs().sum()) > 0 for g in spectrum_grads)
    assert all(p.grad is None for p in module.model.encoders["image"].parameters())


def test_self_views_need_an_encoder_and_an_augmentation_that_makes_a_second_view():
    with pytest.raises(ValueError, match="no such encoder"):
        tiny_module(self_views=("radio",))
    with pytest.raises(ValueError, match="second view would equal the first"):
        tiny_module(self_views=("spectrum",), use_augmentations=False)
    still_images = AugmentConfig(image_rot90=False, image_flip=False)
    with pytest.raises(ValueError, match="second view would equal the first"):
        tiny_module(self_views=("image",), augment=still_images)
    # A new noise draw alone makes a second view of a stamp.
    assert tiny_module(self_views=("image",), augment=replace(still_images, image_noise=True)).self_views == ("image",)


def test_a_python_fit_with_image_noise_refuses_stamps_stored_without_ivar(no_ivar_dataset, tmp_path):
    # The command line refuses it before building anything; a fit from Python is stopped at setup.
    module = tiny_module(augment=AugmentConfig(image_noise=True))
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    data = ShardDataModule(str(no_ivar_dataset), batch_size=16, num_workers=0, samples_per_epoch=32)
    with pytest.raises(ValueError, match=r"no_ivar/manifest.json: field 'optional_array_counts' says 0 of"):
        trainer.fit(module, datamodule=data)
    assert module.global_step == 0


def _count_spectrum_passes(module) -> list[torch.Tensor]:
    """Records the ivar of every spectrum the encoder reads (one entry per forward pass)."""
    seen: list[torch.Tensor] = []
    module.model.encoders["spectrum"].register_forward_pre_hook(lambda _, args: seen.append(args[0]["ivar"].clone()))
    return seen


@pytest.mark.parametrize("shared, passes", [(False, 3), (True, 2)])
def test_the_masked_spectrum_can_serve_as_the_self_view_in_one_pass(latent_dataset, tmp_path, shared, passes):
    torch.manual_seed(0)
    module = tiny_module(self_views=("spectrum",), masked_spectrum=MaskedSpectrumConfig(weight=1.0, self_view=shared))
    seen = _count_spectrum_passes(module)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=ShardDataModule(str(latent_dataset), batch_size=16, num_workers=0,
                                                   samples_per_epoch=16))
    # Plain: the batch, its noise-redrawn self view, its masked copy. Shared: the batch, one masked view.
    assert len(seen) == passes
    hidden_in_last = (seen[-1] == 0).float().mean()
    assert 0.1 < float(hidden_in_last) < 0.6  # the last pass is the masked one: ~30% of pixels hidden
    assert float((seen[0] == 0).float().mean()) == 0.0  # the latent spectra have no bad pixels
    metrics = trainer.callback_metrics
    assert "train/loss/masked_spectrum" in metrics and "train/loss/spectrum-spectrum_view" in metrics


def test_the_shared_masked_view_trains_the_encoder_the_heads_and_the_decoder(latent_dataset):
    torch.manual_seed(0)
    module = tiny_module(self_views=("spectrum",), masked_spectrum=MaskedSpectrumConfig(weight=1.0, self_view=True))
    module.model.set_statistics(load_manifest(latent_dataset).to_dict())
    spec, rng = DatasetSpec(), np.random.default_rng(3)
    batch = collate_samples([latent_sample(i, spec, rng) for i in range(16)], spec.modalities)
    first = module.model(batch)["spectrum"]
    masked_loss, view_loss, parts = module._masked_self_view_loss(batch, first)
    assert list(parts) == ["spectrum-spectrum_view"]
    assert masked_loss.item() > 0 and 0.0 < view_loss.item() < 2 * math.log(16)
    (masked_loss + view_loss).backward()
    for name, part in [("decoder", module.masked_spectrum_head), ("head", module.model.heads["spectrum"]),
                       ("encoder", module.model.encoders["spectrum"])]:
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), name


def test_the_shared_view_is_ignored_unless_both_terms_are_on():
    only_masked = tiny_module(masked_spectrum=MaskedSpectrumConfig(weight=1.0, self_view=True))
    assert not only_masked._masked_view_is_self_view("spectrum")
    only_view = tiny_module(self_views=("spectrum",), masked_spectrum=MaskedSpectrumConfig(weight=0.0, self_view=True))
    assert not only_view._masked_view_is_self_view("spectrum")


def test_validation_reads_only_the_shards_that_hold_the_retrieval_pool(latent_dataset):
    whole = load_manifest(latent_dataset).shards("val")
    assert len(whole) >= 2  # otherwise the test shows nothing
    data = ShardDataModule(str(latent_dataset), num_workers=0, val_batch_size=8, val_max_objects=whole[0].count)
    read = sum(len(batch["id"]) for batch in data.val_dataloader())
    assert read == whole[0].count < sum(shard.count for shard in whole)


def _validate(module, latent_dataset, tmp_path) -> dict[str, float]:
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data = ShardDataModule(str(latent_dataset), num_workers=0, val_batch_size=16, val_max_objects=1000)
    trainer.validate(module, datamodule=data, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def test_validation_logs_how_well_each_embedding_predicts_the_probe_label(latent_dataset, tmp_path):
    torch.manual_seed(0)
    module = tiny_module()
    module.model.set_statistics(load_manifest(latent_dataset).to_dict())
    metrics = _validate(module, latent_dataset, tmp_path)
    for modality in ("spectrum", "photometry", "image"):
        assert math.isfinite(metrics[f"val/knn_r2/{modality}"])  # an untrained model: any finite R^2

    assert not any(name.startswith("val/knn_r2") for name in _validate(
        tiny_module(val_probe_label=None), latent_dataset, tmp_path))
    # A label the dataset lacks is skipped, not an error: real surveys may have no redshifts.
    assert not any(name.startswith("val/knn_r2") for name in _validate(
        tiny_module(val_probe_label="stellar_mass"), latent_dataset, tmp_path))
