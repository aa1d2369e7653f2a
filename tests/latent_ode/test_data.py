"""Series validation, collation, task construction and the normaliser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_ode import DataError, Normaliser, Observations, Series, ShapeError, collate
from latent_ode.errors import ConfigError
from latent_ode.tasks import compact, extrapolation_task, interpolation_task

NAN = np.nan


def test_series_accepts_gappy_channels_and_exposes_mask() -> None:
    s = Series(times=[0.0, 0.4, 1.3], values=[[1.0, NAN], [0.8, 2.1], [NAN, 1.9]], id="bed-7")
    assert s.mask.tolist() == [[True, False], [True, True], [False, True]]
    assert s.num_channels == 2


@pytest.mark.parametrize(
    ("times", "values", "error", "match"),
    [
        ([0.0, 1.0, 0.5], [[1.0]] * 3, DataError,
         r"`times` in series 's' must be strictly increasing; got 0.5 after 1.0 at index 2"),
        ([0.0, 1.0, 1.0], [[1.0]] * 3, DataError, r"got 1.0 a duplicate of 1.0 at index 2"),
        ([0.0, NAN], [[1.0]] * 2, DataError, r"`times` in series 's' must be finite; got nan at index 1"),
        ([], np.zeros((0, 1)), DataError, r"must be a non-empty 1-D array"),
        ([0.0, 1.0], [[1.0], [np.inf]], DataError, r"must be finite or NaN \(missing\); got inf at row 1"),
        ([0.0, 1.0], [[1.0, 2.0], [NAN, NAN]], DataError, r"no observed channel at time 1.0 \(row 1\)"),
        ([0.0, 1.0], [[1.0], [2.0], [3.0]], ShapeError,
         r"must have shape \(T, D\) with T = len\(times\) = 2"),
    ],
)
def test_series_rejects_bad_input(times, values, error, match) -> None:
    with pytest.raises(error, match=match):
        Series(times=np.asarray(times, dtype=float), values=np.asarray(values, dtype=float), id="s")


def test_collate_pads_with_last_time_and_false_mask() -> None:
    a = Series(times=[0.0, 1.0, 2.0], values=[[1.0], [2.0], [3.0]])
    b = Series(times=[5.0], values=[[7.0]])
    obs = collate([a, b])
    assert obs.times.tolist() == [[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]
    assert obs.mask[..., 0].tolist() == [[True, True, True], [True, False, False]]
    assert obs.lengths.tolist() == [3, 1]
    assert obs.last_time.tolist() == [2.0, 5.0]


def test_collate_rejects_empty_and_mismatched_channels() -> None:
    with pytest.raises(DataError, match="at least one series"):
        collate([])
    with pytest.raises(ShapeError, match=r"every series must have 1 channels like series 0; series 1"):
        collate([Series(times=[0.0], values=[[1.0]]), Series(times=[0.0], values=[[1.0, 2.0]])])


def test_observations_zero_unobserved_values_and_check_shapes() -> None:
    obs = Observations(times=torch.zeros(1, 2), values=torch.tensor([[[5.0], [7.0]]]),
                       mask=torch.tensor([[[True], [False]]]))
    assert obs.values[0, 1, 0] == 0.0
    with pytest.raises(ShapeError, match=r"`mask` must have the shape of `values`"):
        Observations(times=torch.zeros(1, 2), values=torch.zeros(1, 2, 1), mask=torch.zeros(1, 2, 2))


def test_compact_keeps_selected_points_in_order() -> None:
    obs = collate([Series(times=[0.0, 1.0, 2.0, 3.0], values=[[0.0], [1.0], [2.0], [3.0]])])
    out = compact(obs, torch.tensor([[False, True, False, True]]))
    assert out.times.tolist() == [[1.0, 3.0]]
    assert out.values[..., 0].tolist() == [[1.0, 3.0]]


def test_interpolation_task_sees_a_subset_and_targets_everything() -> None:
    lengths = [50, 50, 7, 1]
    obs = collate([Series(times=np.arange(float(n)), values=np.arange(float(n))[:, None])
                   for n in lengths])
    ctx, tgt = interpolation_task(obs, 0.5, generator=torch.Generator().manual_seed(0))
    assert tgt is obs
    # Exactly round(0.5 * length) points of each series, at least one (the reference's "a random
    # 50 of the 100 points").
    assert ctx.lengths.tolist() == [25, 25, 4, 1]
    assert not torch.equal(ctx.times[0, :25], ctx.times[1, :25])  # drawn per series
    for b in range(4):
        n = int(ctx.lengths[b])
        # Every context point is a real point of the series, in time order.
        assert torch.equal(ctx.values[b, :n, 0], ctx.times[b, :n])
        assert bool((ctx.times[b, :n].diff() > 0).all())


def test_extrapolation_task_splits_each_series_at_half_its_span() -> None:
    obs = collate([Series(times=[0.0, 1.0, 2.0, 3.0], values=[[0.0]] * 4),
                   Series(times=[10.0, 30.0], values=[[0.0]] * 2)])
    ctx, tgt = extrapolation_task(obs, 0.5)
    assert ctx.times[0, : int(ctx.lengths[0])].tolist() == [0.0, 1.0]
    assert tgt.times[0, : int(tgt.lengths[0])].tolist() == [2.0, 3.0]
    assert ctx.times[1, : int(ctx.lengths[1])].tolist() == [10.0]
    assert tgt.times[1, : int(tgt.lengths[1])].tolist() == [30.0]


def test_normaliser_round_trip_and_inverse() -> None:
    s = [Series(times=[0.0, 2.0, 4.0], values=[[1.0, 10.0], [3.0, NAN], [5.0, 30.0]])]
    for kind in ("standard", "minmax", "none"):
        n = Normaliser.fit(s, kind=kind)
        assert Normaliser.from_dict(n.to_dict()) == n
        v = s[0].values
        np.testing.assert_allclose(n.values_from_model(n.values_to_model(v)), v, rtol=1e-12)
    n = Normaliser.fit(s, kind="minmax")
    assert n.loc.tolist() == [1.0, 10.0] and n.scale.tolist() == [4.0, 20.0] and n.time_scale == 4.0


def test_normaliser_errors() -> None:
    with pytest.raises(DataError, match=r"channel\(s\) \[1\] are never observed"):
        Normaliser.fit([Series(times=[0.0], values=[[1.0, NAN]])])
    with pytest.raises(ConfigError, match="`kind` must be 'standard', 'minmax', 'robust' or 'none'"):
        Normaliser(kind="zscore", loc=np.zeros(1), scale=np.ones(1), time_scale=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs exactly the keys"):
        Normaliser.from_dict({"kind": "none"})


def test_robust_normaliser_winsorises_a_mistyped_entry_and_round_trips() -> None:
    # A pH-like channel: 999 values near 7.4 and one entry of 735 (a missing decimal point).
    rng = np.random.default_rng(0)
    ph = np.concatenate([7.4 + 0.05 * rng.standard_normal(999), [735.0]])
    s = [Series(times=np.arange(ph.size, dtype=float), values=ph[:, None])]
    n = Normaliser.fit(s, kind="robust")
    q1, q3 = np.percentile(ph, [25, 75])
    assert n.loc[0] == pytest.approx(np.median(ph)) and n.scale[0] == pytest.approx((q3 - q1) / 1.349)
    hi = (np.percentile(ph, 99.9) - n.loc[0]) / n.scale[0]
    assert n.clip[1, 0] == pytest.approx(hi)
    z = n.values_to_model(ph[:, None])
    assert z.max() == pytest.approx(hi) and np.abs(z[:999]).max() < 5  # the sliver is gone
    lo, hi_value = np.percentile(ph, [0.1, 99.9])
    inside = ph[(ph >= lo) & (ph <= hi_value), None]  # values within the bounds come back
    np.testing.assert_allclose(n.values_from_model(n.values_to_model(inside)), inside, rtol=1e-12)
    assert Normaliser.from_dict(n.to_dict()) == n
    with pytest.raises(ConfigError, match=r"`clip` must be \(2, D\) finite bounds"):
        Normaliser(kind="robust", loc=np.zeros(1), scale=np.ones(1), time_scale=1.0, clip=[[1.0], [0.0]])
