"""`astrofm index build --embeddings EMB_DIR --modality M --out IDX [--kind auto|flat|hnsw|ivfpq]` and
`astrofm index info IDX`."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
kinds: flat is exact (inner product = cosine on unit vectors); hnsw is a graph over the full vectors
  (fast, high recall, about D*4 + 2*M*4 bytes a vector); ivfpq keeps 4-bit PQ codes in an inverted
  file and re-ranks candidates with half-precision vectors (about 2D + D/4 bytes a vector; --refine SQ8:
  D + D/4, lower recall); auto is exact up to --exact-limit vectors and ivfpq above.
output: IDX/index.faiss, IDX/ids.parquet (ids in index order, with labels), IDX/index.json
  (parameters, counts, the source embeddings, sha256 checksums).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build and describe faiss indexes over embeddings",
                                   description="Similarity-search indexes over an embedding folder.")
    commands = parser.add_subparsers(dest="index_command", metavar="INDEX_COMMAND", required=True)
    build = commands.add_parser("build", help="build an index over one modality of an embedding folder",
                                description="Build a faiss index over one modality of an embedding folder.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--embeddings", required=True, metavar="EMB_DIR", help="embedding folder (astrofm embed)")
    build.add_argument("--modality", required=True, choices=["spectrum", "photometry", "image"])
    build.add_argument("--out", required=True, metavar="IDX", help="index folder to write")
    build.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"], help="(default: auto)")
    build.add_argument("--split", action="append", dest="splits", metavar="S",
                       help="index only this split; repeat for several (default: all)")
    build.add_argument("--exact-limit", type=int, default=1_000_000, metavar="N",
                       help="auto: exact search up to N vectors (default: 1000000)")
    build.add_argument("--hnsw-m", type=int, default=32, metavar="M", help="HNSW links per vector (default: 32)")
    build.add_argument("--ef-construction", type=int, default=64, help="HNSW build beam (default: 64)")
    build.add_argument("--ef-search", type=int, default=256, help="HNSW search beam (default: 256)")
    build.add_argument("--nlist", type=int, help="IVF lists (default: a power of two near 2 sqrt(N))")
    build.add_argument("--nprobe", type=int, help="IVF lists searched per query (default: nlist/16, >= 8)")
    build.add_argument("--pq-m", type=int, help="PQ sub-quantisers, dividing D (default: D/2)")
    build.add_argument("--refine", default="SQfp16", choices=["SQfp16", "SQ8", "Flat"],
                       help="ivfpq re-ranking vectors (default: SQfp16)")
    build.add_argument("--overwrite", action="store_true", help="replace IDX if it holds an index")
    build.set_defaults(handler=run_build)

    info = commands.add_parser("info", help="describe an index folder", description="Describe an index folder.")
    info.add_argument("index", metavar="IDX", help="index folder")
    info.add_argument("--verify", action="store_true", help="check the sha256 checksums and that it loads")
    info.set_defaults(handler=run_info)


def run_build(args: argparse.Namespace) -> int:
    from astrofm.index import IndexConfig, build_index, read_index_info

    config = IndexConfig(embeddings=args.embeddings, modality=args.modality, out=args.out, kind=args.kind,
                         splits=args.splits, exact_limit=args.exact_limit, hnsw_m=args.hnsw_m,
                         hnsw_ef_construction=args.ef_construction, hnsw_ef_search=args.ef_search,
                         ivf_nlist=args.nlist, ivf_nprobe=args.nprobe, pq_m=args.pq_m, refine=args.refine,
                         overwrite=args.overwrite)
    out = build_index(config)
    info = read_index_info(out)
    print(f"built a {info['kind']} index of {info['count']} {info['modality']} vectors "
          f"(dimension {info['dimension']}, {info['build_seconds']:.1f} s) in {out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from astrofm.index import load_index, read_index_info

    info = read_index_info(args.index)
    if args.verify:
        load_index(args.index, verify=True)
        info["verified"] = True
    print(json.dumps(info, indent=2))
    return 0
