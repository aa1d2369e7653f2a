"""Model files: ``config.json`` plus ``weights.safetensors``; never a pickled object.

Loading is strict: a missing, unexpected or mis-shaped tensor is a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from latent_ode.errors import CheckpointError

__all__ = [
    "CONFIG_FILE",
    "MAX_PARAMETERS",
    "WEIGHTS_FILE",
    "check_weight_shapes",
    "load_weights",
    "read_config",
    "save_model_files",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT_VERSION = 1
#: The most parameters a checkpoint may hold (400 MB in float32; the models this library trains
#: have well under a million). A config.json asking for more is refused before anything is built.
MAX_PARAMETERS = 100_000_000


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


def check_weight_shapes(directory: str | Path, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Compare the tensors a config implies with the weights file's, before building the model.

    Only the file's header is read (``safetensors.safe_open``), so a crafted ``config.json``
    asking for an 80 GB network costs nothing: its sizes must equal the stored tensors' shapes,
    and their total must stay within :data:`MAX_PARAMETERS`.

    Args:
        directory: what :func:`save_model_files` wrote.
        expected: parameter name -> shape of the module that ``config.json`` describes (e.g.
            from building it on the ``meta`` device, which allocates nothing).

    Raises:
        CheckpointError: the file is missing or unreadable, a tensor is missing, unexpected or
            of another shape (each named with both shapes), or the model is too large.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"no {WEIGHTS_FILE} in {str(directory)!r}.")
    try:
        with safe_open(str(path), framework="pt") as stored:
            found = {k: tuple(stored.get_slice(k).get_shape()) for k in stored.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
        raise CheckpointError(f"cannot read {path}: {exc}.") from exc
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} (config.json implies {list(expected[k])}, the file holds {list(found[k])})"
              for k in expected if k in found and tuple(expected[k]) != found[k]]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{path} does not match the model built from its config.json: missing {missing}, "
            f"unexpected {unexpected}, wrong shape {shapes}; the config's sizes must be the ones "
            "the weights were trained with."
        )
    total = sum(math.prod(shape) for shape in expected.values())
    if total > MAX_PARAMETERS:
        raise CheckpointError(
            f"config.json in {str(directory)!r} describes a model of {total} parameters; at most "
            f"{MAX_PARAMETERS} are loaded (latent_ode.checkpoint.MAX_PARAMETERS)."
        )
