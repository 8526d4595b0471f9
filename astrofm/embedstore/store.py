"""The embedding store on disk: one Parquet file per modality plus manifest.json, readable without astrofm.

    EMB_DIR/manifest.json        format, model and dataset fingerprints, dimension, counts per modality
                                 and split, the columns of each file
    EMB_DIR/{modality}.parquet   one row per object having the modality, in dataset order (split, shard,
                                 position): `id` (string), `split` (string), `embedding` (fixed-size list
                                 of float32, L2-normalised), then one column per label and meta field

A label or meta field that an object lacks is null. A field whose values mix types across objects is
stored as text. Read it with plain pyarrow or pandas:

    table = pyarrow.parquet.read_table("EMB_DIR/spectrum.parquet")
    vectors = table["embedding"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EMBEDDINGS_FORMAT = "astrofm-embeddings"
EMBEDDINGS_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CORE_COLUMNS = ("id", "split", "embedding")
ORDER_COLUMN = "_index"  # global object index in the dataset pass; only in part files


class UnknownIdError(KeyError):
    """An object id that is not where it was looked for."""


def parquet_name(modality: str) -> str:
    return f"{modality}.parquet"


def embedding_type(dimension: int) -> pa.DataType:
    return pa.list_(pa.float32(), dimension)


def vectors_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float -> a fixed-size list array of float32."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def table_vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """The `embedding` column of a table as a contiguous (N, D) float32 array."""
    array = table.column(column).combine_chunks()
    if isinstance(array, pa.ChunkedArray):  # an empty table
        array = pa.array([], type=table.schema.field(column).type)
    dimension = array.type.list_size
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(len(table), dimension)


def _plain(value: Any) -> Any:
    """A label or meta value as a Parquet-friendly scalar: nested values become JSON text."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _column(values: list[Any]) -> pa.Array:
    values = [_plain(v) for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # mixed types: keep them as text
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def rows_table(ids: list[str], splits: list[str], order: np.ndarray, vectors: np.ndarray,
               fields: list[dict[str, Any]]) -> pa.Table:
    """One part's rows: the core columns, the order column, and a column per label or meta key."""
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, type=pa.string()),
        "split": pa.array(splits, type=pa.string()),
        "embedding": vectors_array(vectors),
        ORDER_COLUMN: pa.array(np.asarray(order, dtype=np.int64)),
    }
    names: list[str] = []
    for row in fields:
        names.extend(name for name in row if name not in names)
    for name in names:
        if name == "split":  # the writer records the split in meta: it is the split column already
            continue
        target = name if name not in columns else f"meta_{name}"
        columns[target] = _column([row.get(name) for row in fields])
    return pa.table(columns)


def _unify(tables: list[pa.Table]) -> list[pa.Table]:
    """Cast columns whose types differ between part files (other than by nulls) to text."""
    types: dict[str, set] = {}
    for table in tables:
        for field in table.schema:
            if not pa.types.is_null(field.type):
                types.setdefault(field.name, set()).add(field.type)
    clash = set()
    for name, found in types.items():
        numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in found)
        if len(found) > 1 and not numeric:
            clash.add(name)
    out = []
    for table in tables:
        for name in clash & set(table.column_names):
            position = table.column_names.index(name)
            table = table.set_column(position, name, pc.cast(table[name], pa.string()))
        out.append(table)
    return out


def merge_parts(parts: list[Path], out: Path, dimension: int, first_columns: list[str]) -> pa.Table:
    """Concatenate part files, sort rows by dataset order, drop the order column, write `out`.

    Columns come out as id, split, embedding, then `first_columns` (the dataset's labels) that are
    present, then the other fields in alphabetical order."""
    tables = [pq.read_table(p) for p in parts]
    tables = [t for t in tables if len(t)]
    if tables:
        table = pa.concat_tables(_unify(tables), promote_options="permissive")
        table = table.sort_by(ORDER_COLUMN).drop_columns([ORDER_COLUMN])
    else:
        table = pa.table({"id": pa.array([], pa.string()), "split": pa.array([], pa.string()),
                          "embedding": pa.array([], embedding_type(dimension))})
    extra = [c for c in table.column_names if c not in CORE_COLUMNS]
    ordered = [c for c in first_columns if c in extra] + sorted(c for c in extra if c not in first_columns)
    table = table.select([*CORE_COLUMNS, *ordered])
    # Columns that are null everywhere (a field no object of this modality has) are dropped.
    null = [c for c in ordered if pa.types.is_null(table.schema.field(c).type)]
    table = table.drop_columns(null)
    pq.write_table(table, out, row_group_size=65536)
    return table


