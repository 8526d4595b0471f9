"""Loader throughput and memory: decoded, collated samples/s with N workers beside the raw read speed of
the same shards, and peak memory for 1x and 10x as many shards (it must stay flat). Then pretraining's
resampled epochs, restarted every epoch or kept as one persistent stream: the wait for each epoch's
first batch, and samples/s over several epochs.

Objects have the default spec's shapes (a 3101-pixel spectrum with ivar, 5-band photometry, a 3x32x32
image with ivar) filled with noise; each measurement runs in a fresh process so peak RSS is its own.

    python benchmarks/bench_loader.py [--shards 4] [--shard-size 500] [--workers 2] [--batch-size 64]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_dataset(out: Path, n_shards: int, shard_size: int) -> Path:
    from astrofm.data import DatasetSpec, DatasetWriter, Sample, WriterConfig

    spec = DatasetSpec()
    rng = np.random.default_rng(0)
    n_pix, n_bands, size = spec.spectrum.n_pixels, len(spec.photometry.bands), spec.image.size
    config = WriterConfig(shard_size=shard_size, split_fractions={"train": 1.0, "val": 0.0, "test": 0.0})
    with DatasetWriter(out, spec, config=config) as writer:
        for i in range(n_shards * shard_size):
            writer.add(Sample(
                id=f"bench-{i:08d}", labels={"redshift": float(rng.uniform(0, 1))},
                spectrum={"flux": rng.normal(size=n_pix), "ivar": np.ones(n_pix)},
                photometry={"flux": rng.normal(10, 1, n_bands), "flux_err": np.ones(n_bands)},
                image={"flux": rng.normal(size=(3, size, size)), "ivar": np.ones((3, size, size))}))
    return out


def measure_loader(path: str, workers: int, batch_size: int) -> dict:
    """Runs inside a fresh process: one full pass, timed, with peak memory of it and its workers."""
    from astrofm.data.loader import LoaderConfig, make_dataloader

    config = LoaderConfig(path=path, batch_size=batch_size, num_workers=workers, shuffle=True,
                          shuffle_buffer=1000)
    start = time.perf_counter()
    samples = sum(len(batch["id"]) for batch in make_dataloader(config))
    elapsed = time.perf_counter() - start
    return {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed,
            "peak_rss_mb_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_mb_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure_epochs(path: str, workers: int, batch_size: int, persistent: bool, epochs: int = 5) -> dict:
    """Runs inside a fresh process: resampled epochs of one split's size, as pretraining reads them."""
    from astrofm.data.loader import LoaderConfig, make_dataloader

    config = LoaderConfig(path=path, batch_size=batch_size, num_workers=workers, shuffle_buffer=1000,
                          resampled=True, samples_per_epoch=2000, persistent=persistent)
    loader = make_dataloader(config)
    first_batch_s, samples = [], 0
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)  # what pretraining does (persistent workers no longer need it)
        epoch_start = time.perf_counter()
        for i, batch in enumerate(loader):
            if i == 0:
                first_batch_s.append(time.perf_counter() - epoch_start)
            samples += len(batch["id"])
    elapsed = time.perf_counter() - start
    return {"samples_per_s": samples / elapsed, "first_batch_s": first_batch_s}


def raw_read(path: Path) -> dict:
    """Bytes/s of reading every shard whole, after one warm read (page cache, as the loader sees it)."""
    shards = sorted((path / "shards").glob("*.tar"))
    for shard in shards:
        shard.read_bytes()
    start = time.perf_counter()
    total = sum(len(shard.read_bytes()) for shard in shards)
    elapsed = time.perf_counter() - start
    return {"bytes": total, "bytes_per_s": total / elapsed}


def in_fresh_process(call: str) -> dict:
    """Runs `call`, an expression over this module (e.g. "measure_loader('/x', 2, 64)"), in a new process."""
    code = f"import json, sys; sys.path.insert(0, 'benchmarks'); import bench_loader as b; print(json.dumps(b.{call}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = build_dataset(Path(tmp) / "x1", args.shards, args.shard_size)
        large = build_dataset(Path(tmp) / "x10", 10 * args.shards, args.shard_size)
        raw = raw_read(small)
        x1 = in_fresh_process(f"measure_loader({str(small)!r}, {args.workers}, {args.batch_size})")
        x10 = in_fresh_process(f"measure_loader({str(large)!r}, {args.workers}, {args.batch_size})")
        epochs = {mode: in_fresh_process(f"measure_epochs({str(small)!r}, {args.workers}, {args.batch_size}, "
                                         f"persistent={mode == 'persistent'})")
                  for mode in ("restarted", "persistent")}
    bytes_per_sample = raw["bytes"] / x1["samples"]
    print(json.dumps({
        "benchmark": "loader",
        "workers": args.workers, "batch_size": args.batch_size, "shard_size": args.shard_size,
        "bytes_per_sample": round(bytes_per_sample),
        "loader_samples_per_s": round(x1["samples_per_s"], 1),
        "loader_mb_per_s": round(x1["samples_per_s"] * bytes_per_sample / 1e6, 1),
        "raw_read_mb_per_s": round(raw["bytes_per_s"] / 1e6, 1),
        "raw_read_samples_per_s": round(raw["bytes_per_s"] / bytes_per_sample, 1),
        "peak_rss_mb": {"1x": {"shards": args.shards, "main": round(x1["peak_rss_mb_main"]),
                               "worker": round(x1["peak_rss_mb_worker"])},
                        "10x": {"shards": 10 * args.shards, "main": round(x10["peak_rss_mb_main"]),
                                "worker": round(x10["peak_rss_mb_worker"])}},
        "samples_per_s_10x": round(x10["samples_per_s"], 1),
        "resampled_epochs": {mode: {"samples_per_s": round(m["samples_per_s"], 1),
                                    "first_batch_s": [round(t, 3) for t in m["first_batch_s"]]}
                             for mode, m in epochs.items()},
    }))


if __name__ == "__main__":
    main()
