"""A trained model as a folder: `config.json` + `model.safetensors` (+ `README.md`), no pickle.

    config.json         MultiModalModel.to_config(), the astrofm version, and any `extra` keys
                        (e.g. the training data and recipe)
    model.safetensors   the state dict (weights and normalisation buffers)
    README.md           the model card, when one is given

`save_model` writes into a temporary folder beside the target and renames it into place, so a reader
never sees a half-written model. `load_model` rebuilds the model from config.json (only classes under
astrofm.models) and loads the tensors strictly; it needs neither Lightning nor pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import astrofm
from astrofm.atomic import replace_folder
from astrofm.data.manifest import read_folder_json
from astrofm.models.multimodal import MultiModalModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
MODEL_FORMAT = "astrofm-model"
MODEL_FORMAT_VERSION = 1


def _tensors_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tensor contiguous and alone in its memory (safetensors refuses shared
    or strided tensors); tied or viewed tensors are copied, the rest saved as they are."""
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        alone = storage.data_ptr() not in seen and storage.nbytes() == tensor.nbytes
        if not (alone and tensor.is_contiguous()):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def save_model(model: MultiModalModel, out_dir: str | os.PathLike, model_card: str | None = None,
               extra: dict[str, Any] | None = None, overwrite: bool = True) -> Path:
    """Write the model folder `out_dir` atomically; returns its path.

    `extra` keys are added to config.json beside the model's own (a clash with one raises). An existing
    model folder is replaced when `overwrite`; any other non-empty folder is never touched.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    config = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
              "astrofm_version": astrofm.__version__, **model.to_config()}
    clash = sorted(set(extra or {}) & set(config))
    if clash:
        raise ValueError(f"extra keys {clash} clash with the model config's own keys")
    config.update(extra or {})
    text = json.dumps(config, indent=2) + "\n"  # fails here, before any file is written, if not JSON
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / CONFIG_NAME).is_file():
            raise FileExistsError(f"{out}: a non-empty folder that is not a model folder; not replacing it")
        if not overwrite:
            raise FileExistsError(f"{out}: exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / CONFIG_NAME).write_text(text)
        save_file(_tensors_for_saving(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if model_card is not None:
            (tmp / CARD_NAME).write_text(model_card)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a model folder is meant to be shared
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.json of a model folder, with clear errors."""
    config_path, config = read_folder_json(path, CONFIG_NAME, "model")
    version = config.get("format_version", MODEL_FORMAT_VERSION)
    if version != MODEL_FORMAT_VERSION:
        raise ValueError(f"{config_path}: format_version {version!r}; this astrofm reads {MODEL_FORMAT_VERSION}")
    return config


def _check_state(tensors: dict[str, torch.Tensor], model: torch.nn.Module, source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for name in sorted(set(expected) & set(tensors)):
        if tuple(tensors[name].shape) != tuple(expected[name].shape):
            problems.append(f"tensor {name!r} has shape {tuple(tensors[name].shape)} in the file but "
                            f"{tuple(expected[name].shape)} in the model built from config.json")
    if problems:
        raise ValueError(f"{source} does not match its config.json: " + "; ".join(problems))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> MultiModalModel:
    """The model saved in folder `path`, in eval mode on `device`."""
    from safetensors.torch import load_file

    folder = Path(path)
    config = read_model_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; the model folder has no weights")
    model = MultiModalModel.from_config(config)
    tensors = load_file(str(weights), device="cpu")
    _check_state(tensors, model, weights)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()
