"""`astrofm embed --model MODEL_DIR --data DATA_DIR --out EMB_DIR [--split S] [--batch-size B] [--devices N]`."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
output: EMB_DIR/{modality}.parquet (columns id, split, embedding = fixed-size list of float32, then
  one column per label and meta field; only objects having the modality) and EMB_DIR/manifest.json
  (model and dataset sha256, dimension, counts per modality and split). Read them with pyarrow or
  pandas, no astrofm needed.
devices: N > 1 runs N ranks (processes on CPU) through Lightning's distributed predict; each writes
  its part and rank 0 merges them. The folder appears only when complete.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed", help="embed dataset splits with a model folder into Parquet (one file per modality)",
        description="Run a model folder over a dataset's splits and write its embeddings.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (config.json + weights)")
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="dataset folder")
    parser.add_argument("--out", required=True, metavar="EMB_DIR", help="embedding folder to write")
    parser.add_argument("--split", action="append", dest="splits", metavar="S",
                        help="split to embed; repeat for several (default: every split)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B", help="objects per batch (default: 256)")
    parser.add_argument("--devices", type=int, default=1, metavar="N", help="ranks (default: 1)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "auto"],
                        help="where to run (default: cpu)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="W", help="loader workers per rank (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace EMB_DIR if it holds embeddings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.embedstore import EmbedConfig, embed

    config = EmbedConfig(model=args.model, data=args.data, out=args.out, splits=args.splits,
                         batch_size=args.batch_size, devices=args.devices, accelerator=args.accelerator,
                         num_workers=args.num_workers, overwrite=args.overwrite,
                         progress=not args.no_progress and sys.stderr.isatty())
    result = embed(config)
    if result.rank != 0:
        return 0
    modalities = result.manifest["modalities"]
    detail = ", ".join(f"{m} {entry['count']}" for m, entry in modalities.items())
    print(f"embedded {detail} (dimension {result.manifest['dimension']}) into {result.path}")
    return 0
