"""Simulation against observation in embedding space: classifier two-sample tests, model comparison,
coverage (misspecification) and what differs, per simulated suite.

    from downstream.misspec import MisspecConfig, write_report, format_table
    write_report(MisspecConfig(model="MODEL_DIR", observed="DATA_DIR", simulated={"sim": "SIM_DIR"}, out="REPORT"))
"""

from downstream.misspec.config import MisspecConfig, parse_named
from downstream.misspec.report import compute, format_table, write_report

__all__ = ["MisspecConfig", "compute", "format_table", "parse_named", "write_report"]
