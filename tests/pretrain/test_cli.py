"""`astrofm pretrain` through the real command line: recipes, fit + export, 2-rank DDP, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import astrofm
from astrofm.cli.main import main
from astrofm.data.loader import LoaderConfig, make_dataloader
from pretrain.cli import default_wandb_mode
from tests.pretrain.conftest import FAST, REPO, TINY_RECIPE, astrofm_command, quiet_env


class ParseOnlyCLI:
    """Parse a recipe with the real PretrainCLI parser (types, class paths, init_args) but build nothing."""

    @staticmethod
    def parse(args: list[str]):
        from pretrain.cli import PretrainCLI
        from pretrain.datamodule import ShardDataModule
        from pretrain.module import ContrastivePretrainer

        class _CLI(PretrainCLI):
            def instantiate_classes(self) -> None:
                pass

        return _CLI(ContrastivePretrainer, ShardDataModule, args=args, run=False).config


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(recipe):
    config = ParseOnlyCLI.parse(["--config", str(recipe)])
    encoders = config.model.encoders
    assert {"spectrum", "photometry", "image"} <= set(encoders)
    assert all(spec.class_path.startswith("astrofm.models.") for spec in encoders.values())
    assert config.checkpoint.monitor == "val/top10_mean" and config.checkpoint.save_last


def test_tiny_recipe_has_the_three_spectrum_terms():
    config = ParseOnlyCLI.parse(["--config", str(TINY_RECIPE)])
    assert list(config.model.self_views) == ["spectrum"] and config.model.masked_spectrum.self_view
    assert config.model.shift_equivariance.weight == 3 and config.model.shift_equivariance.max_objects == 32


def test_base_recipe_is_gpu_bf16_ddp():
    config = ParseOnlyCLI.parse(["--config", str(REPO / "configs/pretrain/base.yaml")])
    assert config.trainer.precision == "bf16-mixed" and config.trainer.strategy == "ddp"
    assert config.model.encoders["image"].class_path.endswith("ImageViTEncoder")
    # The spectrum-internal terms of tiny, so the GPU recipe keeps the spectrum's redshift precision too.
    assert list(config.model.self_views) == ["spectrum"]
    assert config.model.masked_spectrum.weight > 0 and config.model.masked_spectrum.self_view
    assert config.model.shift_equivariance is None  # tried on CPU only (tiny); off until measured at this size


def _run(args, timeout=240, **kwargs):
    return subprocess.run(astrofm_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=quiet_env(), **kwargs)


def _first_batch(path, split="test"):
    config = LoaderConfig(path=str(path), split=split, batch_size=16, num_workers=0, shuffle=False)
    return next(iter(make_dataloader(config)))


def test_fit_writes_checkpoints_logs_and_model_and_export_matches(latent_dataset, tmp_path):
    run = tmp_path / "run"
    result = _run(["pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(latent_dataset),
                   "--trainer.default_root_dir", str(run), "--trainer.max_steps", "6", *FAST])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    metrics = next((run / "logs").rglob("metrics.csv")).read_text()
    for column in ("train/loss", "val/loss", "val/top1_mean", "val/top10_mean", "val/top10/spectrum-image",
                   "logit_scale"):
        assert column in metrics
    assert list((run / "wandb").glob("offline-run-*")), "wandb should have run offline"
    assert sorted(p.name for p in (run / "model").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (run / "model" / "README.md").read_text()
    assert "latent" in card  # the card names the training data
    training = json.loads((run / "model" / "config.json").read_text())["training"]
    assert training["global_step"] == 6 and f"epochs: {training['epochs_trained']}" in card

    exported = tmp_path / "exported"
    result = _run(["pretrain", "export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(exported)])
    assert result.returncode == 0, result.stderr[-3000:]
    batch = _first_batch(latent_dataset)
    at_end, from_ckpt = astrofm.load_model(run / "model").embed(batch), astrofm.load_model(exported).embed(batch)
    assert set(at_end) == {"spectrum", "photometry", "image"}
    for modality, embedding in at_end.items():
        assert embedding.shape == (16, 128)
        assert torch.equal(embedding, from_ckpt[modality])


def test_the_recipe_takes_bands_from_the_dataset(griz_latent_dataset, tmp_path):
    # tiny.yaml says n_bands 5 and 3; a g, r, i, z survey has 6 and 4, and the dataset decides
    config = ParseOnlyCLI.parse(["--config", str(TINY_RECIPE), "--data.path", str(griz_latent_dataset)])
    encoders = config.model.encoders
    assert encoders["photometry"].init_args.config.init_args.n_bands == 6
    assert encoders["image"].init_args.config.init_args.n_bands == 4
    assert encoders["spectrum"].init_args.config.init_args.n_pixels == 3101

    run = tmp_path / "run"
    result = _run(["pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(griz_latent_dataset),
                   "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2", "--wandb", "false", *FAST])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "image encoder n_bands 3 -> 4" in result.stderr and "photometry encoder n_bands 5 -> 6" in result.stderr
    model = astrofm.load_model(run / "model")
    embeddings = model.embed(_first_batch(griz_latent_dataset))
    assert embeddings["image"].shape[1] == 128 and torch.isfinite(embeddings["image"]).all()


def test_image_noise_refuses_stamps_stored_without_ivar(latent_dataset, no_ivar_dataset, tmp_path, capsys):
    # Collate takes a missing ivar as 1: the noise draw would be unit noise whatever the flux units.
    no_ivar = no_ivar_dataset
    noise = ["--config", str(TINY_RECIPE), "--model.augment.image_noise", "true"]
    with pytest.raises(ValueError, match=r"no_ivar/manifest.json: field 'optional_array_counts' says 0 of the "
                                         r"train split's \d+ images carry 'image.ivar'"):
        ParseOnlyCLI.parse([*noise, "--data.path", str(no_ivar)])
    assert ParseOnlyCLI.parse(["--config", str(TINY_RECIPE), "--data.path", str(no_ivar)])  # noise off: fine
    assert ParseOnlyCLI.parse([*noise, "--data.path", str(latent_dataset)]).model.augment.image_noise

    # The front door turns it into one line naming the file and field, before any training starts.
    code = main(["pretrain", "fit", *noise, "--data.path", str(no_ivar),
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == 1 and "error:" in capsys.readouterr().err and not (tmp_path / "run").exists()

    # A manifest from before the count: let through with a warning.
    manifest_path = no_ivar / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["optional_array_counts"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="does not count the images stored with ivar"):
        ParseOnlyCLI.parse([*noise, "--data.path", str(no_ivar)])


def test_export_refuses_a_missing_checkpoint(tmp_path):
    result = _run(["pretrain", "export", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "m")])
    assert result.returncode == 1 and "none.ckpt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_two_process_ddp_on_cpu_through_the_cli(latent_dataset, tmp_path):
    run = tmp_path / "ddp"
    result = _run(["pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(latent_dataset),
                   "--trainer.default_root_dir", str(run), "--trainer.max_steps", "3",
                   "--trainer.devices", "2", "--trainer.strategy", "ddp", "--wandb", "false", *FAST], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_last_ckpt_and_finishes(latent_dataset, tmp_path):
    run = tmp_path / "killed"
    common = ["pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(latent_dataset),
              "--trainer.default_root_dir", str(run), "--trainer.max_steps", "40", "--trainer.max_epochs", "-1",
              "--checkpoint.every_n_train_steps", "2", "--wandb", "false", *FAST]
    last = run / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(astrofm_command(*common), env=quiet_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not last.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert last.exists(), "no checkpoint appeared before the deadline"
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < killed_at < 40
    assert not (run / "model").exists()

    result = _run([*common, "--ckpt_path", str(last)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 40
    assert (run / "model" / "model.safetensors").is_file()


def test_pretrain_help_lists_the_subcommands(capsys):
    from astrofm.cli.main import main

    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "astrofm pretrain fit --config" in out and "astrofm pretrain export --ckpt" in out
    assert main(["pretrain"]) == 2


def test_fit_with_masked_spectrum_modelling_logs_the_term_and_exports_the_plain_model(latent_dataset, tmp_path):
    run = tmp_path / "run"
    result = _run(["pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(latent_dataset),
                   "--trainer.default_root_dir", str(run), "--trainer.max_steps", "3",
                   "--model.masked_spectrum.weight", "0.5", *FAST])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = next((run / "logs").rglob("metrics.csv")).read_text()
    assert "train/loss/masked_spectrum" in metrics and "val/loss/masked_spectrum" in metrics
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert any(k.startswith("masked_spectrum_head.") for k in checkpoint["state_dict"])  # resumable
    assert any(g["params"] for g in checkpoint["optimizer_states"][0]["param_groups"])
    model = astrofm.load_model(run / "model")  # strict load: the head is not in the model folder
    assert model.embed(_first_batch(latent_dataset))["spectrum"].shape == (16, 128)


def test_a_fit_with_two_loader_workers_prints_none_of_lightnings_false_alarms(latent_dataset, tmp_path):
    env = quiet_env()
    env.pop("PYTHONWARNINGS")  # see every warning a user would see
    result = subprocess.run(astrofm_command(
        "pretrain", "fit", "--config", str(TINY_RECIPE), "--data.path", str(latent_dataset),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "2", "--wandb", "false",
        *FAST, "--data.num_workers", "2"), capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has `__len__` defined" not in result.stderr
    assert "LeafSpec" not in result.stderr


PYTHON_API_FIT = """
import sys
import lightning.pytorch as pl
from astrofm.models import ImageCNNEncoder, PhotometryEncoder, SpectrumEncoder
from pretrain.datamodule import ShardDataModule
from pretrain.module import ContrastivePretrainer

