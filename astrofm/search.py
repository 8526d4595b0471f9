"""Similarity search over an index folder (astrofm.index), from three kinds of query:

- an object id of the index:          its own vector; the object itself is left out of its results
- an object id in another store or modality (`query_embeddings` + `query_modality`): that embedding
                                      queries the index; the object's own entry, if there, is marked
- a raw file through a model (`model` + `query_file`): an SDSS spectrum FITS or a FITS cut-out, read
                                      onto the model's dataset spec with the ingest readers, embedded

Bad input raises ValueError / FileNotFoundError / KeyError subclasses whose message names the id,
file or index concerned (the CLI prints them as one line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.data.format import MODALITIES
from astrofm.embedstore.store import EmbeddingStore, json_value
from astrofm.index import LoadedIndex, load_index


class EmptyIndexError(ValueError):
    """An index that holds no vectors."""


class QueryMismatchError(ValueError):
    """A query that cannot be compared with the index: wrong dimension, modality, kind of file or model."""


@dataclass
class SearchConfig:
    index: str  # index folder
    k: int = 10  # neighbours to return
    object_id: str | None = None  # query by object id (in the index, or in query_embeddings)
    query_embeddings: str | None = None  # embedding folder holding the query object's vector
    query_modality: str | None = None  # modality of the query (default: the index's, or the file's kind)
    model: str | None = None  # model folder, to embed query_file
    query_file: str | None = None  # an SDSS spectrum FITS file or a FITS image cut-out
    verify: bool = True  # check the index checksums on load
    mmap: bool = True  # memory-map the index file where faiss can
    allow_other_model: bool = False  # accept a query embedded by another model than the index's
    search_params: dict[str, Any] | None = None  # e.g. {"ef_search": 256} or {"nprobe": 64}

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if (self.object_id is None) == (self.query_file is None):
            raise ValueError("give exactly one query: an object id (--id) or a file (--query-file)")
        if self.query_file is not None and self.model is None:
            raise ValueError("a --query-file query needs --model to embed the file")
        if self.query_file is not None and self.query_embeddings is not None:
            raise ValueError("--query-embeddings goes with --id, not with --query-file")
        if self.query_modality is not None and self.query_modality not in MODALITIES:
            raise ValueError(f"unknown query modality {self.query_modality!r}; choose from {list(MODALITIES)}")


@dataclass
class Hit:
    rank: int
    id: str
    score: float  # cosine similarity
    labels: dict[str, Any] = field(default_factory=dict)  # split, labels and meta of the object
    is_query: bool = False  # the query object itself (cross-modal and file queries)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "score": self.score, "is_query": self.is_query,
                "labels": {k: json_value(v) for k, v in self.labels.items()}}


@dataclass
class SearchResult:
    query: dict[str, Any]  # id, modality, source
    index: dict[str, Any]  # path, modality, kind, count
    hits: list[Hit]

    def to_json(self) -> list[dict[str, Any]]:
        return [hit.to_dict() for hit in self.hits]


@dataclass
class QueryVector:
    object_id: str
    modality: str
    vector: np.ndarray  # (D,)
    source: str  # "index", an embedding folder, or a file
    model_sha256: str | None = None  # the model that made the vector, when known


# ---------------------------------------------------------------------------------------------
# Raw files through a model.
# ---------------------------------------------------------------------------------------------


def file_kind(source) -> str:
    """"spectrum" for an SDSS spec file (a COADD table), "image" for a cut-out (image data)."""
    from astropy.io import fits

    from astrofm.data.ingest.fitsfile import find_hdu, open_fits

    with open_fits(source) as hdul:
        if find_hdu(hdul, "COADD") is not None:
            return "spectrum"
        if any(isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and h.header.get("NAXIS", 0) >= 2
               for h in hdul):
            return "image"
        if len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and not hdul[1].header.get("EXTNAME"):
            return "spectrum"
    raise QueryMismatchError(f"{source.path}: neither an SDSS spectrum (no COADD table) nor an image cut-out "
                             f"(no image HDU)")


def embed_file(model_dir: str, path: str, modality: str | None = None) -> QueryVector:
    """Read `path` onto the model's dataset spec, embed it, return its (D,) vector."""
    from astrofm.data.format import DatasetSpec, Sample
    from astrofm.data.ingest.fitsfile import read_source
    from astrofm.data.ingest.images import read_image
    from astrofm.data.ingest.sdss import read_sdss_spectrum
    from astrofm.data.manifest import sha256_file
    from astrofm.models.io import WEIGHTS_NAME, load_model

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such query file")
    model = load_model(model_dir)
    source = read_source(file)
    kind = file_kind(source)
    if modality is not None and modality != kind:
        raise QueryMismatchError(f"{file}: is {_article(kind)} {kind} file, not {_article(modality)} {modality}")
    if kind not in model.modalities or kind not in model.spec:
        raise QueryMismatchError(f"{file}: is {_article(kind)} {kind} file but the model {model_dir} has no "
                                 f"{kind} encoder (it has {model.modalities})")
    spec = DatasetSpec.from_dict(model.spec)
    if kind == "spectrum":
        record = read_sdss_spectrum(source, spec.spectrum)
        sample = Sample(id=record.object_id, labels=record.labels, spectrum=record.spectrum)
    else:
        sample = Sample(id=source.object_id, image=read_image(source, spec.image).image)
    vector = embed_samples(model, kind, [sample])[0]
    return QueryVector(sample.id, kind, vector, str(file), sha256_file(Path(model_dir) / WEIGHTS_NAME))


