"""Cross-modal generation: wall time and the test metrics of each method (decoder on frozen embeddings, kNN
mean, raw-source MLP, train mean) for one source -> target pair, through `astrofm generate`'s own code.

    python benchmarks/bench_generate.py --model /tmp/q/run/model --data /tmp/q/observed \
        --source photometry --target spectrum [--out REPORT_DIR] [--threads 2]

Without --out the report goes to a temporary folder. Progress goes to stderr; stdout gets ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    args = parser.parse_args()
    from downstream.generation import GenerateConfig, write_report

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "report")
        config = GenerateConfig(model=args.model, data=args.data, source=args.source, target=args.target, out=out,
                                epochs=args.epochs, threads=args.threads, max_train=args.max_train,
                                overwrite=True)
        start = time.time()
        write_report(config)
        wall = time.time() - start
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    keep = ("r2", "nmad", "outlier_fraction")
    records = [{"method": r["method"], "n_train": r["n_train"], "n_test": r["n_test"], "chosen": r["chosen"],
                "chi2_median": r["chi2_median"], "chi2_mean": r["chi2_mean"], "mse_median": r["mse_median"],
                "mse_mean": r["mse_mean"],
                "consistency": {k: v for k, v in (r.get("consistency") or {}).items() if k in keep or "-" in k}}
               for r in metrics["records"]]
    print(json.dumps({"benchmark": "generate", "source": args.source, "target": args.target, "wall_s": round(wall, 1),
                      "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
                      "codec": metrics["codec"], "consistency_ceiling": metrics.get("consistency_ceiling"),
                      "records": records}))


if __name__ == "__main__":
    main()
