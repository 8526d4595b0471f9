"""Model folders: config.json + model.safetensors, bit-identical round trip, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

import astrofm
from astrofm.models import MultiModalModel, load_model, save_model
from tests.astrofm.models.helpers import assert_same_embeddings, tiny_encoders


def _trained_model(manifest: dict, image: str = "vit") -> MultiModalModel:
    torch.manual_seed(3)
    model = MultiModalModel(tiny_encoders(image), embed_dim=16, head_hidden_dim=32)
    model.set_statistics(manifest)
    with torch.no_grad():  # weights unlike a fresh init, so a load that silently re-initialises shows
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("image", ["vit", "vit_apertures", "cnn", "cnn_apertures"])
def test_save_and_load_give_bit_identical_embeddings(image, manifest, batch, tmp_path):
    model = _trained_model(manifest, image)
    out = save_model(model, tmp_path / "model", model_card="# tiny model\n",
                     extra={"dataset": "tiny", "recipe": "configs/pretrain/tiny.yaml"})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    config = json.loads((out / "config.json").read_text())
    assert config["astrofm_version"] == astrofm.__version__ and config["dataset"] == "tiny"
    loaded = load_model(out)
    assert not loaded.training
    assert_same_embeddings(model.embed(batch), loaded.embed(batch))
    assert torch.equal(loaded.logit_scale, model.logit_scale)


def test_shared_and_strided_tensors_are_saved(manifest, batch, tmp_path):
    model = _trained_model(manifest, "cnn")
    heads = model.heads
    heads["photometry"].proj[2].weight = heads["spectrum"].proj[2].weight  # tied: one storage, two names
    weight = heads["image"].proj[0].weight
    weight.data = weight.data.t().contiguous().t()  # same values, transposed strides
    assert not weight.is_contiguous()
    loaded = load_model(save_model(model, tmp_path / "m"))
    saved, original = loaded.state_dict(), model.state_dict()
    assert list(saved) == list(original)
    assert all(torch.equal(saved[name], value) for name, value in original.items())  # every value, bit for bit
    # The loaded weight is contiguous: the matmul may take another kernel path and round differently
    # (seen on 2026-12-02), so the embeddings agree to float precision rather than bit for bit.
    got, expected = loaded.embed(batch), model.embed(batch)
    assert list(got) == list(expected)
    for modality, value in expected.items():
        torch.testing.assert_close(got[modality], value, rtol=1e-5, atol=1e-6)


def test_save_replaces_a_model_folder_but_never_another_folder(manifest, tmp_path):
    model = _trained_model(manifest, "cnn")
    out = save_model(model, tmp_path / "m", model_card="first")
    save_model(model, out)
    assert not (out / "README.md").exists()  # the whole folder was replaced
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(model, out, overwrite=False)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a model folder"):
        save_model(model, other)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="clash"):
        save_model(model, tmp_path / "x", extra={"encoders": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "notes"]


def test_load_errors_are_clear(manifest, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        load_model(tmp_path / "empty")
    out = save_model(_trained_model(manifest, "cnn"), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())

    config["encoders"]["spectrum"]["init_args"]["config"]["dim"] = 32
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'encoders.spectrum.cls_token' has shape \(1, 1, 64\) in the file"):
        load_model(out)

    config["encoders"]["spectrum"]["init_args"]["config"].update(dim=64, n_layers=3)
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing tensors \['encoders.spectrum.transformer.blocks.2"):
        load_model(out)

    config["encoders"]["spectrum"]["class_path"] = "os.system"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="refusing encoder class_path 'os.system'"):
        load_model(out)

    (out / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(out)
    (out / "model.safetensors").unlink()
    (out / "config.json").write_text(json.dumps({**config, "encoders": {}}))
    with pytest.raises(FileNotFoundError, match="model.safetensors: missing"):
        load_model(out)
