"""Every command's --help renders as a user reads it."""

from __future__ import annotations

import argparse

from astrofm.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_help_text_renders_without_format_escapes():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 12  # the commands and their subcommands, not just the top level
    for parser in parsers:
        text = parser.format_help()
        # argparse %-formats help strings but not descriptions: a "%%" there reaches the user as is.
        assert "%%" not in text, parser.prog
