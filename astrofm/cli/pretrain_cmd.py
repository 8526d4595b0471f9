"""`astrofm pretrain fit|validate ... ` (LightningCLI) and `astrofm pretrain export --ckpt CKPT --out DIR`."""

from __future__ import annotations

import argparse
import sys

USAGE = """astrofm pretrain fit --config configs/pretrain/tiny.yaml [--data.path DIR] [--trainer.max_steps N] [...]
       astrofm pretrain validate --config RECIPE.yaml --ckpt_path CKPT
       astrofm pretrain export --ckpt CKPT --out DIR
       astrofm pretrain fit --help     (every option of the recipe)"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pretrain", help="contrastive pretraining (Lightning), checkpoint export",
                                   usage=USAGE, add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=run)


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="astrofm pretrain export",
                                     description="Write a model folder (config.json + model.safetensors + "
                                                 "model card) from a checkpoint of `astrofm pretrain fit`.")
    parser.add_argument("--ckpt", required=True, help="checkpoint file (last.ckpt, best-*.ckpt, ...)")
    parser.add_argument("--out", required=True, help="model folder to write")
    args = parser.parse_args(argv)
    from pretrain.export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out)
    print(f"model exported to {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    argv = list(args.args)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: " + USAGE)
        return 0 if argv else 2
    if argv[0] == "export":
        return _export(argv[1:])
    from pretrain.cli import main
    from pretrain.module import NonFiniteLossError

    try:
        main(argv)
    except NonFiniteLossError as error:
        print(f"astrofm pretrain: stopped: {error}", file=sys.stderr)
        return 1
    return 0
