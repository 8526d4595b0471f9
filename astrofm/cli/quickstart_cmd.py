"""`astrofm quickstart --out DIR [--n N]`: the main job on the built-in mock universe.

Today it generates the observed mock survey and prints its summary; as pretraining, embeddings and
the downstream studies land, each becomes one more step here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="run the main job end to end on the mock universe",
                                   description="Generate a mock survey of the observed reference universe "
                                               "and summarise it.")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    parser.add_argument("--n", type=int, default=2000, help="objects in the observed survey (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="generator processes (default: up to 2)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.data.reader import Dataset
    from astrofm.data.summary import format_summary, summarize
    from astrofm.sims import MockConfig, generate_mock

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    start = time.perf_counter()
    survey = out / "observed"
    generate_mock(MockConfig(suite="observed", n=args.n, out=str(survey), seed=args.seed, workers=args.workers))
    summary = summarize(Dataset(survey), verify=True)
    print(format_summary(summary))
    print(f"\nquickstart finished in {time.perf_counter() - start:.1f} s; dataset in {survey}")
    return 0 if summary["verify"]["ok"] else 1
