"""Fixtures for the HTTP service tests: the shared tiny world (dataset, untrained model, embedding folder)
with a flat spectrum index, the service loaded once, and apps and clients built on it."""

from __future__ import annotations

import dataclasses

import pytest

from astrofm.index import IndexConfig, build_index
from serving.app import create_app
from serving.config import BatcherConfig, ServeConfig
from serving.service import load_service
from tests.astrofm.search_helpers import faiss_one_thread, search_world  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return search_world(tmp_path_factory)


@pytest.fixture(scope="session")
def index_dir(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-index") / "spectra"
    return build_index(IndexConfig(embeddings=str(world.embeddings), modality="spectrum", out=str(out)))


@pytest.fixture(scope="session")
def serve_config(world, index_dir):
    """The default config, with no API key whatever the environment holds."""
    return ServeConfig(model=str(world.model), index=str(index_dir), embeddings=str(world.embeddings),
                       batcher=BatcherConfig(max_batch=16, max_wait_ms=2.0), api_key=None)


@pytest.fixture(scope="session")
def service(serve_config):
    """Model, index and store loaded once for every app of the session."""
    return load_service(serve_config)


@pytest.fixture(scope="session")
def make_client(serve_config, service):
    """make_client(**config_changes) -> a TestClient (lifespan running) on the shared service."""
    from fastapi.testclient import TestClient

    clients = []

    def build(store: bool = True, **changes):
        config = dataclasses.replace(serve_config, **changes)
        loaded = service if store else dataclasses.replace(service, store=None)
        client = TestClient(create_app(config, loaded))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def client(make_client):
    return make_client()
