"""Model files: ``config.json`` plus ``weights.safetensors``; never a pickled object.

Loading is strict: a missing, unexpected or mis-shaped tensor is a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from latent_ode.errors import CheckpointError

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load_weights", "read_config", "save_model_files"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1


def save_model_files(directory: str | Path, module: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``config.json`` (with a format version) and the module's weights to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **config}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """The config dict saved by :func:`save_model_files` (without the format version).

    Raises:
        CheckpointError: the file is missing, not JSON, or of an unknown format version.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {str(directory)!r}; pass the directory that "
                              "Forecaster.save wrote.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}.") from exc
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version!r}; this version of latent_ode "
                              f"reads {FORMAT_VERSION}.")
    return data


def load_weights(directory: str | Path, module: nn.Module) -> None:
    """Load ``weights.safetensors`` into ``module`` strictly.

    Raises:
        CheckpointError: the file is missing or unreadable, or its tensors do not match.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {str(directory)!r}.")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt files
        raise CheckpointError(f"cannot read {path}: {exc}.") from exc
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path} does not match the model built from its config.json: missing {missing}, "
            f"unexpected {unexpected}, wrong shape {shapes}."
        )
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)
