"""`astrofm retrieval --embeddings EMB_DIR --out REPORT_DIR`: cross-modal retrieval and neighbour label
consistency, with random and raw-input baselines; metrics.json and PNG plots."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrieval", help="retrieval report of an embedding folder (top-k, rank curves, neighbour labels)",
        description="Per modality pair: top-1/top-10 retrieval, the fraction-correct-vs-rank curve and its "
                    "area; per modality: median |dz|/(1+z) of the 10 nearest neighbours beside random and "
                    "raw-input kNN baselines, and for every numeric label how much more closely the 10 "
                    "nearest neighbours agree on it than random pairs do (what the neighbourhoods are "
                    "organised by). Writes REPORT_DIR/metrics.json and PNG plots.")
    parser.add_argument("--embeddings", required=True, metavar="EMB_DIR", help="embedding folder (astrofm embed)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder to write")
    parser.add_argument("--split", default="test", help="split to evaluate, or 'all' (default: test)")
    parser.add_argument("--max-objects", type=int, default=1000, metavar="N", help="pool size (default: 1000)")
    parser.add_argument("--label", default="redshift", help="numeric label for neighbour consistency")
    parser.add_argument("--data", metavar="DATA_DIR",
                        help="dataset for the raw-input baseline (default: the one the store was made from)")
    parser.add_argument("--no-raw-baseline", action="store_true", help="skip the raw-input kNN baseline")
    parser.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.retrieval_report import RetrievalReportConfig, write_report

    config = RetrievalReportConfig(embeddings=args.embeddings, out=args.out,
                                   split=None if args.split == "all" else args.split, max_objects=args.max_objects,
                                   label=args.label, data=args.data, raw_baseline=not args.no_raw_baseline,
                                   overwrite=args.overwrite)
    out = write_report(config)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    for pair, entry in metrics["pairs"].items():
        print(f"{pair:22s} top1 {entry['top1']:.3f}  top10 {entry['top10']:.3f}  area {entry['area']:.3f}  "
              f"(random top1 {entry['random']['top1']:.3f}, pool {entry['pool']})")
    for name, entry in metrics["neighbours"].items():
        extra = "".join(f"  {key} {entry[key]:.4f}" for key in ("random", "raw_knn") if entry.get(key) is not None)
        print(f"{name:22s} median |dz|/(1+z) {entry['embedding']:.4f}{extra}")
    for modality, found in metrics.get("neighbour_agreement", {}).items():
        closest = ", ".join(f"{label} {entry['ratio']:.3f}" for label, entry in list(found.items())[:4])
        if closest:
            print(f"{modality:22s} neighbours agree most on (|dlabel| / random): {closest}")
    print(f"report written to {out}")
    return 0
