"""Shared numerics for the library tests: one tolerance table keyed by dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_ode import DecoderConfig, DynamicsConfig, EncoderConfig, Forecaster, ModelConfig, Normaliser
from pipelines.sources.periodic import periodic
from pipelines.sources.spirals import spirals

# Comparisons of the same computation done two ways (batching, permutation, save/load).
TOL = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-9},
    # float32 sums come out in a different order when the batch changes shape.
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
}
# Solver against exact solutions (float64, tight tolerances): the 1e-6.
EXACT_ODE_ATOL = 1e-6
# Adjoint against backprop-through-the-solver gradients (two different discretisations of the
# same derivative; both at rtol 1e-8): the 1e-4 relative.
ADJOINT_RTOL = 1e-4


@pytest.fixture
def periodic_small():
    return periodic(40, n_times=30, seed=3)


# Every model invariant and the persistence tests run with both encoder cells, with the
# rotation and bilinear parts of the latent dynamics, and with the baseline anchor and learned
# per-channel noise.
@pytest.fixture(params=[("gru", 0.0, False, False), ("mlp_gru", 0.0, False, False),
                        ("gru", 3.0, False, False), ("mlp_gru", 3.0, True, False),
                        ("gru", 0.0, False, True)],
                ids=["gru", "mlp_gru", "rotation", "rotation-bilinear", "anchored"])
def forecaster(request, periodic_small) -> Forecaster:
    cell, rotation, bilinear, anchored = request.param
    norm = Normaliser.fit(periodic_small, kind="standard")
    cfg = ModelConfig(input_dim=1, latent_dim=4, encoder=EncoderConfig(cell=cell, hidden=8, units=16),
                      dynamics=DynamicsConfig(units=16, rotation=rotation, bilinear=bilinear),
                      decoder=DecoderConfig(anchor=anchored), learn_obs_std=anchored)
    return Forecaster.create(cfg, norm, channels=["x"], time_unit="s", seed=0)


@pytest.fixture(params=["gru", "mlp_gru"])
def two_channel_forecaster(request) -> tuple[Forecaster, list]:
    data = spirals(20, n_times=20, n_total=200, seed=1)
    norm = Normaliser.fit(data, kind="standard")
    cfg = ModelConfig(input_dim=2, latent_dim=4,
                      encoder=EncoderConfig(cell=request.param, hidden=8, units=16),
                      dynamics=DynamicsConfig(units=16))
    return Forecaster.create(cfg, norm, channels=["x", "y"], time_unit="s", seed=0), data


def assert_close(a, b, dtype=torch.float32) -> None:
    torch.testing.assert_close(torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b)),
                               **TOL[dtype])
