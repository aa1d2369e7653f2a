"""resolve_device: the one reading of a device setting, for the pipelines and the service."""

from __future__ import annotations

import pytest
import torch

from latent_ode.device import DEVICE_PATTERN, resolve_device
from latent_ode.errors import ConfigError


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    expected = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected


@pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:", "cuda:x", "CPU", " cpu", "cuda:1 "])
def test_unknown_settings_are_refused(spec: str) -> None:
    assert DEVICE_PATTERN.match(spec) is None
    with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda or cuda:N; got "):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:12"])
def test_cuda_without_cuda_fails_at_once(spec: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match=rf"device '{spec}' asked for, but CUDA is not available"):
        resolve_device(spec)


@pytest.mark.gpu
def test_local_rank_picks_the_gpu_of_a_torchrun_process(cuda_device: str) -> None:
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:0", local_rank=5) == torch.device("cuda", 0)  # explicit wins
