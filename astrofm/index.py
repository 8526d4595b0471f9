"""faiss indexes over one modality of an embedding store, as folders.

    IDX/index.faiss   the faiss index; cosine similarity as inner product on L2-normalised vectors
    IDX/ids.parquet   row i describes vector i: `id`, `split` and the label/meta columns of the store
    IDX/index.json    kind, build and search parameters, dimension, count, the source store (path,
                      file sha256, model sha256) and the sha256 of index.faiss and ids.parquet

Kinds: `flat` (IndexFlatIP, exact), `hnsw` (IndexHNSWFlat: graph over the full vectors), `ivfpq`
(an inverted file of 4-bit fast-scan product-quantisation codes whose candidates are re-ranked with
half-precision copies of the vectors: about 2D + D/4 bytes a vector, or D + D/4 with 8-bit ones, at
some recall), and `auto`: exact up to `exact_limit` vectors (1,000,000), the approximate
`auto_approximate` kind above (ivfpq: it met recall@10 >= 0.95 at >= 10x the exact search's speed on
1M x 256 clustered vectors on 2 cores, built in 20 s; see benchmarks/bench_search.py).

`load_index` verifies the checksums (unless told not to) and memory-maps the index file where faiss
can, falling back to a normal read. The folder is written into a temporary sibling and renamed.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import astrofm
from astrofm.atomic import replace_folder
from astrofm.data.manifest import read_folder_json, sha256_file, write_json_atomic
from astrofm.embedstore.store import EmbeddingStore, UnknownIdError, table_vectors

INDEX_FORMAT = "astrofm-index"
INDEX_FORMAT_VERSION = 1
INDEX_NAME = "index.faiss"
IDS_NAME = "ids.parquet"
INFO_NAME = "index.json"
KINDS = ("auto", "flat", "hnsw", "ivfpq")
REFINES = ("SQfp16", "SQ8", "Flat")


class IndexChecksumError(ValueError):
    """An index file whose sha256 is not the one recorded when it was built."""


@dataclass
class IndexConfig:
    embeddings: str  # embedding folder (astrofm embed's output)
    modality: str  # which modality's embeddings to index
    out: str  # index folder to write
    kind: str = "auto"  # auto | flat | hnsw | ivfpq
    splits: list[str] | None = None  # index only these splits; None: all rows of the store
    exact_limit: int = 1_000_000  # auto: exact search up to this many vectors
    auto_approximate: str = "ivfpq"  # auto: the kind used above exact_limit
    hnsw_m: int = 32  # HNSW graph degree (links per vector and layer)
    hnsw_ef_construction: int = 64  # HNSW candidate list while building
    hnsw_ef_search: int = 256  # HNSW candidate list while searching (recall vs speed)
    ivf_nlist: int | None = None  # IVF lists; None: a power of two near 2 sqrt(N)
    ivf_nprobe: int | None = None  # lists searched per query; None: about nlist / 16, at least 8
    pq_m: int | None = None  # PQ sub-quantisers (must divide D); None: D / 2 (2 dimensions each, 4 bits)
    refine: str = "SQfp16"  # ivfpq: re-ranking vectors, SQfp16 (2 bytes a value), SQ8 (1 byte) or Flat (4)
    refine_k_factor: float = 64.0  # ivfpq: candidates re-ranked per result wanted
    train_size: int | None = None  # ivfpq: vectors sampled to train on; None: 64 per list, >= 16,384
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose from {list(KINDS)}")
        if self.auto_approximate not in ("hnsw", "ivfpq"):
            raise ValueError(f"auto_approximate must be hnsw or ivfpq, got {self.auto_approximate!r}")
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {list(REFINES)}, got {self.refine!r}")


def choose_kind(config: IndexConfig, count: int) -> str:
    if config.kind != "auto":
        return config.kind
    return "flat" if count <= config.exact_limit else config.auto_approximate


def normalise(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """Rows scaled to unit length, as a new contiguous float32 array; non-finite values raise."""
    vectors = np.array(vectors, dtype=np.float32, copy=True, order="C")
    if vectors.ndim == 1:
        vectors = vectors[np.newaxis]
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what}: {int((~np.isfinite(vectors)).any(axis=1).sum())} vector(s) hold NaN or inf")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def _ivf_parameters(config: IndexConfig, count: int, dimension: int) -> dict[str, Any]:
    nlist = config.ivf_nlist or 2 ** round(math.log2(max(2 * math.sqrt(count), 16)))
    nlist = max(1, min(nlist, count // 39))  # faiss's k-means wants 39 points per centroid
    pq_m = config.pq_m or dimension // 2
    if dimension % pq_m:
        raise ValueError(f"pq_m={pq_m} must divide the dimension {dimension}")
    nprobe = config.ivf_nprobe or min(nlist, max(8, nlist // 16))
    train = min(count, config.train_size or max(64 * nlist, 16_384))
    return {"nlist": nlist, "pq_m": pq_m, "pq_bits": 4, "nprobe": nprobe, "k_factor": config.refine_k_factor,
            "train_size": train}


def make_index(kind: str, vectors: np.ndarray, config: IndexConfig) -> tuple[Any, dict[str, Any]]:
    """A faiss index of `kind` holding `vectors` (normalised), and its build/search parameters."""
    import faiss

    count, dimension = vectors.shape
    if kind == "flat":
        index, params = faiss.IndexFlatIP(dimension), {}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        params = {"m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction,
                  "ef_search": config.hnsw_ef_search}
    else:
        if count < 39:
            raise ValueError(f"an ivfpq index needs at least 39 vectors to train on, got {count}; use flat")
        params = _ivf_parameters(config, count, dimension)
        factory = f"IVF{params['nlist']},PQ{params['pq_m']}x4fs,Refine({config.refine})"
        index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
        params["factory"] = factory
        rng = np.random.default_rng(config.seed)
        sample = vectors if params["train_size"] >= count else vectors[np.sort(
            rng.choice(count, params["train_size"], replace=False))]
        faiss.extract_index_ivf(index).cp.seed = config.seed
        index.train(sample)
    index.add(vectors)
    apply_search_params(index, kind, params)
    return index, params


def apply_search_params(index: Any, kind: str, params: dict[str, Any]) -> None:
    """Set the recorded (or overridden) search-time parameters on a built or loaded index."""
    import faiss

    if kind == "hnsw" and "ef_search" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])
    elif kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
        faiss.downcast_index(index).k_factor = float(params["k_factor"])


def _check_output(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if any(out.iterdir()) and not (out / INFO_NAME).is_file():
        raise FileExistsError(f"{out}: a non-empty folder that is not an index folder; not replacing it")
    if not overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite to replace it)")


def _write_folder(out: Path, index: Any, ids_table: pa.Table, info: dict[str, Any]) -> None:
    import faiss

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        faiss.write_index(index, str(staging / INDEX_NAME))
        pq.write_table(ids_table, staging / IDS_NAME)
        info["sha256"] = sha256_file(staging / INDEX_NAME)
        info["ids_sha256"] = sha256_file(staging / IDS_NAME)
        info["bytes"] = (staging / INDEX_NAME).stat().st_size
        write_json_atomic(staging / INFO_NAME, info)
        os.chmod(staging, 0o755)
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_index(config: IndexConfig, allow_empty: bool = False) -> Path:
    """Build the index folder `config.out` from `config.modality` of `config.embeddings`."""
    out = Path(config.out)
    _check_output(out, config.overwrite)
    store = EmbeddingStore.open(config.embeddings)
    source = store.file(config.modality)
    table = store.read(config.modality, splits=config.splits)
    if len(table) == 0 and not allow_empty:
        which = f" in split(s) {config.splits}" if config.splits else ""
        raise ValueError(f"{source}: no {config.modality} embeddings{which}; nothing to index")
    ids = table.column("id")
    if len(ids) != len(pc.unique(ids)):
        raise ValueError(f"{source}: ids repeat; an index needs one vector per object")
    vectors = normalise(table_vectors(table), str(source))
    kind = choose_kind(config, len(table))
    started = time.perf_counter()
    index, params = make_index(kind, vectors, config)
    info = {
        "format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "astrofm_version": astrofm.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind, "requested_kind": config.kind, "metric": "inner_product (cosine on unit vectors)",
        "modality": config.modality, "dimension": store.dimension, "count": len(table), "params": params,
        "build_seconds": round(time.perf_counter() - started, 3), "index_file": INDEX_NAME, "ids_file": IDS_NAME,
        "embeddings": {"path": str(store.path.resolve()), "file": source.name, "sha256": sha256_file(source),
                       "splits": config.splits, "model": store.manifest.get("model", {}),
                       "dataset": store.manifest.get("dataset", {})},
        "config": {k: v for k, v in asdict(config).items() if k not in ("embeddings", "out", "overwrite")},
    }
    _write_folder(out, index, table.drop_columns(["embedding"]), info)
    return out


# ---------------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------------


def read_index_info(path: str | os.PathLike) -> dict[str, Any]:
    info_path, info = read_folder_json(path, INFO_NAME, "index",
                                       missing="missing; is {folder} an index folder (astrofm index build)?")
    if info.get("format") != INDEX_FORMAT:
        raise ValueError(f"{info_path}: not an astrofm index description")
    if info.get("format_version") != INDEX_FORMAT_VERSION:
        raise ValueError(f"{info_path}: format_version {info.get('format_version')!r}; this astrofm reads "
                         f"{INDEX_FORMAT_VERSION}")
    return info


@dataclass
class LoadedIndex:
    path: Path
    index: Any  # the faiss index
    info: dict[str, Any]
    table: pa.Table  # ids.parquet: row i describes vector i
    mmapped: bool = False
    _positions: dict[str, int] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def modality(self) -> str:
        return self.info["modality"]

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def position(self, object_id: str) -> int:
        if self._positions is None:
            self._positions = {oid: i for i, oid in enumerate(self.table.column("id").to_pylist())}
        if object_id not in self._positions:
            raise UnknownIdError(f"object {object_id!r} is not in the {self.modality} index {self.path}")
        return self._positions[object_id]

    def vector(self, object_id: str) -> np.ndarray:
        """The indexed object's own (D,) vector: reconstructed from flat and HNSW indexes (exact),
        read from the source embedding file for ivfpq (whose codes are lossy)."""
        position = self.position(object_id)
        if self.kind in ("flat", "hnsw"):
            return self.index.reconstruct(position)
        source = Path(self.info["embeddings"]["path"]) / self.info["embeddings"]["file"]
        if not source.is_file():
            raise FileNotFoundError(f"{source}: the embeddings this {self.kind} index was built from are gone; "
                                    f"query with --query-embeddings instead")
        return EmbeddingStore.open(source.parent).vector(self.modality, object_id)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions), each (Q, k), best first; position -1 where fewer than k were found."""
        queries = normalise(vectors, "query")
        if queries.shape[1] != self.dimension:
            raise ValueError(f"query vectors have dimension {queries.shape[1]} but the index {self.path} has "
                             f"{self.dimension}")
        return self.index.search(queries, k)

    def labels(self, position: int) -> dict[str, Any]:
        return {name: self.table.column(name)[position].as_py() for name in self.table.column_names}


