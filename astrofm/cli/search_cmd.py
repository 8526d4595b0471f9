"""`astrofm search --index IDX (--id OBJ [--query-embeddings EMB_DIR --query-modality M] |
--model MODEL_DIR --query-file FILE) [--k 10] [--json]`."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
queries:
  --id OBJ                                   an object of the index; it is left out of its own results
  --id OBJ --query-embeddings EMB_DIR --query-modality M
                                             that object's M embedding (e.g. its image for a spectrum
                                             index); its own entry in the results is marked
  --model MODEL_DIR --query-file FILE        an SDSS spectrum FITS or a FITS cut-out, embedded by the model
output: a table (rank, id, score, split, labels), or with --json a list of
  {"rank", "id", "score", "is_query", "labels"} objects.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="nearest neighbours in an index, by id, across modalities "
                                                  "or from a FITS file",
                                   description="Similarity search (cosine) in an index folder.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, metavar="IDX", help="index folder (astrofm index build)")
    parser.add_argument("--id", dest="object_id", metavar="OBJ", help="query object id")
    parser.add_argument("--query-embeddings", metavar="EMB_DIR", help="embedding folder holding the query's vector")
    parser.add_argument("--query-modality", choices=["spectrum", "photometry", "image"],
                        help="modality of the query (default: the index's, or the file's kind)")
    parser.add_argument("--model", metavar="MODEL_DIR", help="model folder to embed --query-file with")
    parser.add_argument("--query-file", metavar="FILE", help="SDSS spectrum FITS file or FITS image cut-out")
    parser.add_argument("--k", "-k", type=int, default=10, help="neighbours to return (default: 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="label columns of the table (default: split, redshift, mag_r, ... where present)")
    parser.add_argument("--ef-search", type=int, help="HNSW search beam (default: the index's)")
    parser.add_argument("--nprobe", type=int, help="IVF lists to search (default: the index's)")
    parser.add_argument("--no-verify", action="store_true", help="skip the index checksum check")
    parser.add_argument("--no-mmap", action="store_true", help="read the index into memory, no memory map")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="accept a query embedded by another model than the index's")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from astrofm.search import SearchConfig, format_table, search

    params = {key: value for key, value in (("ef_search", args.ef_search), ("nprobe", args.nprobe))
              if value is not None}
    config = SearchConfig(index=args.index, k=args.k, object_id=args.object_id,
                          query_embeddings=args.query_embeddings, query_modality=args.query_modality,
                          model=args.model, query_file=args.query_file, verify=not args.no_verify,
                          mmap=not args.no_mmap, allow_other_model=args.allow_other_model,
                          search_params=params or None)
    result = search(config)
    print(json.dumps(result.to_json(), indent=2) if args.json else format_table(result, labels=args.labels))
    return 0
