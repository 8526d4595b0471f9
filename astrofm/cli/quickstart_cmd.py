"""`astrofm quickstart --out DIR [--n N]`: the main job, end to end, on the built-in mock universe.

Steps today: generate the observed mock survey, pretrain the `tiny` recipe on it, export the model,
embed the test split and measure cross-modal retrieval. Search, regression and the misspecification
study join as they land. Writes DIR/summary.json beside the data, the run and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="run the main job end to end on the mock universe",
                                   description="Generate a mock survey, pretrain tiny encoders on it, export "
                                               "the model and report cross-modal retrieval on the test split.")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    parser.add_argument("--n", type=int, default=3000, help="objects in the observed survey (default 3000)")
    parser.add_argument("--epochs", type=int, default=4, help="pretraining epochs (default 4)")
    parser.add_argument("--recipe", default=str(REPO / "configs" / "pretrain" / "tiny.yaml"),
                        help="pretraining recipe (default configs/pretrain/tiny.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="generator and loader processes (default: up to 2)")
    parser.set_defaults(handler=run)


def _pretrain(recipe: str, data: Path, run_dir: Path, epochs: int, workers: int, seed: int) -> None:
    from pretrain.cli import main as pretrain_main

    pretrain_main(["fit", "--config", recipe, "--data.path", str(data), "--trainer.default_root_dir", str(run_dir),
                   "--trainer.max_epochs", str(epochs), "--data.num_workers", str(workers),
                   "--seed_everything", str(seed)])


def _retrieval_table(metrics: dict[str, float]) -> str:
    pairs = sorted({name.split("/", 1)[1] for name in metrics if name.startswith("top1/")})
    lines = [f"{'pair':<24}{'pool':>6}{'top-1':>8}{'top-10':>8}  (chance top-10: 10/pool)"]
    for pair in pairs:
        lines.append(f"{pair:<24}{int(metrics[f'pool/{pair}']):>6}{metrics[f'top1/{pair}']:>8.3f}"
                     f"{metrics[f'top10/{pair}']:>8.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import astrofm
    from astrofm.data.reader import Dataset
    from astrofm.data.summary import format_summary, summarize
    from astrofm.embeddings import embed_split
    from astrofm.retrieval import pairwise_retrieval
    from astrofm.sims import MockConfig, generate_mock

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    survey = out / "data" / "observed"
    print(f"[1/3] generating {args.n} objects of the observed mock universe into {survey}")
    generate_mock(MockConfig(suite="observed", n=args.n, out=str(survey), seed=args.seed, workers=args.workers,
                             shard_size=max(100, args.n // 20)))
    summary = summarize(Dataset(survey), verify=True)
    print(format_summary(summary))
    timings["mock_s"] = time.perf_counter() - start

    run_dir = out / "pretrain"
    print(f"\n[2/3] pretraining {Path(args.recipe).stem} for {args.epochs} epochs into {run_dir}")
    _pretrain(args.recipe, survey, run_dir, args.epochs, args.workers, args.seed)
    timings["pretrain_s"] = time.perf_counter() - start - timings["mock_s"]

    print("\n[3/3] embedding the test split and measuring cross-modal retrieval")
    model = astrofm.load_model(run_dir / "model")
    test = embed_split(model, str(survey), split="test")
    retrieval = pairwise_retrieval(test.embeddings, test.masks, ks=(1, 10), max_objects=1000)
    timings["evaluate_s"] = time.perf_counter() - start - timings["mock_s"] - timings["pretrain_s"]
    timings["total_s"] = time.perf_counter() - start

    report = {"objects": summary["objects"], "splits": summary["splits"], "verify_ok": summary["verify"]["ok"],
              "model": str(run_dir / "model"), "test_retrieval": retrieval,
              "timings": {k: round(v, 1) for k, v in timings.items()}}
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\ncross-modal retrieval on the test split (the same object in the other modality):")
    print(_retrieval_table(retrieval))
    print(f"\nquickstart finished in {timings['total_s']:.0f} s (mock {timings['mock_s']:.0f} s, "
          f"pretrain {timings['pretrain_s']:.0f} s); summary in {out / 'summary.json'}")
    return 0 if summary["verify"]["ok"] else 1
