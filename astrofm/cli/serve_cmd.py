"""`astrofm serve --model MODEL_DIR --index IDX [--embeddings EMB_DIR] [--host 127.0.0.1] [--port 8000]`."""

from __future__ import annotations

import argparse

EPILOG = """\
routes (JSON; OpenAPI document at /openapi.json, interactive docs at /docs):
  GET  /health              liveness
  GET  /v1/info             model, modalities, dimension, index kind and size, limits
  POST /v1/embed            {"modality": M, "objects": [...]} -> embeddings
  POST /v1/search           {"id" | "embedding" | "data", "k", "target_modality"} -> neighbours
  GET  /v1/objects/{id}     stored labels and meta of one object
auth: with ASTROFM_API_KEY set in the environment, every /v1 route needs 'Authorization: Bearer KEY'.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="HTTP service: embed objects and search an index",
                                   description="Serve a model and an index over HTTP (FastAPI + uvicorn).",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (safetensors weights)")
    parser.add_argument("--index", required=True, metavar="IDX", help="index folder (astrofm index build)")
    parser.add_argument("--embeddings", metavar="EMB_DIR",
                        help="embedding folder: cross-modal id queries and objects outside the index")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine "
                                                            "only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--max-batch", type=int, default=64, help="objects per forward pass (default: 64)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long a request waits to share a forward pass (default: 5)")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="embed requests waiting for the model before 503 (default: 256)")
    parser.add_argument("--max-k", type=int, default=100, help="neighbours per search at most (default: 100)")
    parser.add_argument("--max-objects", type=int, default=64, help="objects per embed request (default: 64)")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="request body limit in MiB (default: 8)")
    parser.add_argument("--threads", type=int, help="torch threads for the forward pass (default: torch's)")
    parser.add_argument("--no-verify", action="store_true", help="skip the index checksum check")
    parser.add_argument("--allow-other-model", action="store_true",
                        help="serve an index or embedding folder made by another model")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from serving.config import BatcherConfig, ServeConfig
    from serving.server import serve

    config = ServeConfig(model=args.model, index=args.index, embeddings=args.embeddings, host=args.host,
                         port=args.port, batcher=BatcherConfig(args.max_batch, args.max_wait_ms, args.max_queue),
                         max_k=args.max_k, max_objects_per_request=args.max_objects,
                         max_body_bytes=int(args.max_body_mb * 1024 * 1024), verify_index=not args.no_verify,
                         allow_other_model=args.allow_other_model, torch_threads=args.threads,
                         log_level=args.log_level)
    serve(config)
    return 0
