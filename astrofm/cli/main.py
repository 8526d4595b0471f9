"""`astrofm`: parse the command line, dispatch to a command module, turn known failures into messages.

Each command module exposes `add_parser(subparsers)`, which registers its arguments and sets
`handler` to a function taking the parsed namespace and returning an exit status. Handlers turn the
namespace into a typed config and call library code; heavy imports happen inside handlers, so
`astrofm --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from astrofm import __version__
from astrofm.cli import (
    data_cmd,
    embed_cmd,
    finetune_cmd,
    generate_cmd,
    index_cmd,
    misspec_cmd,
    pretrain_cmd,
    quickstart_cmd,
    regress_cmd,
    retrieval_cmd,
    search_cmd,
    serve_cmd,
)

# Failures that are the user's input, not a bug: print one clear line instead of a traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrofm",
        description="Multi-modal astronomy foundation models: data, pretraining, embeddings, science.",
    )
    parser.add_argument("--version", action="version", version=f"astrofm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    quickstart_cmd.add_parser(subparsers)
    data_cmd.add_parser(subparsers)
    pretrain_cmd.add_parser(subparsers)
    embed_cmd.add_parser(subparsers)
    index_cmd.add_parser(subparsers)
    search_cmd.add_parser(subparsers)
    serve_cmd.add_parser(subparsers)
    retrieval_cmd.add_parser(subparsers)
    regress_cmd.add_parser(subparsers)
    finetune_cmd.add_parser(subparsers)
    generate_cmd.add_parser(subparsers)
    misspec_cmd.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "pretrain":
        # LightningCLI parses everything after `pretrain` itself, leading options such as --help included.
        args = argparse.Namespace(command="pretrain", args=argv[1:], handler=pretrain_cmd.run)
    else:
        args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        subcommands = [v for k, v in sorted(vars(args).items()) if k.endswith("_command") and isinstance(v, str)]
        print(f"astrofm {' '.join([args.command, *subcommands])}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("astrofm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
