"""A real `astrofm serve` process under uvicorn on a free loopback port, reached with httpx: readiness
within a deadline, the API key from the environment, and concurrent embeds through the micro-batcher."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.test_embed import _photometry, _spectrum

REPO = Path(__file__).resolve().parents[2]
READY_SECONDS = 120  # imports and model load on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen, url: str, log: Path, deadline_s: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"astrofm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"astrofm serve not ready after {deadline_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_serve_process(world, index_dir, tmp_path):
    port, key = free_port(), "process-key"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ASTROFM_API_KEY": key, "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "astrofm.cli.main", "serve", "--model", str(world.model), "--index",
               str(index_dir), "--embeddings", str(world.embeddings), "--host", "127.0.0.1", "--port", str(port),
               "--max-wait-ms", "20", "--log-level", "warning"]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(process, url, log)
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
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
    assert process.returncode in (0, -15), log.read_text()[-3000:]
