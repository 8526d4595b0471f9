"""Embedding throughput: objects/s of a recipe's model (default `tiny`) embedding a mock survey's split
on this CPU, through the same loader and `embed_split` path that `astrofm embed` uses.

    python benchmarks/bench_embed.py [--n 3000] [--batch-size 256] [--workers 2]

Weights do not change the speed, so the model is built from the recipe untrained. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_pretrain import REPO, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tiny")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--data", default=None, help="dataset folder (default: a fresh mock survey)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from astrofm.data.manifest import load_manifest
    from astrofm.embeddings import embed_split

    with tempfile.TemporaryDirectory() as tmp:
        path = args.data
        if path is None:
            from astrofm.sims import MockConfig, generate_mock

            path = str(Path(tmp) / "observed")
            generate_mock(MockConfig(suite="observed", n=args.n, out=path, workers=args.workers, shard_size=250),
                          progress=False)
        model = build_model(REPO / "configs" / "pretrain" / f"{args.recipe}.yaml", load_manifest(path)).eval()
        start = time.perf_counter()
        result = embed_split(model, path, split=args.split, batch_size=args.batch_size, num_workers=args.workers)
        elapsed = time.perf_counter() - start
    print(json.dumps({"benchmark": "embed", "recipe": args.recipe, "objects": len(result.ids),
                      "batch_size": args.batch_size, "workers": args.workers,
                      "torch_threads": torch.get_num_threads(), "seconds": round(elapsed, 2),
                      "objects_per_s": round(len(result.ids) / elapsed, 1),
                      "embeddings_per_s": round(sum(int(m.sum()) for m in result.masks.values()) / elapsed, 1)}))


if __name__ == "__main__":
    main()
