"""POST /v1/embed: each modality and input form reproduces the stored embedding of the same object, and
every kind of bad input is a 4xx JSON error naming its field."""

from __future__ import annotations

import base64
import io
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrofm.embedstore.store import EmbeddingStore
from tests.conftest import TINY_SPEC, synthetic_sample

OBJ = 1  # obj-00001 has every modality


def _stored(world, modality: str, index: int = OBJ) -> np.ndarray:
    return EmbeddingStore.open(world.embeddings).vector(modality, f"obj-{index:05d}")


def _spectrum(index: int = OBJ) -> dict:
    arrays = synthetic_sample(index).spectrum
    return {"id": f"obj-{index:05d}", "flux": arrays["flux"].tolist(), "ivar": arrays["ivar"].tolist()}


def _photometry(index: int = OBJ) -> dict:
    arrays = synthetic_sample(index).photometry
    bands = TINY_SPEC.photometry.bands
    return {"bands": {b: {"flux": float(arrays["flux"][i]), "flux_err": float(arrays["flux_err"][i])}
                      for i, b in enumerate(bands)}}


def _npy(array) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return base64.b64encode(buffer.getvalue()).decode()


def _embed(client, modality, *objects):
    return client.post("/v1/embed", json={"modality": modality, "objects": list(objects)})


