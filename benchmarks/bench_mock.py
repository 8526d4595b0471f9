"""Mock-universe generation speed: `python benchmarks/bench_mock.py [N] [--suite observed]`.

Generates N objects (default 500) with 1 and 2 workers into a temporary folder and prints one JSON
object: wall time, objects/s, ms per object and CPU seconds per setting (process start-up and
galsim's one-off Sersic tables included), the steady-state rate of one warm process, and dataset
bytes per object. On a shared machine compare cpu_seconds as well as wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (the spawned workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=500, help="objects per setting (default 500)")
    parser.add_argument("--suite", default="observed")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from astrofm.sims import MockConfig, generate_mock
    from astrofm.sims.generate import Simulator
    from astrofm.sims.suite import load_suite

    result: dict = {"benchmark": "mock", "suite": args.suite, "n": args.n, "cpus": os.cpu_count(),
                    "python": platform.python_version(), "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            out = Path(tmp) / f"w{workers}"
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            manifest = generate_mock(MockConfig(suite=args.suite, n=args.n, out=str(out), seed=0,
                                                shard_size=1000, workers=workers), progress=False)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_before
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            result["settings"][f"workers_{workers}"] = {
                "seconds": round(seconds, 3), "objects_per_s": round(args.n / seconds, 1),
                "ms_per_object": round(1e3 * seconds / args.n, 2),
                # CPU of this process and its workers: tells start-up cost from a busy machine.
                "cpu_seconds": round(cpu, 2), "cpu_ms_per_object": round(1e3 * cpu / args.n, 2),
            }
            result["bytes_per_object"] = round(size / manifest.count())

    # One warm process, no writing: what a core sustains once galsim's tables exist.
    simulator = Simulator(load_suite(args.suite), seed=1)
    simulator.simulate(0, 200)  # warm-up: every Sersic index on the grid gets its table
    start = time.perf_counter()
    count = max(args.n, 200)
    for first in range(0, count, 32):
        simulator.simulate(first, min(first + 32, count))
    seconds = time.perf_counter() - start
    result["steady_state_one_core"] = {"objects_per_s": round(count / seconds, 1),
                                       "ms_per_object": round(1e3 * seconds / count, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