encoders = {"spectrum": SpectrumEncoder(), "photometry": PhotometryEncoder(), "image": ImageCNNEncoder()}
trainer = pl.Trainer(default_root_dir=sys.argv[2], max_steps=2, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
trainer.fit(ContrastivePretrainer(encoders, embed_dim=32),
            datamodule=ShardDataModule(sys.argv[1], batch_size=16, num_workers=2, samples_per_epoch=64))
"""


def test_a_fit_from_python_with_two_loader_workers_prints_none_of_them_either(latent_dataset, tmp_path):
    env = quiet_env()
    env.pop("PYTHONWARNINGS")
    result = subprocess.run([sys.executable, "-c", PYTHON_API_FIT, str(latent_dataset), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has `__len__` defined" not in result.stderr
    assert "LeafSpec" not in result.stderr


@pytest.mark.parametrize(("mode", "key", "expected"), [
    (None, None, "offline"), ("", None, "offline"), ("", "k", None), ("online", None, "online")])
def test_wandb_runs_offline_unless_configured_and_an_empty_mode_counts_as_unset(monkeypatch, mode, key, expected):
    for name, value in (("WANDB_MODE", mode), ("WANDB_API_KEY", key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    default_wandb_mode()
    assert os.environ.get("WANDB_MODE") == expected


@pytest.mark.parametrize("epoch, started, processed, last_batch, expected", [
    (29, 30, 30, True, (30, False)),  # saved at the last validation: `epoch` is the 0-based index of the 30th
    (30, 30, 30, True, (30, False)),  # saved at train end: `epoch` already counts the 30 finished ones
    (3, 4, 4, False, (3, True)),  # max_time stopped the 4th epoch part-way (Lightning counts it processed)
    (12, 13, 12, False, (12, True)),  # a periodic checkpoint saved inside the 13th epoch
])
def test_export_counts_epochs_from_the_fit_loop_not_the_epoch_field(epoch, started, processed, last_batch,
                                                                     expected):
    from pretrain.export import epochs_trained

    progress = {"ready": started, "started": started, "processed": processed, "completed": min(processed, epoch)}
    fit_loop = {"epoch_progress": {"total": progress}, "epoch_loop.batch_progress": {"is_last_batch": last_batch}}
    assert epochs_trained({"epoch": epoch, "loops": {"fit_loop": fit_loop}}) == expected
    assert epochs_trained({"epoch": epoch}) == (None, False)  # a checkpoint without loop state