# ---------------------------------------------------------------------------------------------
# Reading a store.
# ---------------------------------------------------------------------------------------------


@dataclass
class EmbeddingStore:
    """An embedding folder opened for reading: `EmbeddingStore.open(EMB_DIR).read("spectrum")`."""

    path: Path
    manifest: dict[str, Any]
    # Files read whole by `objects`, kept for the store's lifetime (a server's): modality -> ObjectTable.
    _objects: dict[str, ObjectTable] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> EmbeddingStore:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such embedding folder")
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: missing; is {folder} an astrofm embedding folder "
                                    f"(written by `astrofm embed`)?")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{manifest_path}: not valid JSON ({error})") from error
        if not isinstance(manifest, dict) or manifest.get("format") != EMBEDDINGS_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise ValueError(f"{manifest_path}: format {found!r}, expected {EMBEDDINGS_FORMAT!r}")
        if manifest.get("format_version") != EMBEDDINGS_FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format_version {manifest.get('format_version')!r}; this astrofm "
                             f"reads {EMBEDDINGS_FORMAT_VERSION}")
        return cls(folder, manifest)

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest.get("modalities", {}))

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def model_sha256(self) -> str | None:
        return self.manifest.get("model", {}).get("sha256")

    def file(self, modality: str) -> Path:
        if modality not in self.manifest.get("modalities", {}):
            raise ValueError(f"{self.path}: no {modality} embeddings (it has {self.modalities})")
        path = self.path / self.manifest["modalities"][modality].get("file", parquet_name(modality))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the embedding folder")
        return path

    def read(self, modality: str, columns: list[str] | None = None, splits: list[str] | None = None) -> pa.Table:
        table = pq.read_table(self.file(modality), columns=columns)
        if splits:
            table = table.filter(pc.is_in(table["split"], value_set=pa.array(splits, pa.string())))
        return table

    def objects(self, modality: str) -> ObjectTable:
        """The modality's whole file in memory with an id -> row map, read on first call and kept: for many
        lookups by id (a server), where `vector` would scan the file for each."""
        if modality not in self._objects:
            self._objects[modality] = ObjectTable.read(self.file(modality), modality)
        return self._objects[modality]

    def vector(self, modality: str, object_id: str) -> np.ndarray:
        """The (D,) embedding of one object in one modality (from memory once `objects` has read the file,
        else by a filtered read of it)."""
        if modality in self._objects:
            return self._objects[modality].vector(object_id)
        path = self.file(modality)
        table = pq.read_table(path, columns=["id", "embedding"], filters=[("id", "==", object_id)])
        if len(table) == 0:
            raise UnknownIdError(f"object {object_id!r} has no {modality} embedding in {path}")
        return table_vectors(table)[0]


@dataclass
class ObjectTable:
    """One modality's embedding file, read whole, with a map from id to row (an id's first row if it is
    repeated): O(1) lookups of an object's vector and labels."""

    path: Path
    modality: str
    table: pa.Table
    rows: dict[str, int]

    @classmethod
    def read(cls, path: Path, modality: str) -> ObjectTable:
        table = pq.read_table(path)
        rows: dict[str, int] = {}
        for row, object_id in enumerate(table.column("id").to_pylist()):
            rows.setdefault(object_id, row)
        return cls(path, modality, table, rows)

    def row(self, object_id: str) -> int:
        if object_id not in self.rows:
            raise UnknownIdError(f"object {object_id!r} has no {self.modality} embedding in {self.path}")
        return self.rows[object_id]

    def vector(self, object_id: str) -> np.ndarray:
        return table_vectors(self.table.slice(self.row(object_id), 1))[0]

    def fields(self, object_id: str) -> dict[str, Any]:
        """Every column of the object's row but the embedding: id, split, labels and meta."""
        row = self.row(object_id)
        return {name: self.table.column(name)[row].as_py() for name in self.table.column_names
                if name != "embedding"}


def json_value(value: Any) -> Any:
    """A Python value from Parquet, made JSON-safe (NaN and inf become None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
