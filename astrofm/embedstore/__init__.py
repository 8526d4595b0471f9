"""Embedding stores: `embed` runs a model folder over dataset splits (Lightning predict, one or more
ranks) into `EMB_DIR/{modality}.parquet` + `EMB_DIR/manifest.json`; `EmbeddingStore` reads them back.

    store.py    the format on disk, part-file merging, EmbeddingStore (no torch, no Lightning)
    predict.py  the rank-sliced batch stream, the LightningModule, the part-writing callback
    run.py      EmbedConfig and embed()

Names are imported on first use, so `import astrofm.embedstore` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbedConfig": "run", "EmbedResult": "run", "embed": "run",
    "EmbeddingStore": "store", "UnknownIdError": "store", "table_vectors": "store",
    "EMBEDDINGS_FORMAT": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'astrofm.embedstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"astrofm.embedstore.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
