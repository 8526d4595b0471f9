"""Datasets: format v1 (manifest + webdataset shards), writing, reading and the streaming loader.

The streaming loader (`astrofm.data.loader`) imports torch; everything imported here does not.
"""

from astrofm.data.format import (
    MODALITIES,
    SPLITS,
    DatasetSpec,
    DataValidationError,
    ImageSpec,
    PhotometrySpec,
    Sample,
    SpectrumSpec,
    assign_split,
)
from astrofm.data.manifest import Manifest, ShardInfo, load_manifest
from astrofm.data.reader import Dataset
from astrofm.data.writer import DatasetWriter, WriterConfig

__all__ = [
    "MODALITIES", "SPLITS", "DataValidationError", "Dataset", "DatasetSpec", "DatasetWriter", "ImageSpec",
    "Manifest", "PhotometrySpec", "Sample", "ShardInfo", "SpectrumSpec", "WriterConfig", "assign_split",
    "load_manifest",
]
