"""`astrofm finetune`: the recipe file, the network's starting points and learning rates, the protocol (which
objects fit, select and measure), the report folder through the CLI, determinism, and input errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from astrofm.cli.main import main
from astrofm.data import Dataset
from astrofm.models import load_model
from downstream.finetune import FinetuneConfig, compute, load_recipe
from downstream.finetune import report as finetune_report
from downstream.finetune import train as training
from downstream.finetune.data import load_rows
from downstream.finetune.model import build_regressor
from downstream.regression import probes
from downstream.regression.metrics import r2
from tests.downstream.finetune_helpers import build_dataset, build_model

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "downstream" / "finetune_tiny.yaml"
FAST = {"epochs": 2, "patience": 2, "batch_size": 8, "eval_batch_size": 32, "num_workers": 0, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    data = build_dataset(root / "data")
    return {"root": root, "data": data, "model": build_model(data, root / "model"),
            "spectrum_only": build_model(data, root / "spectrum_only", modalities=("spectrum",))}


def split_ids(data: Path, split: str, with_spectrum: bool = True) -> set[str]:
    return {s.id for s in Dataset(data).iter_samples(split) if s.spectrum is not None or not with_spectrum}


# ------------------------------------------------------------------------------------------------ recipe


def test_the_shipped_recipe_parses_into_the_config():
    recipe = load_recipe(RECIPE)
    config = FinetuneConfig(model="m", data="d", out="o", **recipe)
    assert config.lr_encoder < config.lr_head and config.methods == ["finetune", "scratch", "probe"]
    assert config.label_fractions == [0.01, 0.1] and config.epochs == recipe["epochs"] == 60 and config.augment


def test_a_recipe_with_an_unknown_field_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown fields \['learning_rate'\]"):
        load_recipe(path)


# ------------------------------------------------------------------------------------------- the network


def test_scratch_starts_elsewhere_and_finetuning_moves_the_encoder(world):
    pretrained = load_model(world["model"])
    before = {k: v.clone() for k, v in pretrained.encoders["spectrum"].state_dict().items()}
    tuned = build_regressor(pretrained, "spectrum", scratch=False, seed=0)
    scratch = build_regressor(pretrained, "spectrum", scratch=True, seed=0)
    start = {k: v.clone() for k, v in tuned.encoder.state_dict().items()}
    weights = [k for k, _ in tuned.encoder.named_parameters()]
    assert all(torch.equal(start[k], before[k]) for k in before)  # a copy of the pretrained encoder
    scratch_state = scratch.encoder.state_dict()
    matrices = [k for k, v in tuned.encoder.named_parameters() if v.dim() >= 2]  # biases and norms start at 0/1
    assert matrices and all(not torch.equal(scratch_state[k], before[k]) for k in matrices)
    buffers = [k for k, _ in tuned.encoder.named_buffers()]
    assert buffers and all(torch.equal(scratch_state[k], before[k]) for k in buffers)  # same normalisation
    # the new heads start alike for a seed, so the two differ only by the encoder's starting point
    assert all(torch.equal(a, b) for a, b in zip(tuned.head.parameters(), scratch.head.parameters(), strict=True))

    train = load_rows(str(world["data"]), "spectrum", "redshift", "train", num_workers=0)
    val = load_rows(str(world["data"]), "spectrum", "redshift", "val", num_workers=0)
    settings = training.TrainSettings(lr_encoder=1e-4, lr_head=1e-3, epochs=2, patience=5, batch_size=8,
                                      warmup_steps=1)
    training.fit(tuned, train, val, settings, seed=0)
    moved = [k for k in weights if not torch.equal(tuned.encoder.state_dict()[k], start[k])]
    assert moved == weights  # every encoder weight took gradient steps
    after = pretrained.encoders["spectrum"].state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # the loaded model itself is untouched


def test_augmentations_reach_every_training_batch_and_nothing_else(world, monkeypatch):
    train = load_rows(str(world["data"]), "spectrum", "redshift", "train", num_workers=0)
    val = load_rows(str(world["data"]), "spectrum", "redshift", "val", num_workers=0)
    seen, real_augment = [], training.augment_batch

    def spy(batch, config, generator):
        spectrum = batch["spectrum"]["flux"]
        seen.append(spectrum.shape[0])
        out = real_augment(batch, config, generator)
        assert not torch.equal(out["spectrum"]["flux"], spectrum)  # a new noise draw, on the training rows
        return out

    monkeypatch.setattr(training, "augment_batch", spy)
    net = build_regressor(load_model(world["model"]), "spectrum", scratch=True, seed=0)
    settings = training.TrainSettings(lr_encoder=1e-3, lr_head=1e-3, epochs=2, patience=5, batch_size=8,
                                      augment=training.AugmentConfig())
    info = training.fit(net, train, val, settings, seed=0)
    assert len(seen) == info["steps"] and sum(seen) == info["epochs"] * len(train)  # train batches, each once
    seen.clear()
    training.fit(build_regressor(load_model(world["model"]), "spectrum", scratch=True, seed=0), train, val,
                 training.TrainSettings(lr_encoder=1e-3, lr_head=1e-3, epochs=1, batch_size=8), seed=0)
    assert seen == []  # augment=None: the batches as read


def test_augment_is_on_by_default_and_the_flag_turns_it_off(world, tmp_path):
    from astrofm.cli.finetune_cmd import make_config
    from astrofm.cli.main import build_parser

    base = ["finetune", "--model", "m", "--data", "d", "--modality", "spectrum", "--target", "redshift",
            "--out", str(tmp_path / "o")]
    parse = build_parser().parse_args
    assert make_config(parse(base)).augment is True
    assert make_config(parse([*base, "--no-augment"])).augment is False
    assert make_config(parse([*base, "--config", str(RECIPE)])).augment is True
    assert finetune_report._settings(make_config(parse(base)), "scratch", "").augment == training.AugmentConfig()
    assert finetune_report._settings(make_config(parse([*base, "--no-augment"])), "finetune", "").augment is None
    quiet = finetune_report._settings(make_config(parse(base)), "finetune", "", noise=False).augment
    assert quiet.image_rot90 and quiet.image_flip and not quiet.spectrum_noise and not quiet.photometry_noise
    assert make_config(parse(base)).noise_redraws == "choose"
    assert make_config(parse([*base, "--noise-redraws", "off"])).noise_redraws == "off"
    with pytest.raises(ValueError, match="noise_redraws must be one of"):
        FinetuneConfig(model="m", data="d", out="o", noise_redraws="sometimes")


@pytest.mark.parametrize("noise_redraws, modality, fits_per_run", [
    ("choose", "spectrum", 2), ("on", "spectrum", 1), ("off", "spectrum", 1), ("choose", "image", 1)])
def test_noise_redraws_are_chosen_on_val(world, monkeypatch, tmp_path, noise_redraws, modality, fits_per_run):
    """Under "choose" each trained method fits with and without the noise redraws and keeps the lower val
    MSE; images, which have no noise redraw, fit once; "on"/"off" fit once with that setting."""
    seen, real_fit = [], training.fit

    def spy_fit(net, train, val, settings, seed):
        info = real_fit(net, train, val, settings, seed)
        seen.append((settings.augment.spectrum_noise, info["val_mse"]))
        return info

    monkeypatch.setattr(training, "fit", spy_fit)
    config = FinetuneConfig(model=str(world["model"]), data=str(world["data"]), out=str(tmp_path / "r"),
                            modality=modality, label_fractions=[0.5], seeds=1, methods=["finetune", "scratch"],
                            noise_redraws=noise_redraws, **FAST)
    records = compute(config)[0]["records"]
    assert len(seen) == 2 * fits_per_run
    for record, fits in zip(records, (seen[:fits_per_run], seen[fits_per_run:]), strict=True):
        noise, val_mse = min(fits, key=lambda fit: fit[1])
        assert record["val_mse"] == val_mse and record["noise_redraws_used"] is noise
        if fits_per_run == 2:
            assert {n for n, _ in fits} == {True, False}
            assert record["val_mse_by_noise_redraws"] == {"on" if n else "off": v for n, v in fits}
        else:
            assert "val_mse_by_noise_redraws" not in record
            assert noise is (noise_redraws == "on" and modality == "spectrum")


def test_head_first_leaves_the_encoder_and_fits_the_head(world):
    net = build_regressor(load_model(world["model"]), "spectrum", scratch=False, seed=0)
    train = load_rows(str(world["data"]), "spectrum", "redshift", "train", num_workers=0)
    val = load_rows(str(world["data"]), "spectrum", "redshift", "val", num_workers=0)
    net.eval()
    z_train, z_val = (training.run_batches(net.embed, rows, 64) for rows in (train, val))
    net.set_scales(z_train, train.y)
    encoder, head = ({k: v.clone() for k, v in m.state_dict().items()} for m in (net.encoder, net.head))
    settings = training.TrainSettings(lr_encoder=1e-4, lr_head=1e-2, head_epochs=20, batch_size=8)
    info = training.fit_head(net, z_train, net.standardise(train.y), z_val, net.standardise(val.y), settings, 0)
    assert all(torch.equal(v, encoder[k]) for k, v in net.encoder.state_dict().items())
    assert any(not torch.equal(v, head[k]) for k, v in net.head.state_dict().items())
    assert 1 <= info["head_best_epoch"] <= 20 and np.isfinite(info["head_val_mse"])


def test_the_encoder_learns_slower_than_the_head(world):
    net = build_regressor(load_model(world["model"]), "spectrum", scratch=False, seed=0)
    optimizer = training.make_optimizer(net, training.TrainSettings(lr_encoder=1e-4, lr_head=1e-3))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["encoder"]["lr"] == 1e-4 < groups["head"]["lr"] == 1e-3
    in_groups = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_groups == {id(p) for p in net.parameters()}  # every trainable parameter, once
    assert {id(p) for p in groups["encoder"]["params"]} == {id(p) for p in [*net.encoder.parameters(),
                                                                               *net.projection.parameters()]}
    # the warm-up ramps both rates from a small fraction of their values
    scheduler = training.warmup(optimizer, 10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-5, 1e-4])
    for _ in range(12):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])


# ------------------------------------------------------------------------------------------- protocol


def test_no_test_object_is_used_to_fit_or_select(world, monkeypatch, tmp_path):
    train_ids, val_ids = split_ids(world["data"], "train"), split_ids(world["data"], "val")
    fitted, probed = [], []
    real_fit, real_probe = training.fit, probes.fit_mlp

    def spy_fit(net, train, val, settings, seed):
        assert set(train.ids) <= train_ids and set(val.ids) == val_ids
        fitted.append(sorted(train.ids))
        return real_fit(net, train, val, settings, seed)

    def spy_probe(x_train, y_train, x_val, y_val, **kwargs):
        probed.append((len(x_train), len(x_val)))
        return real_probe(x_train, y_train, x_val, y_val, **{**kwargs, "max_epochs": 3})

    monkeypatch.setattr(training, "fit", spy_fit)
    monkeypatch.setattr(probes, "fit_mlp", spy_probe)
    config = FinetuneConfig(model=str(world["model"]), data=str(world["data"]), out=str(tmp_path / "r"),
                            label_fractions=[0.5, 1.0], seeds=2, **FAST)
    metrics, shown = compute(config)
    # (finetune, scratch) x 2 fractions x 2 seeds x noise redraws on and off (chosen on val); probe 2 x 2
    assert len(fitted) == 16 and len(probed) == 4
    n_train = len(train_ids)
    assert {r["n_train"] for r in metrics["records"]} == {round(0.5 * n_train), n_train}
    assert {r["n_test"] for r in metrics["records"]} == {len(split_ids(world["data"], "test"))}
    assert {n for n, _ in probed} == {round(0.5 * n_train), n_train} and {v for _, v in probed} == {len(val_ids)}
    subsets = shown["subset_ids"]["redshift"]
    for seed in ("0", "1"):  # nested subsets; each (fraction, seed) fits both networks on the same ids
        half, full = subsets["0.5"][seed], subsets["1"][seed]
        assert set(half) < set(full) == train_ids
        assert sorted(half) in fitted and fitted.count(sorted(half)) == 4
    assert subsets["0.5"]["0"] != subsets["0.5"]["1"]


def test_same_seed_same_numbers(world, tmp_path):
    config = FinetuneConfig(model=str(world["model"]), data=str(world["data"]), out=str(tmp_path / "r"),
                            label_fractions=[0.5], seeds=1, methods=["finetune", "scratch"], **FAST)
    first, second = compute(config)[0], compute(replace(config))[0]

    def numbers(metrics):
        return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in metrics["records"]]

    assert numbers(first) == numbers(second)
    tuned, scratch = first["records"]
    assert tuned["r2"] != scratch["r2"]  # different starting encoders, different predictions


# ------------------------------------------------------------------------------------------------- CLI


def test_report_folder_through_the_cli(world, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["finetune", "--model", str(world["model"]), "--data", str(world["data"]), "--modality", "spectrum",
                 "--target", "redshift", "--label-fraction", "0.5", "1", "--seeds", "2", "--out", str(out),
                 "--config", str(RECIPE), "--epochs", "2", "--batch-size", "8", "--num-workers", "0",
                 "--head-epochs", "2", "--no-progress"]) == 0
    assert "report written" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["label_subsets.json", "metrics.json", "pred_vs_true.png",
                                                     "predictions.parquet", "r2_vs_fraction.png", "report.md"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 2 and metrics["config"]["lr_encoder"] == 1e-4  # flag over recipe
    assert metrics["config"]["label_fractions"] == [0.5, 1.0]
    assert metrics["config"]["redshift_like"] == {"redshift": True}
    records = metrics["records"]
    assert len(records) == 3 * 2 * 2  # methods x fractions x seeds
    assert {(r["method"], r["label_fraction"], r["seed"]) for r in records} == {
        (m, f, s) for m in ("finetune", "scratch", "probe") for f in (0.5, 1.0) for s in (0, 1)}
    for record in records:
        assert {"method", "modality", "label_fraction", "seed", "n_train", "n_val", "n_test", "r2", "rmse", "bias",
                "nmad", "outlier_fraction"} <= set(record)
        assert all(np.isfinite(record[k]) for k in ("rmse", "nmad"))
    tuned = [r for r in records if r["method"] == "finetune"]
    assert all(r["lr_encoder"] < r["lr_head"] for r in tuned) and all(1 <= r["epochs"] <= 2 for r in tuned)
    assert all(0 <= r["best_epoch"] <= 2 and 1 <= r["head_best_epoch"] <= 2 for r in tuned)  # head first
    assert not any("head_best_epoch" in r for r in records if r["method"] != "finetune")
    assert all(r["lr_encoder"] == r["lr_head"] == 1e-3 for r in records if r["method"] == "scratch")
    assert len(metrics["summary"]) == 6 and all(s["n_seeds"] == 2 for s in metrics["summary"])
    assert all(r["target"] == "redshift" for r in records)
    subsets = json.loads((out / "label_subsets.json").read_text())
    test_ids = split_ids(world["data"], "test", with_spectrum=False)
    assert list(subsets) == ["redshift"]
    assert all(not set(ids) & test_ids for seeds in subsets["redshift"].values() for ids in seeds.values())
    text = (out / "report.md").read_text()
    assert "![r2_vs_fraction.png](r2_vs_fraction.png)" in text and "| redshift | finetune | 0.5 |" in text
    # predictions.parquet: each method's test predictions from the largest fraction, seed 0, whose R^2 is the record's
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    for method in ("finetune", "scratch", "probe"):
        rows = [r for r in predictions if r["method"] == method]
        assert {r["id"] for r in rows} == split_ids(world["data"], "test", with_spectrum=True)
        assert all(r["split"] == "test" and r["label_fraction"] == 1.0 and r["seed"] == 0 for r in rows)
        record, = (r for r in records if (r["method"], r["label_fraction"], r["seed"]) == (method, 1.0, 0))
        y, p = np.array([r["true"] for r in rows]), np.array([r["predicted"] for r in rows])
        assert r2(y, p) == pytest.approx(record["r2"])


def test_several_targets_fit_each_on_its_own_labelled_objects(tmp_path, capsys):
    """`--target redshift mass`: one report; `mass` exists for two objects in three, and its runs fit, stop and
    score on those objects only, with subsets drawn from them; redshift's runs are those of a one-target report."""
    data = build_dataset(tmp_path / "data", label_every={"mass": 3})
    model = build_model(data, tmp_path / "model", modalities=("spectrum",))
    out = tmp_path / "report"
    common = ["--model", str(model), "--data", str(data), "--modality", "spectrum", "--label-fraction", "0.5",
              "--seeds", "1", "--method", "finetune", "probe", "--epochs", "2", "--batch-size", "8",
              "--num-workers", "0", "--no-progress"]
    assert main(["finetune", *common, "--target", "redshift", "mass", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "redshift" in printed and "mass" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    records = {(r["target"], r["method"]): r for r in metrics["records"]}
    assert set(records) == {(t, m) for t in ("redshift", "mass") for m in ("finetune", "probe")}
    assert metrics["config"]["redshift_like"] == {"redshift": True, "mass": False}
    with_mass = {split: {s.id for s in Dataset(data).iter_samples(split)
                         if s.spectrum is not None and "mass" in s.labels} for split in ("train", "val", "test")}
    assert metrics["data"]["n_train_labelled"]["mass"] == len(with_mass["train"])
    assert records["mass", "finetune"]["n_test"] == len(with_mass["test"]) < records["redshift", "finetune"]["n_test"]
    subsets = json.loads((out / "label_subsets.json").read_text())
    assert set(subsets["mass"]["0.5"]["0"]) <= with_mass["train"]
    assert len(subsets["mass"]["0.5"]["0"]) == round(0.5 * len(with_mass["train"]))
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    mass_rows = [r for r in predictions if r["target"] == "mass" and r["method"] == "finetune"]
    assert {r["id"] for r in mass_rows} == with_mass["test"]
    y, p = np.array([r["true"] for r in mass_rows]), np.array([r["predicted"] for r in mass_rows])
    assert r2(y, p) == pytest.approx(records["mass", "finetune"]["r2"])
    text = (out / "report.md").read_text()
    assert "| mass | finetune | 0.5 |" in text and "| redshift | probe | 0.5 |" in text
    # the redshift runs do not depend on the other target being there
    alone = tmp_path / "alone"
    assert main(["finetune", *common, "--target", "redshift", "--out", str(alone)]) == 0
    single = {r["method"]: r for r in json.loads((alone / "metrics.json").read_text())["records"]}
    for method in ("finetune", "probe"):
        assert single[method]["r2"] == pytest.approx(records["redshift", method]["r2"])


def test_a_target_given_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"target\(s\) \['redshift'\] given more than once"):
        FinetuneConfig(model="m", data="d", out=str(tmp_path / "o"), targets=["redshift", "redshift"])


def test_a_recipe_may_name_one_target_the_old_way(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("target: log_ssfr\nepochs: 3\n")
    assert FinetuneConfig(model="m", data="d", out="o", **load_recipe(path)).targets == ["log_ssfr"]


@pytest.mark.parametrize("change, message", [
    ({"--target": "mystery"}, "manifest.json: no label 'mystery'"),
    ({"--target": "kind"}, "label 'kind' is str, not numeric"),
    ({"--modality": "image", "--model": "spectrum_only"}, "spectrum_only: the model has no image encoder"),
    ({"--label-fraction": "1.5"}, "label fraction 1.5 is not in (0, 1]"),
    ({"--model": "missing"}, "missing"),
])
def test_bad_input_is_one_line_and_exit_1(world, tmp_path, capsys, change, message):
    change = {k: str(world["root"] / v) if k == "--model" else v for k, v in change.items()}
    args = {"--model": str(world["model"]), "--data": str(world["data"]), "--modality": "spectrum",
            "--target": "redshift", "--out": str(tmp_path / "r"), "--no-progress": None, **change}
    argv = [item for pair in args.items() for item in pair if item is not None]
    assert main(["finetune", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("astrofm finetune: error:")
    assert not (tmp_path / "r").exists()


def test_an_existing_report_is_kept_without_overwrite(world, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    argv = ["finetune", "--model", str(world["model"]), "--data", str(world["data"]), "--modality", "spectrum",
            "--target", "redshift", "--out", str(out), "--no-progress"]
    assert main(argv) == 1
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == "{}"


def test_the_report_module_reads_the_pretrained_model_once(world):
    """A smoke check of the frozen-embedding path: the probe sees model.embed's vectors."""
    model = load_model(world["model"])
    rows = load_rows(str(world["data"]), "spectrum", "redshift", "val", num_workers=0)
    vectors = finetune_report.frozen_embeddings(model, "spectrum", rows, batch_size=4)
    with torch.no_grad():
        expected = model.embed({"spectrum": rows.inputs})["spectrum"].numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
