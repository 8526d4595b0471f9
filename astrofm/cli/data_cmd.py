"""`astrofm data {mock,ingest,info}`: make, bring in and inspect sharded datasets."""

from __future__ import annotations

import argparse

from astrofm.cli import info_cmd, ingest_cmd, mock_cmd


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="make, ingest and inspect sharded datasets",
                                   description="Make, ingest and inspect sharded datasets (format v1).")
    data_subparsers = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    mock_cmd.add_parser(data_subparsers)
    ingest_cmd.add_parser(data_subparsers)
    info_cmd.add_parser(data_subparsers)
