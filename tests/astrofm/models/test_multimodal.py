"""MultiModalModel: unit embeddings per modality, statistics dispatch, and a config that builds only astrofm."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from astrofm.data.loader import LoaderConfig, make_dataloader
from astrofm.data.manifest import load_manifest
from astrofm.models import MultiModalModel, ProjectionHead
from astrofm.models.registry import encoder_for_spec
from tests.astrofm.models.helpers import assert_same_embeddings, make_batch, tiny_encoders


def _model(manifest: dict, image: str = "cnn", **kwargs) -> MultiModalModel:
    model = MultiModalModel(tiny_encoders(image), embed_dim=16, **kwargs)
    model.set_statistics(manifest)
    return model


def _assert_unit_rows(embeddings: dict, batch_size: int, dim: int) -> None:
    for out in embeddings.values():
        assert out.shape == (batch_size, dim)
        assert torch.allclose(out.norm(dim=-1), torch.ones(batch_size), atol=1e-5)


@pytest.mark.parametrize("image", ["cnn", "vit"])
def test_forward_gives_unit_embeddings_per_modality(image, manifest, batch):
    model = _model(manifest, image, head_hidden_dim=32)
    out = model(batch)
    assert list(out) == ["spectrum", "photometry", "image"] == model.modalities
    _assert_unit_rows(out, 4, 16)
    assert model.logit_scale.shape == () and model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    sum(o.sum() for o in out.values()).backward()
    assert model.logit_scale.requires_grad


def test_rows_without_a_modality_are_nan_in_embed_and_absent_modalities_skipped(manifest):
    model = _model(manifest).eval()
    batch = make_batch(missing={1: "spectrum", 2: "image"})
    assert batch["mask"]["spectrum"].tolist() == [True, False, True, True]
    with torch.no_grad():
        trained = model(batch)
    _assert_unit_rows(trained, 4, 16)  # forward embeds zero-filled rows too; the loss masks them
    embedded = model.embed(batch)
    for modality, lacking in (("spectrum", 1), ("image", 2), ("photometry", None)):
        present = [row for row in range(4) if row != lacking]
        torch.testing.assert_close(embedded[modality][present], trained[modality][present])
        if lacking is not None:
            assert torch.isnan(embedded[modality][lacking]).all()
    unmasked = {key: value for key, value in batch.items() if key != "mask"}  # raw inputs: every row embeds
    _assert_unit_rows(model.embed(unmasked), 4, 16)
    no_spectrum = make_batch(n=2, missing={0: "spectrum", 1: "spectrum"})
    assert "spectrum" not in no_spectrum
    assert set(model.embed(no_spectrum)) == {"photometry", "image"}


def test_embed_has_no_graph(manifest, batch):
    out = _model(manifest).eval().embed(batch)
    assert all(not v.requires_grad for v in out.values())


def test_projection_head_normalises():
    head = ProjectionHead(8, 4)
    assert torch.allclose(head(torch.randn(3, 8)).norm(dim=-1), torch.ones(3))


def test_set_statistics_needs_every_encoded_modality(manifest):
    model = MultiModalModel(tiny_encoders())
    partial = {"modalities": {k: v for k, v in manifest["modalities"].items() if k != "image"},
               "statistics": manifest["statistics"]}
    with pytest.raises(ValueError, match="has a image encoder but the dataset has no image"):
        model.set_statistics(partial)
    with pytest.raises(ValueError, match="unknown modalities"):
        MultiModalModel({"spectra": tiny_encoders()["spectrum"]})


def test_config_is_json_and_rebuilds_the_same_architecture(manifest, batch):
    model = _model(manifest, "vit", head_hidden_dim=24, logit_scale_init=2.0)
    config = json.loads(json.dumps(model.to_config()))
    assert config["encoders"]["image"]["class_path"] == "astrofm.models.image.ImageViTEncoder"
    assert config["spec"]["spectrum"]["n_pixels"] == 100
    assert config["statistics"]["photometry"] == manifest["statistics"]["photometry"]
    rebuilt = MultiModalModel.from_config(config)
    assert rebuilt.to_config() == model.to_config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert torch.equal(rebuilt.encoders["image"].flux_scale, model.encoders["image"].flux_scale)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert_same_embeddings(model.embed(batch), rebuilt.embed(batch))


@pytest.mark.parametrize("class_path", ["os.system", "builtins.eval", "torch.nn.Linear", "subprocess.Popen",
                                        "astrofm.models.common.Transformer", "astrofm.data.writer.DatasetWriter",
                                        "astrofm.models.nope.Encoder", "astrofm.models..x", "astrofm_models.x.Y"])
def test_from_config_refuses_classes_outside_astrofm_models(class_path, manifest):
    config = _model(manifest).to_config()
    config["encoders"]["spectrum"]["class_path"] = class_path
    with pytest.raises(ValueError, match=r"refusing|not an astrofm encoder|no module"):
        MultiModalModel.from_config(config)


def test_from_config_rejects_unknown_init_args(manifest):
    config = _model(manifest).to_config()
    config["encoders"]["spectrum"]["init_args"]["config"]["n_layer"] = 3
    with pytest.raises(ValueError, match="unknown fields \\['n_layer'\\]"):
        MultiModalModel.from_config(config)


def test_model_runs_on_a_streamed_dataset(make_dataset):
    path = make_dataset(n=12, shard_size=12, all_train=True, missing_every=3)
    manifest = load_manifest(path)
    spec = manifest.to_dict()["modalities"]
    model = MultiModalModel({m: encoder_for_spec(m, spec[m]) for m in manifest.spec.modalities}, embed_dim=8)
    model.set_statistics(manifest)  # a Manifest works as well as its to_dict()
    batch = next(iter(make_dataloader(LoaderConfig(path=str(path), batch_size=6, num_workers=0, shuffle=False))))
    out = model.eval().embed(batch)
    assert not batch["mask"]["spectrum"].all()
    for modality, vectors in out.items():
        present = batch["mask"][modality]
        _assert_unit_rows({modality: vectors[present]}, int(present.sum()), 8)
        assert torch.isnan(vectors[~present]).all()


def test_embeddings_are_float32_under_autocast(manifest, batch):
    model = _model(manifest)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert all(v.dtype == torch.float32 for v in out.values())
    _assert_unit_rows(out, 4, 16)


def test_importing_the_models_package_is_cheap():
    code = ("import sys; from astrofm.models import ImageViTEncoder, MultiModalModel, load_model; "
            "assert 'transformers' not in sys.modules, 'transformers imported'; "
            "assert 'lightning' not in sys.modules, 'lightning imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
