"""Request and response bodies (pydantic), as they appear in the OpenAPI document.

Arrays arrive as JSON lists of finite numbers (NaN and inf are refused by the schema, values beyond
float32 by a validator) and leave validation as float32 numpy arrays. The schema caps lengths at the
hard ceilings of serving.config; the model's own shapes (spectrum grid, bands, stamp size) and the
server's tighter limits are checked by the app, which answers 422 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    WithJsonSchema,
    model_validator,
)

from serving.config import HARD_MAX_BODY_BYTES, HARD_MAX_K, HARD_MAX_OBJECTS

Modality = Literal["spectrum", "photometry", "image"]
MAX_PIXELS = 100_000  # spectrum pixels (input grid or model grid)
MAX_CHANNELS = 32
MAX_SIDE = 1024  # image rows and columns
MAX_BANDS = 64
MAX_DIMENSION = 8192  # embedding length of a query vector
MAX_ID_LENGTH = 256


def _float32(values: Any) -> np.ndarray:
    # Finite float64 can still overflow float32, which is what the model computes in.
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError("values beyond the float32 range (|x| > 3.4e38)")
    return array


def _image_array(values: Any) -> np.ndarray:
    rows = {len(row) for channel in values for row in channel}
    if len({len(channel) for channel in values}) > 1 or len(rows) > 1:
        raise ValueError("ragged nested list: every channel needs the same rows, every row the same columns")
    return _float32(values)


def _npy_array(text: str) -> np.ndarray:
    """A base64 .npy file (numpy.save output) as a float32 array; pickled object arrays are refused."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not valid base64 ({error})") from None
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"not a .npy file ({error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(f"expected a real numeric array, got dtype {getattr(array, 'dtype', type(array))}")
    if array.ndim != 3:
        raise ValueError(f"expected a (channels, rows, columns) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("holds NaN or inf")
    return _float32(array)


Vector = Annotated[list[FiniteFloat], Field(min_length=2, max_length=MAX_PIXELS), AfterValidator(_float32)]
ImageList = Annotated[
    list[Annotated[list[Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_SIDE)]],
                   Field(min_length=1, max_length=MAX_SIDE)]],
    Field(min_length=1, max_length=MAX_CHANNELS, description="nested list [channel][row][column]"),
    AfterValidator(_image_array)]
NpyBase64 = Annotated[
    str, Field(min_length=1, max_length=HARD_MAX_BODY_BYTES),
    AfterValidator(_npy_array),
    WithJsonSchema({"type": "string", "contentEncoding": "base64",
                    "description": "base64 of a .npy file (numpy.save) holding a (channels, rows, columns) "
                                   "array of real numbers; pickled arrays are refused"})]
ObjectId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class SpectrumIn(_Strict):
    """Either `flux` and `ivar` on the model's grid (see GET /v1/info), or `wavelength` (vacuum Angstrom,
    increasing) and `flux` (optional `ivar`) on any grid, resampled flux-conservingly onto the model's.
    Without `ivar`, every covered pixel of the model's grid gets unit weight."""

    id: ObjectId | None = None
    flux: Vector
    ivar: Vector | None = None
    wavelength: Vector | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.wavelength is None and self.ivar is None:
            raise ValueError("give ivar with flux on the model's grid, or wavelength to resample flux")
        for name in ("ivar", "wavelength"):
            other = getattr(self, name)
            if other is not None and other.shape != self.flux.shape:
                raise ValueError(f"{name} has {other.size} values but flux has {self.flux.size}")
        if self.ivar is not None and (self.ivar < 0).any():
            raise ValueError("ivar holds negative values")
        return self


class BandFlux(_Strict):
    flux: FiniteFloat
    flux_err: FiniteFloat = Field(ge=0)


class PhotometryIn(_Strict):
    """Band name -> flux and its error, in the model's units (see GET /v1/info); every band of the model
    is needed."""

    id: ObjectId | None = None
    bands: dict[Annotated[str, Field(min_length=1, max_length=32)], BandFlux] = Field(
        min_length=1, max_length=MAX_BANDS)


