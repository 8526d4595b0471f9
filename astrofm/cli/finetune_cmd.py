"""`astrofm finetune --model MODEL_DIR --data DATA_DIR --modality M --target LABEL [LABEL ...]
--label-fraction F [F ...] --out REPORT_DIR`: fine-tune the pretrained M encoder on a few labels, beside the same architecture trained
from scratch and the MLP probe on frozen embeddings; metrics.json, PNG plots, report.md.

Settings come from the FinetuneConfig defaults, then a `--config` recipe (YAML), then the flags given."""

from __future__ import annotations

import argparse

# flag -> FinetuneConfig field, for the settings a recipe may also hold
FLAGS = {"modality": "modality", "target": "targets", "label_fraction": "label_fractions", "seeds": "seeds",
         "method": "methods", "epochs": "epochs", "patience": "patience", "max_steps": "max_steps",
         "batch_size": "batch_size", "lr_encoder": "lr_encoder", "lr_head": "lr_head", "lr_scratch": "lr_scratch",
         "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "num_workers": "num_workers",
         "threads": "threads", "head_epochs": "head_epochs", "augment": "augment",
         "noise_redraws": "noise_redraws"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune", help="few-label fine-tuning of a pretrained encoder vs the same model trained from scratch",
        description="On seeded, nested label subsets of the train split: fine-tune the pretrained encoder "
                    "(lower learning rate) with a new regression head, train the same architecture from "
                    "fresh weights (the supervised baseline), and fit the MLP probe on frozen embeddings; "
                    "early stopping on val, metrics on test. Writes REPORT_DIR/metrics.json, "
                    "label_subsets.json, PNG plots and report.md.")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="pretrained model folder")
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="dataset folder (splits and labels)")
    parser.add_argument("--modality", required=True, metavar="M", help="the encoder to fine-tune")
    parser.add_argument("--target", nargs="+", required=True, metavar="LABEL",
                        help="numeric label(s) to predict; each is fitted on its own, in one report")
    parser.add_argument("--label-fraction", nargs="+", type=float, metavar="F",
                        help="fractions of the train split's labelled objects (default: 0.1)")
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds per fraction (default: 3)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to write")
    parser.add_argument("--config", metavar="YAML", help="recipe: a mapping of settings, e.g. "
                                                         "configs/downstream/finetune_tiny.yaml")
    parser.add_argument("--method", nargs="+", choices=["finetune", "scratch", "probe"],
                        help="methods (default: all three)")
    parser.add_argument("--epochs", type=int, help="most epochs per run (default: 60)")
    parser.add_argument("--patience", type=int, help="epochs without a better val MSE before stopping (default: 8)")
    parser.add_argument("--max-steps", type=int, help="cap on optimiser steps per run (default: none)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: 64)")
    parser.add_argument("--lr-encoder", type=float, help="pretrained encoder's learning rate (default: 1e-4)")
    parser.add_argument("--lr-head", type=float, help="new regression head's learning rate (default: 1e-3)")
    parser.add_argument("--lr-scratch", type=float, help="from-scratch model's learning rate (default: 1e-3)")
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 50)")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.01)")
    parser.add_argument("--head-epochs", type=int, help="fine-tune: first fit the head alone on frozen "
                                                        "embeddings for this many epochs (LP-FT; default: 0)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="pretraining's augmentations (image rotations and flips, noise redraws) on the "
                             "training batches of finetune and scratch (default: on)")
    parser.add_argument("--noise-redraws", choices=["choose", "on", "off"],
                        help="spectrum and photometry noise redraws among the augmentations: choose (fit with "
                             "and without, keep the lower val MSE), on or off (default: choose)")
    parser.add_argument("--num-workers", type=int, help="loader workers reading the dataset (default: 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--redshift-like", choices=["auto", "yes", "no"], default="auto",
                        help="dz/(1+z) residuals for bias/NMAD/outliers (default: auto, from the target name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")
    parser.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR")
    parser.set_defaults(handler=run)


def make_config(args: argparse.Namespace):
    from downstream.finetune import FinetuneConfig, load_recipe

    settings = load_recipe(args.config) if args.config else {}
    settings.update({field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None})
    if args.redshift_like != "auto":
        settings["redshift_like"] = args.redshift_like == "yes"
    if args.no_progress:
        settings["progress"] = False
    return FinetuneConfig(model=args.model, data=args.data, out=args.out, overwrite=args.overwrite, **settings)


def run(args: argparse.Namespace) -> int:
    import json

    from downstream.finetune import write_report

    out = write_report(make_config(args))
    metrics = json.loads((out / "metrics.json").read_text())
    order = {target: i for i, target in enumerate(metrics["config"]["targets"])}
    for entry in sorted(metrics["summary"], key=lambda e: (order[e["target"]], e["label_fraction"], e["method"])):
        mean, std = entry["mean"], entry["std"]
        print(f"{entry['target']:16s} {entry['method']:9s} f={entry['label_fraction']:<6g} n_train={entry['n_train']:<6d} "
              f"R2 {mean['r2']:.4f} ± {std['r2']:.4f}  NMAD {mean['nmad']:.4f}  outliers {mean['outlier_fraction']:.4f}")
    print(f"report written to {out}")
    return 0
