"""Writing folders so that readers see either the old one or the complete new one, never a half.

Datasets, model folders, embedding stores, indexes and reports are all built in a hidden staging
folder beside their destination and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished `staging` folder to `out`, replacing any folder there (renames only)."""
    staging, out = Path(staging), Path(out)
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


@contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; leaving the block normally moves it to `out`,
    leaving it by an exception removes it and leaves `out` as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; these folders are meant to be shared
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
