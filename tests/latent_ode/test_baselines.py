"""Per-channel baselines against numpy.interp and a loop over the observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_ode.baselines import channel_baselines
from latent_ode.data import Series, collate
from latent_ode.errors import ShapeError


def _reference(s: Series, q: np.ndarray, fallback: float) -> tuple[np.ndarray, ...]:
    lin = np.full((q.size, s.values.shape[1]), fallback)
    locf = lin.copy()
    gap = np.full(lin.shape, np.inf)
    for d in range(s.values.shape[1]):
        seen = ~np.isnan(s.values[:, d])
        if not seen.any():
            continue
        xs, ys = s.times[seen], s.values[seen, d]
        lin[:, d] = np.interp(q, xs, ys)
        pos = np.searchsorted(xs, q, side="right") - 1
        locf[:, d] = ys[np.clip(pos, 0, None)]
        gap[:, d] = np.abs(q[:, None] - xs[None, :]).min(axis=1)
    return lin, locf, gap


def _random_series(rng: np.random.Generator, n: int, d: int, i: int) -> Series:
    times = np.sort(rng.choice(np.arange(0, 200), size=n, replace=False)) / 10.0
    values = rng.normal(size=(n, d))
    values[rng.random((n, d)) < 0.6] = np.nan
    values[:, -1] = np.nan  # one channel never observed
    values[np.isnan(values[:, :-1]).all(axis=1), 0] = 1.5  # every row observes something
    return Series(times=times, values=values, id=f"s{i}")


def test_matches_numpy_on_ragged_gappy_batches() -> None:
    rng = np.random.default_rng(0)
    series = [_random_series(rng, n, 4, i) for i, n in enumerate([1, 2, 7, 30])]
    queries = [rng.uniform(-2.0, 22.0, size=11) for _ in series]
    # Queries exactly on observations, and on the last time (the padding's time).
    queries[2][:3] = series[2].times[[0, 3, -1]]
    queries[3][0] = series[3].times[-1]
    base = channel_baselines(collate(series, dtype=torch.float64),
                             torch.as_tensor(np.stack(queries)), fallback=-7.0)
    for i, (s, q) in enumerate(zip(series, queries, strict=True)):
        lin, locf, gap = _reference(s, q, -7.0)
        torch.testing.assert_close(base.linear[i], torch.as_tensor(lin), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(base.locf[i], torch.as_tensor(locf), rtol=0, atol=0)
        torch.testing.assert_close(base.gap[i], torch.as_tensor(gap), rtol=1e-12, atol=1e-12)
        assert base.observed[i].numpy().tolist() == [[bool(np.isfinite(g)) for g in row] for row in gap]


def test_linear_is_exact_on_a_line_and_differentiable() -> None:
    s = Series(times=np.array([0.0, 1.0, 3.0]), values=np.array([[1.0], [3.0], [7.0]]))
    obs = collate([s], dtype=torch.float64)
    values = obs.values.clone().requires_grad_(True)
    obs = type(obs)(times=obs.times, values=values, mask=obs.mask, lengths=obs.lengths)
    base = channel_baselines(obs, torch.tensor([[0.5, 2.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(base.linear[0, :, 0], torch.tensor([2.0, 5.0, 7.0], dtype=torch.float64))
    base.linear.sum().backward()
    assert values.grad is not None and float(values.grad.abs().sum()) > 0


def test_query_shape_error() -> None:
    obs = collate([Series(times=np.array([0.0]), values=np.array([[1.0]]))])
    with pytest.raises(ShapeError, match=r"`query_times` must have shape \(B, Q\) with B = 1"):
        channel_baselines(obs, torch.zeros(2, 3))
