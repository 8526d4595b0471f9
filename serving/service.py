"""What the routes work on: the model, index and embedding store loaded once, checked against each other,
and the conversions from request objects to dataset Samples and from queries to vectors.

Bad input raises ApiError (status, the request field it concerns, a message); the app turns it into a
JSON error. Only the folders named in ServeConfig are ever opened: ids are looked up, never used as paths.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrofm.data.format import DatasetSpec, Sample
from astrofm.embedstore.store import EmbeddingStore, UnknownIdError, json_value
from astrofm.index import LoadedIndex, load_index
from astrofm.search import Hit, embed_samples, neighbours
from serving.config import ServeConfig
from serving.schemas import ImageIn, PhotometryIn, SpectrumIn

log = logging.getLogger("astrofm.serving")
Loc = tuple[str | int, ...]


class ApiError(Exception):
    """A request the service refuses: HTTP `status`, the field at `loc`, and why."""

    def __init__(self, status: int, loc: Loc, msg: str, kind: str = "value_error"):
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind = status, loc, msg, kind


@dataclass
class Service:
    config: ServeConfig
    model: Any  # astrofm MultiModalModel, eval mode
    model_sha256: str
    spec: DatasetSpec
    index: LoadedIndex
    store: EmbeddingStore | None

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.model.modalities if m in self.spec.modalities]

    def embed(self, modality: str, samples: list[Sample]) -> np.ndarray:
        """One forward pass (the batcher's worker thread calls this)."""
        return embed_samples(self.model, modality, samples)

    # -- request objects -> Samples ---------------------------------------------------------------

    def sample(self, modality: str, item: SpectrumIn | PhotometryIn | ImageIn, loc: Loc,
               modality_loc: Loc) -> Sample:
        """The object at request field `loc` as a Sample on the model's spec."""
        if modality not in self.modalities:
            raise ApiError(422, modality_loc, f"the model has no {modality} encoder (it has {self.modalities})")
        arrays = {"spectrum": self._spectrum, "photometry": self._photometry, "image": self._image}[modality](
            item, loc)
        return Sample(id=item.id or "", **{modality: arrays})

    def _spectrum(self, item: SpectrumIn, loc: Loc) -> dict[str, np.ndarray]:
        grid = self.spec.spectrum
        where = f"the model's grid ({grid.wave_min:g}-{grid.wave_max:g} A, step {grid.wave_step:g} A)"
        if item.wavelength is None:
            if item.flux.size != grid.n_pixels:
                raise ApiError(422, (*loc, "flux"), f"has {item.flux.size} values but {where} has {grid.n_pixels} "
                                                    f"pixels; send wavelength to resample")
            return {"flux": item.flux, "ivar": item.ivar}
        from astrofm.data.resample import resample_spectrum

        try:
            flux, ivar = resample_spectrum(item.wavelength, item.flux, item.ivar, grid.wavelength())
        except ValueError as error:
            raise ApiError(422, (*loc, "wavelength"), str(error)) from None
        if not (ivar > 0).any():
            raise ApiError(422, (*loc, "wavelength"), f"covers no whole pixel of {where}")
        return {"flux": flux.astype(np.float32), "ivar": ivar.astype(np.float32)}

    def _photometry(self, item: PhotometryIn, loc: Loc) -> dict[str, np.ndarray]:
        bands = self.spec.photometry.bands
        unknown = [b for b in item.bands if b not in bands]
        if unknown:
            raise ApiError(422, (*loc, "bands", unknown[0]), f"unknown band; the model's bands are {bands}")
        missing = [b for b in bands if b not in item.bands]
        if missing:
            raise ApiError(422, (*loc, "bands"), f"missing bands {missing}; the model needs {bands}")
        values = [item.bands[b] for b in bands]
        return {"flux": np.array([v.flux for v in values], np.float32),
                "flux_err": np.array([v.flux_err for v in values], np.float32)}

    def _image(self, item: ImageIn, loc: Loc) -> dict[str, np.ndarray]:
        expected = self.spec.expected_shape("image")
        flux = item.flux_array
        if flux.shape != expected:
            field = "flux" if item.flux is not None else "flux_npy"
            raise ApiError(422, (*loc, field), f"shape {flux.shape}, but the model takes {expected} "
                                               f"(bands {self.spec.image.bands}, {self.spec.image.size} pixels)")
        arrays = {"flux": flux}
        if item.ivar_array is not None:
            arrays["ivar"] = item.ivar_array
        return arrays

    # -- queries -> vectors -----------------------------------------------------------------------

    def stored_vector(self, object_id: str, modality: str) -> tuple[np.ndarray, str, int | None]:
        """(vector, source, position to leave out of the results) of an object's stored embedding."""
        index = self.index
        if modality == index.modality:
            try:
                position = index.position(object_id)
            except UnknownIdError:
                raise ApiError(404, ("body", "id"), f"object {object_id!r} is not in the {modality} index",
                               "unknown_id") from None
            if index.kind == "ivfpq" and self.store is not None:  # ivfpq codes are lossy: read the stored vector
                return self.store.vector(modality, object_id), "embeddings", position
            return index.vector(object_id), "index", position
        if self.store is None:
            raise ApiError(422, ("body", "query_modality"), f"the index holds {index.modality}; querying with "
                                                             f"{modality} needs a server started with --embeddings")
        if modality not in self.store.modalities:
            raise ApiError(422, ("body", "query_modality"), f"the embedding folder has no {modality} "
                                                             f"(it has {self.store.modalities})")
        try:
            return self.store.vector(modality, object_id), "embeddings", None
        except UnknownIdError:
            raise ApiError(404, ("body", "id"), f"object {object_id!r} has no {modality} embedding",
                           "unknown_id") from None

    def check_k(self, k: int, exclude: int | None) -> None:
        if k > self.config.max_k:
            raise ApiError(422, ("body", "k"), f"k={k} is above this server's limit of {self.config.max_k}")
        available = self.index.count - (exclude is not None)
        if k > available:
            raise ApiError(422, ("body", "k"), f"k={k} is larger than the index, which holds {available} "
                                               f"vector(s)" + (" besides the query object" if exclude is not None
                                                               else ""))

    def search(self, vector: np.ndarray, k: int, exclude: int | None, query_id: str | None) -> list[Hit]:
        hits = neighbours(self.index, vector, k, exclude, query_id)
        for hit in hits:
            hit.labels = {key: json_value(value) for key, value in hit.labels.items()}
        return hits

    # -- stored objects ---------------------------------------------------------------------------

    def lookup(self, object_id: str) -> tuple[list[str], dict[str, Any]] | None:
        """(modalities holding an embedding of the object, its labels), or None if it is nowhere."""
        modalities, labels = [], {}
        try:
            position = self.index.position(object_id)
        except UnknownIdError:
            position = None
        if position is not None:
            modalities.append(self.index.modality)
            labels.update(self.index.labels(position))
        for modality in self.store.modalities if self.store is not None else []:
            try:
                fields = self.store.objects(modality).fields(object_id)
            except UnknownIdError:
                continue
            if modality not in modalities:
                modalities.append(modality)
            for name, value in fields.items():
                if labels.get(name) is None:
                    labels[name] = value
        if not modalities:
            return None
        labels.pop("id", None)
        return modalities, {key: json_value(value) for key, value in labels.items()}

    def index_summary(self) -> dict[str, Any]:
        index = self.index
        return {"modality": index.modality, "kind": index.kind, "count": index.count, "dimension": index.dimension}

    def info(self) -> dict[str, Any]:
        index = self.index
        store = None
        if self.store is not None:
            counts = {m: int(v.get("count", 0)) for m, v in self.store.manifest.get("modalities", {}).items()}
            store = {"modalities": self.store.modalities, "counts": counts}
        return {
            "model": {"name": Path(self.config.model).resolve().name, "sha256": self.model_sha256,
                      "modalities": self.modalities, "dimension": int(self.model.embed_dim),
                      "spec": self.spec.to_dict()},
            "dimension": index.dimension,
            "index": self.index_summary(),
            "embeddings": store,
            "limits": {"max_k": self.config.max_k, "max_objects_per_request": self.config.max_objects_per_request,
                       "max_body_bytes": self.config.max_body_bytes, "max_batch": self.config.batcher.max_batch},
            "auth": self.config.api_key is not None,
        }


def load_service(config: ServeConfig) -> Service:
    """Load the model, index and store once, and refuse a combination that cannot answer correctly."""
    import torch

    from astrofm.data.manifest import sha256_file
    from astrofm.models.io import WEIGHTS_NAME, load_model

    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    model = load_model(config.model)
    if not model.spec:
        raise ValueError(f"{config.model}: the model has no dataset spec (set_statistics never ran); it cannot "
                         f"map raw data onto its inputs")
    spec = DatasetSpec.from_dict(model.spec)
    model_sha = sha256_file(Path(config.model) / WEIGHTS_NAME)
    index = load_index(config.index, verify=config.verify_index)
    if index.dimension != model.embed_dim:
        raise ValueError(f"{config.index}: the index has dimension {index.dimension} but the model "
                         f"{config.model} embeds to {model.embed_dim}")
    index_model = index.info.get("embeddings", {}).get("model", {}).get("sha256")
    _same_model(model_sha, index_model, f"the index {config.index}", config)
    store = None
    if config.embeddings is not None:
        store = EmbeddingStore.open(config.embeddings)
        if store.dimension != model.embed_dim:
            raise ValueError(f"{config.embeddings}: dimension {store.dimension}, the model's is {model.embed_dim}")
        _same_model(model_sha, store.model_sha256, f"the embedding folder {config.embeddings}", config)
        for modality in store.modalities:  # read each file once, here: a request then looks an id up in O(1)
            store.objects(modality)
    if index.count:
        index.position(index.table.column("id")[0].as_py())  # builds the id map now, not in a request thread
    return Service(config, model, model_sha, spec, index, store)


def _same_model(model_sha: str, other: str | None, what: str, config: ServeConfig) -> None:
    if other and other != model_sha:
        message = (f"{what} was embedded by another model (sha256 {other[:12]}...) than {config.model} "
                   f"({model_sha[:12]}...)")
        if not config.allow_other_model:
            raise ValueError(message + "; pass --allow-other-model to serve it anyway")
        log.warning("%s; serving it anyway (--allow-other-model)", message)
