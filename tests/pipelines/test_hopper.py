"""Hopper generator: shapes, seeding, the integrator's kinematics, and life without dm_control."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import numpy as np
import pytest

from latent_ode.errors import ConfigError
from pipelines.sources.hopper import CHANNELS, generate_hopper


@pytest.fixture(scope="module")
def dm_control() -> ModuleType:
    return pytest.importorskip(
        "dm_control", reason="needs the hopper extra: pip install -e '.[hopper]'"
    )


@pytest.fixture(scope="module")
def trajectories(dm_control: ModuleType) -> np.ndarray:
    table = generate_hopper(4, n_steps=30, seed=3)
    return np.stack([s.values for s in table.series])  # (B, T, D)


def test_shapes_channels_and_times(dm_control: ModuleType) -> None:
    table = generate_hopper(3, n_steps=25, seed=1)
    assert table.ids == ["hopper-00000", "hopper-00001", "hopper-00002"]
    assert table.channels == [f"qpos_{i}" for i in range(7)] + [f"qvel_{i}" for i in range(7)]
    assert table.channels == list(CHANNELS)
    assert table.time_unit == "seconds"
    for s in table.series:
        assert s.values.shape == (25, 14)
        assert np.isfinite(s.values).all()  # fully observed
        # hopper.xml's timestep is 0.005 s; times are step index x timestep.
        np.testing.assert_array_equal(s.times, np.arange(25) * 0.005)


def test_same_seed_same_trajectories_other_seed_different(
    dm_control: ModuleType, trajectories: np.ndarray
) -> None:
    again = np.stack([s.values for s in generate_hopper(4, n_steps=30, seed=3).series])
    np.testing.assert_array_equal(again, trajectories)
    other = np.stack([s.values for s in generate_hopper(4, n_steps=30, seed=4).series])
    assert not np.allclose(other, trajectories)
    # The first trajectories do not depend on how many are asked for.
    first = generate_hopper(1, n_steps=30, seed=3).series[0].values
    np.testing.assert_array_equal(first, trajectories[0])


def test_initial_states_follow_the_reference_ranges(trajectories: np.ndarray) -> None:
    x0 = trajectories[:, 0]  # (B, D)
    assert ((x0[:, :2] >= 0.0) & (x0[:, :2] <= 0.5)).all()   # root x, z
    assert ((x0[:, 2:7] >= -2.0) & (x0[:, 2:7] <= 2.0)).all()  # angles
    assert ((x0[:, 7:] >= -5.0) & (x0[:, 7:] <= 5.0)).all()    # velocities
    assert len(np.unique(x0[:, 0])) == len(x0)  # every trajectory has its own start


def test_positions_integrate_velocities(trajectories: np.ndarray) -> None:
    # MuJoCo's semi-implicit Euler step: qvel[t+1] = qvel[t] + dt * qacc, then
    # qpos[t+1] = qpos[t] + dt * qvel[t+1]; all seven Hopper joints are 1-DoF (slide/hinge), so
    # this holds per channel up to rounding, whatever the contacts do.
    dt = 0.005
    qpos, qvel = trajectories[..., :7], trajectories[..., 7:]
    np.testing.assert_allclose(np.diff(qpos, axis=1), dt * qvel[:, 1:], rtol=0, atol=1e-12)
    # ... and the system does move: gravity and the random start change the velocities.
    assert np.abs(np.diff(qvel, axis=1)).max() > 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_series": 0}, r"`n_series` must be a positive number of trajectories; got 0"),
     ({"n_series": 2, "n_steps": 0}, r"`n_steps` must be a positive number of time points; got 0")],
)
def test_bad_sizes(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_hopper(**kwargs)


def test_missing_dm_control_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dm_control", None)  # makes `import dm_control` fail
    with pytest.raises(ImportError, match=r'install the optional extra with `pip install -e '
                       r'"\.\[hopper\]"`'):
        generate_hopper(1)


def test_module_imports_without_dm_control(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.sources.hopper as hopper

    for name in ("dm_control", "dm_control.suite", "mujoco"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of them now fails
    reloaded = importlib.reload(hopper)
    assert reloaded.CHANNELS == CHANNELS
