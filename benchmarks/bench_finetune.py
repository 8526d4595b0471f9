"""Few labels: does pretraining pay? Fine-tuned encoder and MLP probe on frozen embeddings against the same
architecture trained from scratch, on the same seeded label subsets, metrics on the test split.

    python benchmarks/bench_finetune.py --model runs/pretrain/tiny/model --data data/observed \
        [--modality spectrum] [--target redshift] [--fraction 0.1] [--seeds 2] [--epochs 60] [--threads 1]
        [--no-augment] [--noise-redraws choose|on|off] [--head-epochs N]

Prints one JSON object: per method the mean and std over seeds of test R^2 and NMAD, the seconds taken,
and whether each pretrained method beats the from-scratch baseline in mean test R^2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--modality", default="spectrum")
    parser.add_argument("--target", default="redshift")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=2)
    # the recipe's: the from-scratch baseline trained to convergence, or pretraining's lead is overstated
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="augmentations on training batches (default: on, as astrofm finetune)")
    parser.add_argument("--noise-redraws", choices=["choose", "on", "off"], default="choose",
                        help="spectrum/photometry noise redraws: chosen on val per run, or fixed (default: choose)")
    parser.add_argument("--head-epochs", type=int, default=0,
                        help="fine-tune: fit the head alone on frozen embeddings first (LP-FT; default: off)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also keep the report folder here")
    args = parser.parse_args()
    from downstream.finetune import FinetuneConfig, write_report

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "report")
        config = FinetuneConfig(model=args.model, data=args.data, out=out, modality=args.modality,
                                targets=[args.target], label_fractions=[args.fraction], seeds=args.seeds,
                                epochs=args.epochs, patience=args.patience, augment=args.augment,
                                head_epochs=args.head_epochs, noise_redraws=args.noise_redraws,
                                threads=args.threads, progress=False,
                                overwrite=True)
        metrics = json.loads((write_report(config) / "metrics.json").read_text())
    methods = {}
    for entry in metrics["summary"]:
        runs = [r for r in metrics["records"] if r["method"] == entry["method"]]
        methods[entry["method"]] = {
            "r2_mean": entry["mean"]["r2"], "r2_std": entry["std"]["r2"], "nmad_mean": entry["mean"]["nmad"],
            "outlier_fraction_mean": entry["mean"]["outlier_fraction"],
            "seconds_mean": sum(r.get("seconds", 0.0) for r in runs) / len(runs),
            "best_epochs": [r.get("best_epoch", r.get("chosen", {}).get("best_epoch")) for r in runs]}
    scratch = methods.get("scratch", {}).get("r2_mean")
    print(json.dumps({
        "modality": args.modality, "target": args.target, "label_fraction": args.fraction, "seeds": args.seeds,
        "n_train": metrics["summary"][0]["n_train"],
        **{key: per_target[args.target] for key, per_target in metrics["data"].items()}, "epochs": args.epochs,
        "patience": args.patience, "augment": args.augment,
        "noise_redraws": args.noise_redraws, "head_epochs": args.head_epochs,
        "methods": methods,
        "beats_scratch": {m: v["r2_mean"] > scratch for m, v in methods.items() if m != "scratch" and scratch is not None},
        "total_seconds": round(time.perf_counter() - start, 1)}, indent=2))


if __name__ == "__main__":
    main()
