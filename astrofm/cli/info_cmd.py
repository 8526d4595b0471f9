"""`astrofm data info DIR [--verify] [--json]`."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="counts, schema and checksums of a dataset",
                                   description="Summarise a dataset: objects per split and modality, the "
                                               "modality specs and labels; --verify checks every shard.")
    parser.add_argument("path", metavar="DIR", help="dataset folder (holding manifest.json)")
    parser.add_argument("--verify", action="store_true",
                        help="check every shard's size, sha256 and object count; exit 1 on a mismatch")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.data.reader import Dataset
    from astrofm.data.summary import format_summary, summarize

    summary = summarize(Dataset(args.path), verify=args.verify)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if summary.get("verify", {}).get("ok", True) else 1