def _error(response, status: int) -> dict:
    """The one error item of a refused request, after checking its status and shape."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail and {"loc", "msg", "type"} <= set(detail[0])
    return detail[0]


def test_spectrum_on_the_model_grid_matches_the_stored_embedding(client, world):
    response = _embed(client, "spectrum", _spectrum())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["modality"] == "spectrum" and body["dimension"] == 32 and body["ids"] == ["obj-00001"]
    np.testing.assert_allclose(body["embeddings"][0], _stored(world, "spectrum"), atol=1e-5)


def test_spectrum_with_wavelength_is_resampled(client, world):
    """Resampling onto the identical grid changes nothing; a finer grid still gives a unit vector."""
    obj = {**_spectrum(), "wavelength": TINY_SPEC.spectrum.wavelength().tolist()}
    same = _embed(client, "spectrum", obj).json()["embeddings"][0]
    np.testing.assert_allclose(same, _stored(world, "spectrum"), atol=1e-5)
    wave = np.linspace(3500.0, 3900.0, 401)
    fine = _embed(client, "spectrum", {"wavelength": wave.tolist(), "flux": np.sin(wave / 50).tolist()})
    assert fine.status_code == 200, fine.text
    assert np.linalg.norm(fine.json()["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)


def test_photometry_by_band_matches_the_stored_embedding(client, world):
    body = _embed(client, "photometry", _photometry()).json()
    np.testing.assert_allclose(body["embeddings"][0], _stored(world, "photometry"), atol=1e-5)


def test_image_as_nested_list_and_as_npy_match_the_stored_embedding(client, world):
    image = synthetic_sample(OBJ).image
    listed = _embed(client, "image", {"flux": image["flux"].tolist(), "ivar": image["ivar"].tolist()})
    npy = _embed(client, "image", {"flux_npy": _npy(image["flux"].astype(np.float32)), "ivar_npy": _npy(image["ivar"])})
    for response in (listed, npy):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["embeddings"][0], _stored(world, "image"), atol=1e-5)


def test_many_objects_come_back_in_order(client, world):
    indices = [1, 2, 3, 4]
    body = _embed(client, "spectrum", *[_spectrum(i) for i in indices]).json()
    assert body["ids"] == [f"obj-{i:05d}" for i in indices]
    for got, i in zip(body["embeddings"], indices, strict=True):
        np.testing.assert_allclose(got, _stored(world, "spectrum", i), atol=1e-5)


@pytest.mark.parametrize("payload, loc_tail", [
    (b'{"modality": "spectrum", "objects": [{"flux": [1, NaN], "ivar": [1, 1]}]}', ["flux", 1]),
    (b'{"modality": "spectrum", "objects": [{"flux": [1, Infinity], "ivar": [1, 1]}]}', ["flux", 1]),
    (b'{"modality": "spectrum", "objects": [{"flux": [1, 2], "ivar": [1, -Infinity]}]}', ["ivar", 1]),
    (b'{"modality": "photometry", "objects": [{"bands": {"g": {"flux": NaN, "flux_err": 1}}}]}', ["flux"]),
])
def test_nan_and_inf_are_refused_naming_the_element(client, payload, loc_tail):
    response = client.post("/v1/embed", content=payload, headers={"content-type": "application/json"})
    item = _error(response, 422)
    assert item["loc"][-len(loc_tail):] == loc_tail and item["type"] == "finite_number"


@pytest.mark.parametrize("modality, obj, field, words", [
    ("spectrum", {"flux": [1.0] * 99, "ivar": [1.0] * 99}, "flux", "100 pixels"),
    ("spectrum", {"flux": [1e300, 1.0], "ivar": [1.0, 1.0]}, "flux", "float32"),
    ("spectrum", {"flux": [1.0] * 100}, None, "ivar"),
    ("spectrum", {"flux": [1.0] * 100, "ivar": [-1.0] * 100}, None, "negative"),
    ("spectrum", {"flux": [1.0, 2.0], "wavelength": [5.0, 4.0]}, "wavelength", "increasing"),
    ("spectrum", {"flux": [1.0, 2.0], "wavelength": [9000.0, 9002.0]}, "wavelength", "covers no"),
    ("spectrum", {"flux": [1.0] * 100, "ivar": [1.0] * 100, "iver": [1.0]}, "iver", "Extra"),
    ("photometry", {"bands": {"g": {"flux": 1.0, "flux_err": 0.1}}}, "bands", "missing bands ['r']"),
    ("photometry", {"bands": {"g": {"flux": 1.0, "flux_err": 0.1}, "r": {"flux": 1.0, "flux_err": 0.1},
                              "u": {"flux": 1.0, "flux_err": 0.1}}}, "u", "unknown band"),
    ("photometry", {"bands": {"g": {"flux": 1.0, "flux_err": -0.1}}}, "flux_err", "greater than or equal"),
    ("image", {"flux": np.zeros((3, 4, 4)).tolist()}, "flux", "(3, 8, 8)"),
    ("image", {"flux": [[[1.0, 2.0], [1.0]]]}, "flux", "ragged"),
    ("image", {"flux_npy": "not base64!"}, "flux_npy", "base64"),
    ("image", {"flux_npy": base64.b64encode(b"plain bytes").decode()}, "flux_npy", ".npy"),
    ("image", {"flux_npy": _npy(np.zeros((3, 8, 8), dtype=object))}, "flux_npy", "pickle"),
    ("image", {"flux_npy": base64.b64encode(pickle.dumps([1, 2])).decode()}, "flux_npy", ".npy"),
    ("image", {"flux_npy": _npy(np.zeros((8, 8)))}, "flux_npy", "shape"),
    ("image", {"flux_npy": _npy(np.full((3, 8, 8), np.nan))}, "flux_npy", "NaN"),
    ("image", {}, None, "exactly one of flux"),
])
def test_bad_objects_are_422_naming_the_field(client, modality, obj, field, words):
    item = _error(_embed(client, modality, obj), 422)
    assert item["loc"][0] == "body" and "objects" in item["loc"] and 0 in item["loc"]
    if field is not None:
        assert field in item["loc"], item
    assert words in item["msg"], item


def test_request_level_errors(make_client, client):
    assert "modality" in _error(_embed(client, "radio", {"flux": [1.0]}), 422)["loc"]
    assert _error(_embed(client, "spectrum"), 422)["loc"][-1] == "objects"  # no objects
    small = make_client(max_objects_per_request=2)
    item = _error(_embed(small, "photometry", *[_photometry()] * 3), 422)
    assert item["loc"] == ["body", "objects"] and "at most 2" in item["msg"]
    response = client.post("/v1/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert _error(response, 422)["type"] == "json_invalid"


def test_a_model_without_the_modality_is_422(make_client, service, monkeypatch):
    client = make_client()
    monkeypatch.setattr(type(service), "modalities", property(lambda self: ["spectrum"]))
    item = _error(_embed(client, "photometry", _photometry()), 422)
    assert item["loc"] == ["body", "modality"] and "no photometry encoder" in item["msg"]


def test_a_non_finite_embedding_is_422_not_500(make_client, service, monkeypatch):
    monkeypatch.setattr(type(service), "embed", lambda self, modality, samples: np.full((len(samples), 32), np.nan))
    client = make_client()
    item = _error(_embed(client, "spectrum", _spectrum(), _spectrum(2)), 422)
    assert item["loc"] == ["body", "objects", 0] and "not finite" in item["msg"]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(flux=st.lists(st.floats(-1e6, 1e6), min_size=100, max_size=100),
       ivar=st.lists(st.floats(0, 1e6), min_size=100, max_size=100))
def test_any_finite_spectrum_on_the_grid_embeds_to_a_unit_vector(client, flux, ivar):
    response = _embed(client, "spectrum", {"flux": flux, "ivar": ivar})
    assert response.status_code == 200, response.text
    assert np.linalg.norm(response.json()["embeddings"][0]) == pytest.approx(1.0, abs=1e-4)
