"""A real `astrofm serve` process under uvicorn on a free loopback port, reached with httpx: readiness
within a deadline, the API key from the environment, and concurrent embeds through the micro-batcher."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from serving.process import served
from tests.serving.test_embed import _photometry, _spectrum


@pytest.mark.slow
def test_serve_process(world, index_dir, tmp_path):
    key = "process-key"
    env = {**os.environ, "ASTROFM_API_KEY": key, "WANDB_MODE": "offline"}
    serve_args = ["--model", str(world.model), "--index", str(index_dir), "--embeddings", str(world.embeddings),
                  "--max-wait-ms", "20", "--log-level", "warning"]
    with served(serve_args, tmp_path / "serve.log", env=env) as server:
        url = server.url
        assert httpx.get(f"{url}/v1/info", timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            info = client.get("/v1/info").json()
            assert info["index"]["count"] == 53 and info["auth"] is True
            hits = client.post("/v1/search", json={"id": "obj-00001", "k": 4}).json()["hits"]
            assert len(hits) == 4 and "obj-00001" not in [h["id"] for h in hits]
            assert client.get("/v1/objects/obj-00003").json()["labels"]["index"] == 3

        async def many():
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
                bodies = [{"modality": "spectrum", "objects": [_spectrum(i)]} for i in range(1, 13)]
                bodies += [{"modality": "photometry", "objects": [_photometry(i)]} for i in range(1, 5)]
                return await asyncio.gather(*[client.post("/v1/embed", json=body) for body in bodies])

        responses = asyncio.run(asyncio.wait_for(many(), timeout=120))
        assert [r.status_code for r in responses] == [200] * 16
        assert [r.json()["ids"][0] for r in responses[:12]] == [f"obj-{i:05d}" for i in range(1, 13)]
        stats = httpx.get(f"{url}/v1/info", headers=headers, timeout=10).json()["batcher"]
        assert stats["objects"] == 16 and stats["batches"] < 16  # concurrent requests shared passes
    assert server.process.returncode in (0, -15), server.log_tail()


def test_a_server_that_cannot_start_fails_fast_with_its_log(tmp_path):
    from serving.process import ServerStartError

    with pytest.raises(ServerStartError, match="exited with 1(.|\n)*no such"):
        with served(["--model", str(tmp_path / "missing"), "--index", str(tmp_path / "missing")],
                    tmp_path / "serve.log", ready_s=60):
            pass
