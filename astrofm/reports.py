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


def summarise_over_seeds(records: list[dict[str, Any]], by: tuple[str, ...],
                         keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Records grouped on the fields `by` (in first-seen order): per group the fields, n_seeds, n_train,
    and the mean and sample std (0 for one seed) of each of `keys` that the group's records carry."""
    import numpy as np

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record[name] for name in by), []).append(record)
    out = []
    for values, group in groups.items():
        entry = {**dict(zip(by, values, strict=True)), "n_seeds": len(group), "n_train": group[0]["n_train"],
                 "mean": {}, "std": {}}
        for key in (k for k in keys if k in group[0]):
            column = np.array([g[key] for g in group], dtype=np.float64)
            entry["mean"][key] = float(np.mean(column))
            entry["std"][key] = float(np.std(column, ddof=1)) if len(column) > 1 else 0.0
        out.append(entry)
    return out
