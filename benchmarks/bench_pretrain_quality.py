"""Pretraining quality: `tiny` on a 20,000-object mock survey within 15 minutes on this machine, then
cross-modal top-1/top-10 retrieval among 1,000 objects of the test split for every modality pair.

    python benchmarks/bench_pretrain_quality.py [--n 20000] [--minutes 14] [--work DIR] [--spectrum-terms]

The recipe's spectrum-internal terms (masked spectrum, spectrum self view) are switched off unless
--spectrum-terms is given: they pay off after 15-25 epochs and cost retrieval in a 14-minute run.

Runs the real commands (astrofm data mock, astrofm pretrain fit) and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def astrofm(*args: str) -> None:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    subprocess.run([sys.executable, "-m", "astrofm.cli.main", *args], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--minutes", type=int, default=14, help="training wall-clock cap")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--work", default=None, help="keep data and run here (default: a temporary folder)")
    parser.add_argument("--spectrum-terms", action="store_true",
                        help="keep the recipe's masked-spectrum and spectrum self-view terms")
    args = parser.parse_args()
    from pretrain.cli import CROSS_MODAL_ONLY

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data, run = work / "observed", work / "run"
        start = time.perf_counter()
        if not (data / "manifest.json").exists():
            astrofm("data", "mock", "--suite", "observed", "--n", str(args.n), "--out", str(data), "--workers", "2",
                    "--no-progress")
        mock_s = time.perf_counter() - start
        astrofm("pretrain", "fit", "--config", str(REPO / "configs/pretrain/tiny.yaml"), "--data.path", str(data),
                "--trainer.default_root_dir", str(run), "--trainer.max_epochs", str(args.epochs),
                "--trainer.max_time", f"00:00:{args.minutes:02d}:00", "--trainer.enable_progress_bar", "false",
                *([] if args.spectrum_terms else CROSS_MODAL_ONLY))
        fit_s = time.perf_counter() - start - mock_s

        import astrofm as package
        from astrofm.embeddings import embed_split
        from astrofm.retrieval import pairwise_retrieval

        test = embed_split(package.load_model(run / "model"), str(data), split="test")
        retrieval = pairwise_retrieval(test.embeddings, test.masks, ks=(1, 10), max_objects=1000)
    print(json.dumps({"benchmark": "pretrain_quality", "objects": args.n, "mock_s": round(mock_s, 1),
                      "fit_s": round(fit_s, 1), "test_retrieval_among_1000": {k: round(v, 3) for k, v in
                                                                             retrieval.items()},
                      "chance_top10": 0.01}))


if __name__ == "__main__":
    main()
