"""POST /v1/search (by id, across modalities, by embedding, by raw data), GET /v1/objects/{id}, /health,
/v1/info, the API key, the body limit and the OpenAPI document."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import serving.app
from astrofm.embedstore.store import table_vectors
from tests.conftest import synthetic_sample
from tests.serving.test_embed import _error, _spectrum


def _exact(world, query: np.ndarray, k: int, exclude: str | None = None) -> list[str]:
    """Brute-force cosine neighbours among the stored spectrum embeddings."""
    table = pq.read_table(world.embeddings / "spectrum.parquet")
    ids, vectors = table.column("id").to_pylist(), table_vectors(table)
    order = [i for i in np.argsort(-(vectors @ query), kind="stable") if ids[i] != exclude]
    return [ids[i] for i in order[:k]]


def _stored(world, object_id: str, modality: str = "spectrum") -> np.ndarray:
    table = pq.read_table(world.embeddings / f"{modality}.parquet")
    return table_vectors(table)[table.column("id").to_pylist().index(object_id)]


def test_health_and_info(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["dimension"] == 32 and info["model"]["modalities"] == ["spectrum", "photometry", "image"]
    assert info["index"] == {"modality": "spectrum", "kind": "flat", "count": 53, "dimension": 32}
    assert info["model"]["spec"]["spectrum"]["n_pixels"] == 100 and info["auth"] is False
    assert info["embeddings"]["counts"]["image"] == 48 and info["limits"]["max_k"] == 100
    assert set(info["batcher"]) == {"batches", "objects", "largest"}


def test_search_by_id_leaves_the_query_out_and_matches_brute_force(client, world):
    body = client.post("/v1/search", json={"id": "obj-00001", "k": 5}).json()
    assert body["query"] == {"kind": "id", "id": "obj-00001", "modality": "spectrum", "source": "index"}
    assert [h["id"] for h in body["hits"]] == _exact(world, _stored(world, "obj-00001"), 5, "obj-00001")
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    assert body["hits"][0]["labels"]["survey"] == "test" and "split" in body["hits"][0]["labels"]


def test_search_across_modalities_uses_the_embedding_folder(client, world):
    body = client.post("/v1/search", json={"id": "obj-00001", "query_modality": "image", "k": 53}).json()
    assert body["query"]["source"] == "embeddings" and len(body["hits"]) == 53
    assert [h["id"] for h in body["hits"]] == _exact(world, _stored(world, "obj-00001", "image"), 53)
    assert [h["id"] for h in body["hits"] if h["is_query"]] == ["obj-00001"]


def test_search_by_embedding_and_by_data_find_the_object(client, world):
    by_vector = client.post("/v1/search", json={"embedding": _stored(world, "obj-00002").tolist(), "k": 3}).json()
    assert by_vector["hits"][0]["id"] == "obj-00002" and by_vector["hits"][0]["score"] == pytest.approx(1, abs=1e-5)
    data = {"modality": "spectrum", **_spectrum(2)}
    by_data = client.post("/v1/search", json={"data": data, "k": 3}).json()
    assert by_data["query"] == {"kind": "data", "id": "obj-00002", "modality": "spectrum", "source": "model"}
    assert by_data["hits"][0]["id"] == "obj-00002" and by_data["hits"][0]["is_query"]
    image = synthetic_sample(2).image["flux"].tolist()
    across = client.post("/v1/search", json={"data": {"modality": "image", "flux": image}, "k": 2})
    assert across.status_code == 200 and across.json()["query"]["modality"] == "image"


@pytest.mark.parametrize("body, status, loc, words", [
    ({"id": "obj-99999"}, 404, ["body", "id"], "not in the spectrum index"),
    ({"id": "obj-99999", "query_modality": "image"}, 404, ["body", "id"], "no image embedding"),
    ({"id": "obj-00001", "k": 0}, 422, ["body", "k"], "greater than or equal to 1"),
    ({"id": "obj-00001", "k": 101}, 422, ["body", "k"], "limit of 100"),
    ({"id": "obj-00001", "k": 53}, 422, ["body", "k"], "52 vector(s) besides the query"),
    ({"embedding": [1.0] * 32, "k": 54}, 422, ["body", "k"], "holds 53"),
    ({"embedding": [1.0] * 31}, 422, ["body", "embedding"], "dimension 32"),
    ({"embedding": [1e39] * 32}, 422, ["body", "embedding"], "float32"),
    ({"id": "obj-00001", "target_modality": "image"}, 422, ["body", "target_modality"], "holds spectrum"),
    ({"id": "obj-00001", "embedding": [1.0] * 32}, 422, ["body"], "exactly one of id, embedding and data"),
    ({}, 422, ["body"], "exactly one"),
    ({"embedding": [1.0] * 32, "query_modality": "image"}, 422, ["body"], "query_modality goes with id"),
    ({"data": {"modality": "image", "flux": [[[1.0]]]}}, 422, ["body", "data", "flux"], "(3, 8, 8)"),
    ({"data": {"modality": "sound", "flux": [1.0]}}, 422, ["body", "data", "modality"], "does not match"),
    ({"id": "x" * 257}, 422, ["body", "id"], "at most 256"),
])
def test_search_errors_name_the_field(client, body, status, loc, words):
    item = _error(client.post("/v1/search", json=body), status)
    assert item["loc"] == loc and words in item["msg"], item


def test_cross_modal_id_query_needs_the_embedding_folder(make_client):
    item = _error(make_client(store=False).post("/v1/search", json={"id": "obj-00001", "query_modality": "image"}),
                  422)
    assert item["loc"] == ["body", "query_modality"] and "--embeddings" in item["msg"]


def test_requests_read_no_parquet(client, monkeypatch):
    """The service reads each embedding file once at start-up, so looking an id up costs O(1), not a scan."""
    import astrofm.embedstore.store

    def refuse(*args, **kwargs):
        raise AssertionError("a request read a Parquet file")

    monkeypatch.setattr(astrofm.embedstore.store.pq, "read_table", refuse)
    assert client.get("/v1/objects/obj-00007").json()["labels"]["index"] == 7
    body = client.post("/v1/search", json={"id": "obj-00001", "query_modality": "image", "k": 3}).json()
    assert body["query"]["source"] == "embeddings" and len(body["hits"]) == 3


def test_objects_route(client, make_client):
    indexed = client.get("/v1/objects/obj-00001").json()
    assert indexed["id"] == "obj-00001" and indexed["modalities"] == ["spectrum", "photometry", "image"]
    assert indexed["labels"]["index"] == 1 and indexed["labels"]["survey"] == "test"
    unindexed = client.get("/v1/objects/obj-00007").json()  # every 7th object lacks a spectrum
    assert unindexed["modalities"] == ["photometry", "image"] and unindexed["labels"]["index"] == 7
    item = _error(client.get("/v1/objects/obj-99999"), 404)
    assert item["loc"] == ["path", "object_id"] and "obj-99999" in item["msg"]
    _error(make_client(store=False).get("/v1/objects/obj-00007"), 404)
    assert _error(client.get("/v1/objects/" + "x" * 300), 422)["loc"] == ["path", "object_id"]
    # An id shaped like a path is only ever looked up, never opened.
    assert _error(client.get("/v1/objects/..%2F..%2Fetc%2Fpasswd"), 404)["type"] in ("unknown_id", "http_error")


def test_unknown_route_and_method_are_json(client):
    assert _error(client.get("/v1/nothing"), 404)["loc"] == ["request"]
    assert _error(client.get("/v1/search"), 405)["type"] == "http_error"


def test_api_key(make_client, monkeypatch):
    calls = []
    real = serving.app.hmac.compare_digest
    monkeypatch.setattr(serving.app.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    secure = make_client(api_key="s3cret")
    assert secure.get("/health").status_code == 200  # liveness needs no key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                    {"Authorization": "s3cret"}):
        response = secure.get("/v1/info", headers=headers)
        item = _error(response, 401)
        assert item["loc"] == ["header", "authorization"] and response.headers["www-authenticate"] == "Bearer"
    good = {"Authorization": "Bearer s3cret"}
    assert secure.get("/v1/info", headers=good).json()["auth"] is True
    assert secure.post("/v1/search", json={"id": "obj-00001", "k": 1}, headers=good).status_code == 200
    assert _error(secure.post("/v1/search", json={"id": "obj-00001"}), 401)
    assert _error(secure.get("/v1/objects/obj-00001"), 401)
    assert (b"wrong", b"s3cret") in calls  # the key is compared in constant time
    assert "bearer" in str(secure.get("/openapi.json").json()["components"]["securitySchemes"]).lower()


def test_api_key_is_read_from_the_environment(monkeypatch, world, index_dir):
    from serving.config import ServeConfig

    monkeypatch.setenv("ASTROFM_API_KEY", "from-env")
    assert ServeConfig(model=str(world.model), index=str(index_dir)).api_key == "from-env"
    assert "from-env" not in repr(ServeConfig(model=str(world.model), index=str(index_dir)))
    monkeypatch.delenv("ASTROFM_API_KEY")
    assert ServeConfig(model=str(world.model), index=str(index_dir)).api_key is None


def test_body_limit(make_client):
    small = make_client(max_body_bytes=2048)
    big = {"modality": "spectrum", "objects": [{"flux": [1.0] * 400, "ivar": [1.0] * 400}]}
    item = _error(small.post("/v1/embed", json=big), 413)
    assert item["loc"] == ["body"] and "2048" in item["msg"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b" " * 1000

    assert _error(small.post("/v1/embed", content=chunks(), headers={"content-type": "application/json"}),
                  413)["type"] == "body_too_large"
    assert small.post("/v1/search", json={"id": "obj-00001", "k": 2}).status_code == 200


def test_openapi_documents_the_schemas_and_errors(client):
    document = client.get("/openapi.json").json()
    assert {"/health", "/v1/info", "/v1/embed", "/v1/search", "/v1/objects/{object_id}"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert {"SpectrumIn", "PhotometryIn", "ImageIn", "SearchRequest", "SearchResponse", "ErrorResponse"} <= set(schemas)
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == 1000
    assert "413" in document["paths"]["/v1/embed"]["post"]["responses"]
