"""MuJoCo Hopper trajectories, generated offline with the DeepMind Control Suite.

Recipe of the Latent ODE paper (Rubanova, Chen, Duvenaud, NeurIPS 2019, "MuJoCo Physics
Simulation"), as implemented in their reference code,
``HopperPhysics._generate_random_trajectories`` in ``mujoco_physics.py`` of
https://github.com/YuliaRubanova/latent_ode:

- load ``suite.load("hopper", "stand")`` and use its physics only (no actions: controls stay 0);
- per trajectory, inside ``physics.reset_context()``: root x and z positions (``qpos[:2]``)
  uniform in [0, 0.5], the other positions (``qpos[2:]``, angles) uniform in [-2, 2], all
  velocities (``qvel``) uniform in [-5, 5];
- record ``qpos`` (7) and ``qvel`` (7) = 14 channels, then ``physics.step()``, ``n_steps`` times
  (the first record is the initial state).

Differences from the reference code, on purpose: randomness comes from
``numpy.random.default_rng(seed)`` instead of reseeding NumPy's global generator with 123 (so the
trajectories are not the paper's exact samples, but the same seed always gives the same ones);
the reference file stores 200 steps per trajectory while the paper's experiments use 100 time
points, our default; and times are kept in physical units, seconds of simulated time
(step index x the model's timestep, 0.005 s in the suite's ``hopper.xml``), where the paper's
code rescales them to [0, 1).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, ClassVar

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError
from pipelines.longformat import SeriesTable
from pipelines.sources.base import GeneratedSource, options_from_signature

__all__ = ["CHANNELS", "SOURCE", "HopperSource", "generate_hopper"]

logger = logging.getLogger(__name__)

_NQ = 7  # Hopper joints: rootx, rootz, rooty, waist, hip, knee, ankle (all 1-DoF)
#: Channel names: joint positions then joint velocities, in MuJoCo's joint order.
CHANNELS: tuple[str, ...] = tuple(f"qpos_{i}" for i in range(_NQ)) + tuple(
    f"qvel_{i}" for i in range(_NQ)
)

# Initial-state ranges of the reference recipe (see the module docstring).
ROOT_POSITION_RANGE = (0.0, 0.5)
ANGLE_RANGE = (-2.0, 2.0)
VELOCITY_RANGE = (-5.0, 5.0)

_INSTALL_HINT = 'pip install -e ".[hopper]"'
_LOG_EVERY = 500


def _load_physics() -> Any:
    """The physics of the suite's hopper/stand task; an ImportError says what to install."""
    # We never render: without this, dm_control probes OpenGL back-ends at import and warns on
    # headless machines. A value the user set is kept.
    os.environ.setdefault("MUJOCO_GL", "disable")
    try:
        from dm_control import suite
    except ImportError as exc:
        raise ImportError(
            "generating the hopper data set needs dm-control and mujoco, which are not installed; "
            f"install the optional extra with `{_INSTALL_HINT}` (or `pip install dm-control "
            "mujoco==3.17.0`)."
        ) from exc
    return suite.load("hopper", "stand").physics


def generate_hopper(n_series: int, *, n_steps: int = 100, seed: int = 0) -> SeriesTable:
    """Simulate Hopper trajectories from random initial states (Rubanova et al. 2019 recipe).

    Args:
        n_series: number of trajectories B.
        n_steps: time points T per trajectory (the initial state and ``n_steps - 1`` physics steps).
        seed: seed of the random initial states; the same seed gives the same table.

    Returns:
        A table of B fully observed series with ids ``hopper-00000``, ...; times
        ``step x timestep`` in ``seconds`` of simulated time (T,); values (T, 14) with channels
        :data:`CHANNELS` (``qpos_0..6`` then ``qvel_0..6``).

    Raises:
        ConfigError: ``n_series`` or ``n_steps`` is not positive.
        ImportError: dm-control is not installed (install the ``hopper`` extra).
    """
    if n_series < 1:
        raise ConfigError(f"`n_series` must be a positive number of trajectories; got {n_series}.")
    if n_steps < 1:
        raise ConfigError(f"`n_steps` must be a positive number of time points; got {n_steps}.")
    physics = _load_physics()
    nq, nv = int(physics.model.nq), int(physics.model.nv)
    if (nq, nv) != (_NQ, _NQ):
        raise RuntimeError(
            f"the dm_control hopper model has nq={nq}, nv={nv}; this generator expects 7 and 7. "
            "Install the versions pinned in constraints.txt."
        )
    dt = float(physics.model.opt.timestep)
    times = np.arange(n_steps, dtype=np.float64) * dt  # (T,)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    series: list[Series] = []
    for b in range(n_series):
        values = np.empty((n_steps, 2 * _NQ), dtype=np.float64)  # (T, D)
        with physics.reset_context():
            # Root x/z >= 0 keeps the hopper above the ground at the start.
            physics.data.qpos[:2] = rng.uniform(*ROOT_POSITION_RANGE, size=2)
            physics.data.qpos[2:] = rng.uniform(*ANGLE_RANGE, size=nq - 2)
            physics.data.qvel[:] = rng.uniform(*VELOCITY_RANGE, size=nv)
        for t in range(n_steps):
            values[t, :_NQ] = physics.data.qpos
            values[t, _NQ:] = physics.data.qvel
            if t + 1 < n_steps:
                physics.step()
        series.append(Series(times=times, values=values, id=f"hopper-{b:05d}"))
        if (b + 1) % _LOG_EVERY == 0:
            logger.info("hopper: %d/%d trajectories", b + 1, n_series)
    logger.info(
        "hopper: generated %d trajectories x %d steps (dt = %g s) in %.1f s",
        n_series, n_steps, dt, time.perf_counter() - start,
    )
    return SeriesTable(series=series, channels=list(CHANNELS), time_unit="seconds")


class HopperSource(GeneratedSource):
    """The registry's ``hopper`` entry: :func:`generate_hopper`, options ``n_steps``.

    Times are in seconds of simulated time whatever ``[data] time_unit`` says.
    """

    name: ClassVar[str] = "hopper"
    description: ClassVar[str] = (
        "MuJoCo Hopper trajectories from random initial states (Rubanova et al. 2019), "
        "14 channels; needs the hopper extra"
    )
    extra: ClassVar[str | None] = "hopper"
    requires: ClassVar[tuple[str, ...]] = ("dm_control", "mujoco")
    options_model = options_from_signature(generate_hopper, name="HopperOptions")

    def generate(self, options: Any, *, n_series: int, seed: int, time_unit: str) -> SeriesTable:
        """The :func:`generate_hopper` table (``time_unit`` is ignored: the times are seconds).

        Raises:
            ConfigError: dm-control is not installed (the message says how to install it).
        """
        try:
            return generate_hopper(n_series, seed=seed, **options.model_dump())
        except ImportError as exc:
            raise ConfigError(
                f"the hopper data set needs dm-control ({exc}); install the `hopper` extra: "
                "pip install -c constraints.txt -e \".[hopper]\"."
            ) from None


SOURCE = HopperSource()