class ImageIn(_Strict):
    """A (channels, rows, columns) stamp in the model's bands and size, as a nested list (`flux`) or a
    base64 .npy (`flux_npy`); `ivar` (or `ivar_npy`) is optional (unit weight)."""

    id: ObjectId | None = None
    flux: ImageList | None = None
    flux_npy: NpyBase64 | None = None
    ivar: ImageList | None = None
    ivar_npy: NpyBase64 | None = None

    @model_validator(mode="after")
    def _one_of_each(self):
        if (self.flux is None) == (self.flux_npy is None):
            raise ValueError("give exactly one of flux (nested list) and flux_npy (base64 .npy)")
        if self.ivar is not None and self.ivar_npy is not None:
            raise ValueError("give at most one of ivar and ivar_npy")
        ivar = self.ivar_array
        if ivar is not None and ivar.shape != self.flux_array.shape:
            raise ValueError(f"ivar has shape {ivar.shape} but flux has {self.flux_array.shape}")
        if ivar is not None and (ivar < 0).any():
            raise ValueError("ivar holds negative values")
        return self

    @property
    def flux_array(self) -> np.ndarray:
        return self.flux if self.flux is not None else self.flux_npy

    @property
    def ivar_array(self) -> np.ndarray | None:
        return self.ivar if self.ivar is not None else self.ivar_npy


_Count = Field(min_length=1, max_length=HARD_MAX_OBJECTS, description="the objects, at most the server's limit")


class SpectrumBatch(_Strict):
    modality: Literal["spectrum"]
    objects: Annotated[list[SpectrumIn], _Count]


class PhotometryBatch(_Strict):
    modality: Literal["photometry"]
    objects: Annotated[list[PhotometryIn], _Count]


class ImageBatch(_Strict):
    modality: Literal["image"]
    objects: Annotated[list[ImageIn], _Count]


EmbedRequest = Annotated[SpectrumBatch | PhotometryBatch | ImageBatch, Field(discriminator="modality")]


class EmbedResponse(BaseModel):
    modality: Modality
    dimension: int
    ids: list[str | None] = Field(description="the objects' ids as given, in request order")
    embeddings: list[list[float]] = Field(description="L2-normalised, one per object, in request order")


class SpectrumQuery(SpectrumIn):
    modality: Literal["spectrum"]


class PhotometryQuery(PhotometryIn):
    modality: Literal["photometry"]


class ImageQuery(ImageIn):
    modality: Literal["image"]


QueryData = Annotated[SpectrumQuery | PhotometryQuery | ImageQuery, Field(discriminator="modality")]


class SearchRequest(_Strict):
    """Exactly one query: `id` (an object's stored embedding), `embedding` (a vector of the index's
    dimension) or `data` (one object, embedded by the model)."""

    id: ObjectId | None = None
    query_modality: Modality | None = Field(
        None, description="id queries: the modality of the object's embedding to query with (default: the "
                          "index's; another one needs the server's embedding folder)")
    embedding: Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_DIMENSION),
                         AfterValidator(_float32)] | None = None
    data: QueryData | None = None
    k: int = Field(10, ge=1, le=HARD_MAX_K)
    target_modality: Modality | None = Field(None, description="the modality searched (default: the index's)")

    @model_validator(mode="after")
    def _one_query(self):
        given = [name for name in ("id", "embedding", "data") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of id, embedding and data (got {given or 'none'})")
        if self.query_modality is not None and self.id is None:
            raise ValueError("query_modality goes with id queries")
        return self


class Hit(BaseModel):
    rank: int
    id: str
    score: float = Field(description="cosine similarity")
    is_query: bool = Field(description="the query object itself (cross-modal id queries)")
    labels: dict[str, Any] = Field(description="split, labels and meta stored with the object")


class QuerySummary(BaseModel):
    kind: Literal["id", "embedding", "data"]
    id: str | None = None
    modality: Modality | None = None
    source: str = Field(description="where the vector came from: index, embeddings, request or model")


class IndexSummary(BaseModel):
    modality: Modality
    kind: str
    count: int
    dimension: int


class SearchResponse(BaseModel):
    query: QuerySummary
    index: IndexSummary
    hits: list[Hit]


class ObjectResponse(BaseModel):
    id: str
    modalities: list[Modality] = Field(description="modalities the server holds an embedding of it in")
    labels: dict[str, Any] = Field(description="split, labels and meta as stored")


class Health(BaseModel):
    status: Literal["ok"]


class ModelInfo(BaseModel):
    name: str
    sha256: str
    modalities: list[Modality]
    dimension: int
    spec: dict[str, Any] = Field(description="per modality: spectrum grid, photometry bands, image bands and size")


class EmbeddingsInfo(BaseModel):
    modalities: list[str]
    counts: dict[str, int]


class Limits(BaseModel):
    max_k: int
    max_objects_per_request: int
    max_body_bytes: int
    max_batch: int


class BatcherStats(BaseModel):
    batches: int = Field(description="forward passes since the server started")
    objects: int = Field(description="objects embedded in them")
    largest: int = Field(description="objects in the largest pass")


class Info(BaseModel):
    model: ModelInfo
    dimension: int
    index: IndexSummary
    embeddings: EmbeddingsInfo | None
    limits: Limits
    batcher: BatcherStats
    auth: bool = Field(description="whether /v1 routes need Authorization: Bearer KEY")


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]