def load_index(path: str | os.PathLike, verify: bool = True, mmap: bool = True,
               search_params: dict[str, Any] | None = None) -> LoadedIndex:
    """Open index folder `path`; `search_params` (e.g. {"ef_search": 256} or {"nprobe": 64}) override
    the recorded ones."""
    import faiss

    folder = Path(path)
    info = read_index_info(folder)
    index_path, ids_path = folder / info.get("index_file", INDEX_NAME), folder / info.get("ids_file", IDS_NAME)
    for file in (index_path, ids_path):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing from the index folder")
    if verify:
        for file, key in ((index_path, "sha256"), (ids_path, "ids_sha256")):
            digest = sha256_file(file)
            if info.get(key) and digest != info[key]:
                raise IndexChecksumError(f"{file}: sha256 {digest[:12]}... but index.json records "
                                         f"{info[key][:12]}...; the file changed or is corrupt (rebuild it)")
    mmapped = False
    if mmap:
        try:
            index, mmapped = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP), True
        except RuntimeError:
            index = None
    if not mmapped:
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            raise ValueError(f"{index_path}: faiss cannot read it ({str(error).splitlines()[0]})") from error
    table = pq.read_table(ids_path)
    if len(table) != index.ntotal:
        raise ValueError(f"{ids_path}: {len(table)} ids but the index holds {index.ntotal} vectors")
    params = {**info.get("params", {}), **(search_params or {})}
    apply_search_params(index, info["kind"], params)
    return LoadedIndex(folder, index, info, table, mmapped)
