"""Report folders (retrieval, regression, fine-tuning, generation, misspecification): the check before
one is written, and its metrics.json. The folder itself is written with astrofm.atomic.staged_folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.json"


def check_report_target(out: str | os.PathLike, overwrite: bool, what: str = "report") -> Path:
    """Refuse to write over an existing report without `overwrite`, and over anything that is not a report
    (a file, or a non-empty folder without metrics.json) ever; returns `out` as a Path."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite to replace it)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / METRICS_NAME).is_file())):
        raise FileExistsError(f"{out}: not an empty folder or a {what}; not replacing it")
    return out


def json_default(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    path = Path(folder) / METRICS_NAME
    path.write_text(json.dumps(metrics, indent=2, default=json_default) + "\n")
    return path
