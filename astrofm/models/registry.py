"""Encoder classes by name and by class path; building one safely from a config dict.

A model folder's config.json names each encoder by class path. Only classes defined in modules under
`astrofm.models` are accepted, so reading a config never imports or runs code from anywhere else.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from torch import nn

ALLOWED_PREFIX = "astrofm.models."

# Short names for the shipped encoders, e.g. in YAML recipes: name -> class path.
ENCODERS = {
    "spectrum": "astrofm.models.spectrum.SpectrumEncoder",
    "photometry": "astrofm.models.photometry.PhotometryEncoder",
    "image_vit": "astrofm.models.image.ImageViTEncoder",
    "image_cnn": "astrofm.models.image.ImageCNNEncoder",
}
DEFAULT_ENCODER = {"spectrum": "spectrum", "photometry": "photometry", "image": "image_cnn"}

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def resolve_encoder_class(path: str) -> type[nn.Module]:
    """The encoder class at `path`, refusing anything outside astrofm.models."""
    path = ENCODERS.get(path, path) if isinstance(path, str) else path
    if not isinstance(path, str) or not _DOTTED.match(path) or not path.startswith(ALLOWED_PREFIX):
        raise ValueError(f"refusing encoder class_path {path!r}: only classes under {ALLOWED_PREFIX}* "
                         f"(e.g. {sorted(ENCODERS.values())}) may be built from a config")
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"encoder class_path {path!r}: no module {module_name!r} ({error})") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module_name
            and hasattr(cls, "config_class")):
        raise ValueError(f"encoder class_path {path!r} is not an astrofm encoder class")
    return cls


def build_encoder(path: str, init_args: dict[str, Any] | None = None) -> nn.Module:
    """An encoder from its class path (or short name) and `{"config": {field: value}}`."""
    cls = resolve_encoder_class(path)
    init_args = dict(init_args or {})
    config = init_args.pop("config", None)
    if init_args:
        raise ValueError(f"{path}: unknown init_args {sorted(init_args)}; only 'config' is accepted")
    config = cls.config_class.from_dict(config) if isinstance(config, dict) else config
    return cls(config)


def encoder_for_spec(modality: str, spec: dict[str, Any], size: str = "tiny", name: str | None = None,
                     **overrides: Any) -> nn.Module:
    """The `size` preset of the default (or named) encoder for `modality`, shaped to the manifest spec."""
    cls = resolve_encoder_class(name or DEFAULT_ENCODER[modality])
    return cls(cls.config_class.for_spec(spec, size, **overrides))


def encoder_config(encoder: nn.Module) -> dict[str, Any]:
    """The config.json entry of an encoder: class path and init args."""
    return {"class_path": class_path(encoder), "init_args": {"config": encoder.config.to_dict()}}