def embed_samples(model, modality: str, samples: list) -> np.ndarray:
    """(B, D) float32 embeddings of `samples` in `modality`, whose arrays are already on the model's
    dataset spec (grid, bands, stamp size); shared by file queries and the HTTP service."""
    from astrofm.data.collate import collate_samples
    from astrofm.data.format import DatasetSpec

    spec = DatasetSpec.from_dict(model.spec)
    batch = collate_samples(samples, [modality], {modality: spec.expected_shape(modality)})
    return model.embed(batch)[modality].float().numpy()


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------


def _query_vector(config: SearchConfig, loaded: LoadedIndex) -> QueryVector:
    if config.query_file is not None:
        query = embed_file(config.model, config.query_file, config.query_modality)
        if query.modality != loaded.modality and config.query_modality is None:
            raise QueryMismatchError(
                f"{config.query_file}: is {_article(query.modality)} {query.modality} file but the index "
                f"{loaded.path} holds {loaded.modality} embeddings (pass --query-modality {query.modality} to "
                f"search {loaded.modality} with it across modalities)")
        return query
    modality = config.query_modality or loaded.modality
    if config.query_embeddings is None:
        if modality != loaded.modality:
            raise ValueError(f"--query-modality {modality} needs --query-embeddings (the index {loaded.path} "
                             f"holds only {loaded.modality})")
        return QueryVector(config.object_id, modality, loaded.vector(config.object_id), "index",
                           loaded.info.get("embeddings", {}).get("model", {}).get("sha256"))
    store = EmbeddingStore.open(config.query_embeddings)
    return QueryVector(config.object_id, modality, store.vector(modality, config.object_id), str(store.path),
                       store.model_sha256)


def _check_query(query: QueryVector, loaded: LoadedIndex, allow_other_model: bool) -> None:
    if query.vector.shape[-1] != loaded.dimension:
        raise QueryMismatchError(f"the query ({query.source}) has dimension {query.vector.shape[-1]} but the "
                                 f"index {loaded.path} has {loaded.dimension}: embeddings of another model?")
    index_model = loaded.info.get("embeddings", {}).get("model", {}).get("sha256")
    if not allow_other_model and query.model_sha256 and index_model and query.model_sha256 != index_model:
        raise QueryMismatchError(f"the query ({query.source}) was embedded by another model (sha256 "
                                 f"{query.model_sha256[:12]}...) than the index {loaded.path} "
                                 f"({index_model[:12]}...); pass --allow-other-model to search anyway")


def neighbours(loaded: LoadedIndex, vector: np.ndarray, k: int, exclude: int | None = None,
               query_id: str | None = None) -> list[Hit]:
    """The k nearest indexed objects of `vector`, best first, leaving out position `exclude`."""
    if loaded.count == 0:
        raise EmptyIndexError(f"the index {loaded.path} is empty: it holds no vectors")
    available = loaded.count - (exclude is not None)
    if k > available:
        own = " besides the query object" if exclude is not None else ""
        raise ValueError(f"k={k} is larger than the index {loaded.path}, which holds {available} "
                         f"vector(s){own}")
    wanted = k + (exclude is not None)
    scores, positions = loaded.search(np.asarray(vector)[np.newaxis], wanted)
    hits = []
    for score, position in zip(scores[0], positions[0], strict=True):
        if position < 0 or position == exclude:
            continue
        labels = loaded.labels(int(position))
        object_id = labels.pop("id")
        hits.append(Hit(len(hits) + 1, object_id, float(score), labels, object_id == query_id))
        if len(hits) == k:
            break
    return hits


def search(config: SearchConfig) -> SearchResult:
    loaded = load_index(config.index, verify=config.verify, mmap=config.mmap, search_params=config.search_params)
    if loaded.count == 0:
        raise EmptyIndexError(f"the index {loaded.path} is empty: it holds no vectors")
    query = _query_vector(config, loaded)
    _check_query(query, loaded, config.allow_other_model)
    exclude = None
    if query.modality == loaded.modality and config.query_file is None:
        try:
            exclude = loaded.position(query.object_id)
        except KeyError:
            exclude = None
    hits = neighbours(loaded, query.vector, config.k, exclude, query.object_id)
    return SearchResult(
        query={"id": query.object_id, "modality": query.modality, "source": query.source},
        index={"path": str(loaded.path), "modality": loaded.modality, "kind": loaded.kind, "count": loaded.count},
        hits=hits)


# Shown first when the hits carry them: what an astronomer checks a neighbour by.
LEADING_LABELS = ("split", "redshift", "mag_r", "galaxy_type", "log_stellar_mass", "log_sfr")


def format_table(result: SearchResult, max_label_columns: int = 6, labels: Sequence[str] | None = None) -> str:
    """A readable table: rank, id, score, then `labels` (default: the split, redshift, magnitude, type,
    mass and SFR where present, then the others, up to `max_label_columns`)."""
    q, ix = result.query, result.index
    lines = [f"query {q['id']} ({q['modality']}, from {q['source']}) -> {ix['modality']} index {ix['path']} "
             f"({ix['count']} vectors, {ix['kind']})"]
    present: list[str] = []
    for hit in result.hits:
        present.extend(n for n in hit.labels if n not in present)
    if labels:
        unknown = [n for n in labels if n not in present]
        if unknown:
            raise ValueError(f"{ix['path']}: no label(s) {unknown} in the index (it has {', '.join(present) or 'none'})")
        names = list(labels)
    else:
        names = [n for n in LEADING_LABELS if n in present] + [n for n in present if n not in LEADING_LABELS]
        names = names[:max_label_columns]
    rows = [["rank", "id", "score", *names]]
    for hit in result.hits:
        mark = " *" if hit.is_query else ""
        rows.append([str(hit.rank), hit.id + mark, f"{hit.score:.4f}", *(_cell(hit.labels.get(n)) for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if any(hit.is_query for hit in result.hits):
        lines.append("* the query object itself")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
