"""The device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) turned into a torch device.

The pipelines and the service both read a device setting from their own configuration; both
check it with :data:`DEVICE_PATTERN` and resolve it with :func:`resolve_device`, so ``cuda``
without CUDA fails the same way everywhere: at once, with the fix, not at the first tensor.
"""

from __future__ import annotations

import re

import torch

from latent_ode.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "DEVICE_PATTERN", "resolve_device"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
"""The device settings accepted; check a setting with ``DEVICE_PATTERN.match``."""

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
"""The accepted settings, as messages name them."""


def resolve_device(spec: str, *, local_rank: int | None = None) -> torch.device:
    """Turn a device setting into the torch device to use.

    Args:
        spec: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        local_rank: this process's rank on its machine under ``torchrun`` (``LOCAL_RANK``), if
            any; ``auto`` and ``cuda`` then take ``cuda:<local_rank>``, one GPU per process.
            The caller reads the environment; this function reads none.

    Returns:
        The device.

    Raises:
        ConfigError: ``spec`` is not one of the settings above, or asks for CUDA where CUDA is
            not available.
    """
    if not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"device must be {DEVICE_CHOICES}; got {spec!r}.")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r} asked for, but CUDA is not available here; use --device cpu "
            "or auto (or set LATENT_ODE_DEVICE so)."
        )
    if spec == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(spec)
