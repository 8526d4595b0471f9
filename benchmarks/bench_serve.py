"""HTTP service load test: `astrofm serve` under uvicorn on a free 127.0.0.1 port, N concurrent httpx
clients for T seconds per endpoint, requests/s and p50/p99 latency for search-by-id and for embed.

    python benchmarks/bench_serve.py                      # 8 clients x 10 s per endpoint
    python benchmarks/bench_serve.py --clients 16 --seconds 20 --n 2000

Unless given --model/--index (and --embeddings), it builds its own: a mock survey of --n objects, the
recipe's model (untrained: weights do not change the speed), its embeddings and a flat spectrum index.
Each embed request carries one spectrum on the model's grid, so the server's micro-batcher is what
groups concurrent requests. The clients run on the same machine as the server and share its cores.
Progress goes to stderr; stdout gets ONE JSON object. Any 5xx makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from serving.process import served

REPO = Path(__file__).resolve().parents[1]
READY_SECONDS = 180


def log(message: str) -> None:
    print(f"[bench_serve {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_world(root: Path, n: int, recipe: str) -> tuple[Path, Path, Path]:
    """A mock survey, an untrained `recipe` model saved as a folder, its embeddings, a spectrum index."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_pretrain import build_model

    from astrofm.data.manifest import load_manifest
    from astrofm.embedstore import EmbedConfig, embed
    from astrofm.index import IndexConfig, build_index
    from astrofm.models import save_model
    from astrofm.sims import MockConfig, generate_mock

    data = root / "data"
    generate_mock(MockConfig(suite="observed", n=n, out=str(data), shard_size=250), progress=False)
    model = build_model(REPO / "configs" / "pretrain" / f"{recipe}.yaml", load_manifest(data)).eval()
    model_dir = save_model(model, root / "model")
    embeddings = embed(EmbedConfig(model=str(model_dir), data=str(data), out=str(root / "emb"),
                                   progress=False)).path
    index = build_index(IndexConfig(embeddings=str(embeddings), modality="spectrum", out=str(root / "index"),
                                    kind="flat"))
    return model_dir, index, embeddings


def serve_args(args, model: Path, index: Path, embeddings: Path | None) -> list[str]:
    out = ["--model", str(model), "--index", str(index), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if embeddings is not None:
        out += ["--embeddings", str(embeddings)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


async def load(url: str, clients: int, seconds: float, make_request) -> dict:
    """`clients` loops sending make_request() back to back for `seconds`; latencies and status counts."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client_loop(client: httpx.AsyncClient, stop_at: float, rng: random.Random) -> None:
        while time.perf_counter() < stop_at:
            method, path, body = make_request(rng)
            start = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
                key = str(response.status_code)
            except httpx.HTTPError as error:
                key = type(error).__name__
            latencies.append(time.perf_counter() - start)
            statuses[key] = statuses.get(key, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(min(clients, 4)):  # warm-up: first requests pay for lazy imports and allocations
            method, path, body = make_request(random.Random(0))
            await client.request(method, path, json=body)
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*[client_loop(client, stop_at, random.Random(i)) for i in range(clients)])
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "status": dict(sorted(statuses.items())),
            "server_errors": sum(v for k, v in statuses.items() if k.startswith("5"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per endpoint (default: 10)")
    parser.add_argument("--n", type=int, default=500, help="mock objects to build the index from (default: 500)")
    parser.add_argument("--recipe", default="tiny", help="model recipe under configs/pretrain (default: tiny)")
    parser.add_argument("--model", help="model folder to serve instead of building one")
    parser.add_argument("--index", help="index folder to serve (with --model)")
    parser.add_argument("--embeddings", help="embedding folder to serve (with --model)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, help="server torch threads (default: torch's)")
    args = parser.parse_args()
    if (args.model is None) != (args.index is None):
        parser.error("give --model and --index together, or neither")
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench_serve.") as tmp:
        root = Path(tmp)
        if args.model is None:
            log(f"building a {args.n}-object mock survey, a {args.recipe} model, embeddings and an index")
            model, index, embeddings = build_world(root, args.n, args.recipe)
        else:
            model, index = Path(args.model), Path(args.index)
            embeddings = Path(args.embeddings) if args.embeddings else None
        env = {**os.environ, "WANDB_MODE": "offline"}
        env.pop("ASTROFM_API_KEY", None)
        with served(serve_args(args, model, index, embeddings), root / "server.log", env=env,
                    ready_s=READY_SECONDS) as server:
            url = server.url
            info = httpx.get(f"{url}/v1/info", timeout=10).json()
            import pyarrow.parquet as pq

            ids = pq.read_table(index / "ids.parquet", columns=["id"]).column("id").to_pylist()
            pixels = info["model"]["spec"]["spectrum"]["n_pixels"]
            flux = np.random.default_rng(0).normal(1.0, 0.1, (32, pixels)).round(4).tolist()
            ivar = [1.0] * pixels
            k = min(args.k, len(ids) - 1)

            def search_request(rng: random.Random):
                return "POST", "/v1/search", {"id": rng.choice(ids), "k": k}

            def embed_request(rng: random.Random):
                return "POST", "/v1/embed", {"modality": "spectrum",
                                             "objects": [{"flux": rng.choice(flux), "ivar": ivar}]}

            log(f"server ready: {info['index']['count']} {info['index']['modality']} vectors "
                f"({info['index']['kind']}), dimension {info['dimension']}; {args.clients} clients x "
                f"{args.seconds:g} s per endpoint")
            search = asyncio.run(load(url, args.clients, args.seconds, search_request))
            log(f"search by id: {search}")
            embedded = asyncio.run(load(url, args.clients, args.seconds, embed_request))
            log(f"embed: {embedded}")
            stats = httpx.get(f"{url}/v1/info", timeout=10).json()["batcher"]
            embedded["mean_objects_per_forward_pass"] = round(stats["objects"] / max(stats["batches"], 1), 2)
    errors = search["server_errors"] + embedded["server_errors"]
    print(json.dumps({
        "benchmark": "serve", "clients": args.clients, "seconds_per_endpoint": args.seconds,
        "index": {"count": info["index"]["count"], "kind": info["index"]["kind"], "dimension": info["dimension"]},
        "model": args.recipe if args.model is None else Path(args.model).name, "spectrum_pixels": pixels,
        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "cpu_cores": os.cpu_count(),
        "search_by_id": search, "embed_one_spectrum": embedded, "server_errors_5xx": errors}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
