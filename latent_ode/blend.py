"""Shrink each channel's answer towards its baseline by a weight fitted on validation.

The anchor (:mod:`latent_ode.anchor`) learns during training how far to trust each channel's
baseline; within a training budget it does not always get there (on PhysioNet, Weight's
interpolation stayed 1.3-1.4x worse than drawing lines between its values). The blend is fitted
after training, on the validation split's held-out points, and answers the question directly:

    x̂_d(t) = b_d(t) + w[r, d, k] * (m_d(t) - b_d(t)),   w in [0, 1],

with ``m`` the model's (anchored) mean, ``b`` the channel's baseline (linear interpolation of its
context observations inside them, the last observation carried forward after them, the first
carried backward before them: :attr:`~latent_ode.baselines.ChannelBaselines.linear`), ``r`` the
query's regime against its series' observed window (:func:`~latent_ode.forecaster.window_position`:
backcast, interpolation, forecast) and ``k`` the bin of the gap to the channel's nearest context
observation. ``w`` is the least-squares weight on the validation residuals, clipped to [0, 1]:
since ``w = 0`` is the baseline itself, the fitted blend is never worse than the baseline on the
points it was fitted on, and never worse than the model either (``w = 1``).

A channel the context never observed has no line to draw: its baseline is a constant, the
channel's mean (``fallback``, on the model's scale, fitted with the weights), and it gets its own
weight per regime (``unobserved``, (3, D)). On PhysioNet this is most of what separated Weight's
interpolation from linear interpolation's: a stay whose only weight is the admission one, hidden,
was answered by the decoder alone, 1.3x worse there than the population mean (seed 0).

The baseline is drawn from the user's own values: with a normaliser that winsorises
(``robust``), the model reads clipped values but the baseline is the unclipped one, as the user
would draw it (:meth:`~latent_ode.normalisation.Normaliser.values_to_model` with ``clip=False``);
clipped, it was 5x worse than the user's own lines on PhysioNet's white cell count, whose
largest values are real.

The blend is applied to every latent sample (``b + w (s - b)``), so the predictive mean is blended
as above and the spread of the samples shrinks with ``w``; the predictive noise is calibrated
after the blend is fitted, on the blended samples (:func:`latent_ode.training.calibration`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latent_ode.baselines import ChannelBaselines
from latent_ode.errors import ConfigError

__all__ = ["BLEND_BINS", "BaselineBlend", "fit_weight", "infs_to_nulls", "lookup_gap_bins",
           "nulls_to_inf"]

#: Gap bins per regime and channel when there are enough validation points for each.
BLEND_BINS = 3

# Regimes in :func:`latent_ode.forecaster.window_position`'s order.
_REGIMES = 3


def fit_weight(delta: np.ndarray, target: np.ndarray) -> float:
    """The least-squares ``w`` in [0, 1] of ``target ≈ w * delta``: the weight of the model's
    departure from the baseline (``delta = model - baseline``) that best explains the truth's
    (``target = truth - baseline``). 1 when ``delta`` is all zero (nothing to shrink)."""
    den = float(np.dot(delta, delta))
    if den <= 0.0:
        return 1.0
    return float(np.clip(np.dot(delta, target) / den, 0.0, 1.0))


@dataclass(frozen=True)
class BaselineBlend:
    """Per regime, channel and gap bin, the weight of the model against the baseline.

    Attributes:
        weights: (3, D, K) weights in [0, 1]; regimes in :func:`window_position`'s order.
        edges: (3, D, K - 1) increasing gap-bin edges in normalised time (a query with gap g
            falls in bin ``searchsorted(edges, g, side="right")``); ``inf`` where a channel has a
            single bin.
        unobserved: (3, D) weights in [0, 1] of the model against ``fallback`` for a channel the
            context never observed; ``None`` (blends written before it): the model's answer.
        fallback: (D,) each channel's mean on the model's scale, the baseline of a channel the
            context never observed; given with ``unobserved``.
        raw_anchor: (D,) bools: the channels whose baseline anchor (:mod:`latent_ode.anchor`)
            reads the unclipped lines rather than the clipped ones it was trained on (chosen on
            validation: a channel whose extreme values are real, not typing errors); ``None``:
            the clipped ones everywhere.
    """

    weights: np.ndarray
    edges: np.ndarray
    unobserved: np.ndarray | None = None
    fallback: np.ndarray | None = None
    raw_anchor: np.ndarray | None = None

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        e = np.asarray(self.edges, dtype=np.float64)
        if w.ndim != 3 or w.shape[0] != _REGIMES or w.shape[2] < 1:
            raise ConfigError(f"`blend.weights` must have shape (3, D, K); got {w.shape}.")
        _check_weights("weights", w)
        if e.shape != (w.shape[0], w.shape[1], w.shape[2] - 1) or np.isnan(e).any() or (
                e[..., 1:] < e[..., :-1]).any():
            raise ConfigError(f"`blend.edges` must be a (3, D, K - 1) = "
                              f"{(w.shape[0], w.shape[1], w.shape[2] - 1)} array of increasing "
                              f"gaps; got shape {e.shape}.")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "edges", e)
        if (self.unobserved is None) != (self.fallback is None):
            raise ConfigError("`blend.unobserved` and `blend.fallback` come together; got one "
                              "without the other.")
        if self.unobserved is not None:
            u = np.asarray(self.unobserved, dtype=np.float64)
            f = np.asarray(self.fallback, dtype=np.float64)
            if u.shape != (_REGIMES, w.shape[1]):
                raise ConfigError(f"`blend.unobserved` must have shape (3, D) = "
                                  f"{(_REGIMES, w.shape[1])}; got {u.shape}.")
            _check_weights("unobserved", u)
            if f.shape != (w.shape[1],) or not np.isfinite(f).all():
                raise ConfigError(f"`blend.fallback` must be {w.shape[1]} finite numbers; got "
                                  f"{f.tolist()}.")
            object.__setattr__(self, "unobserved", u)
            object.__setattr__(self, "fallback", f)
        if self.raw_anchor is not None:
            r = np.asarray(self.raw_anchor)
            if r.shape != (w.shape[1],) or r.dtype != np.bool_:
                raise ConfigError(f"`blend.raw_anchor` must be {w.shape[1]} booleans; got "
                                  f"{r.tolist()}.")
            object.__setattr__(self, "raw_anchor", r)

    @property
    def num_channels(self) -> int:
        return int(self.weights.shape[1])

    @classmethod
    def identity(cls, channels: int) -> BaselineBlend:
        """Weight 1 everywhere: the model's answer unchanged."""
        return cls(weights=np.ones((_REGIMES, channels, 1)), edges=np.zeros((_REGIMES, channels, 0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``inf`` edges written as ``null``)."""
        out: dict[str, Any] = {"weights": self.weights.tolist(), "edges": infs_to_nulls(self.edges)}
        if self.unobserved is not None and self.fallback is not None:
            out |= {"unobserved": self.unobserved.tolist(), "fallback": self.fallback.tolist()}
        if self.raw_anchor is not None:
            out["raw_anchor"] = self.raw_anchor.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineBlend:
        """What :meth:`to_dict` wrote.

        Raises:
            ConfigError: missing keys or arrays of the wrong shape or range.
        """
        optional = {"unobserved", "fallback", "raw_anchor"}
        if not isinstance(data, Mapping) or not {"weights", "edges"} <= set(data) <= (
                {"weights", "edges"} | optional):
            raise ConfigError(f"`blend` must be a table with the keys ['edges', 'weights'] and "
                              f"optionally {sorted(optional)}; got {data!r}.")
        try:
            weights = np.asarray(data["weights"], dtype=np.float64)
            edges = np.asarray(nulls_to_inf(data["edges"]), dtype=np.float64)
            unobserved = (np.asarray(data["unobserved"], dtype=np.float64)
                          if "unobserved" in data else None)
            fallback = np.asarray(data["fallback"], dtype=np.float64) if "fallback" in data else None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"`blend` must hold arrays of numbers: {exc}") from exc
        raw_anchor = data.get("raw_anchor")
        if raw_anchor is not None:
            if not (isinstance(raw_anchor, Sequence)
                    and all(isinstance(x, bool) for x in raw_anchor)):
                raise ConfigError(f"`blend.raw_anchor` must be a list of booleans; got "
                                  f"{raw_anchor!r}.")
            raw_anchor = np.asarray(raw_anchor, dtype=bool)
        if edges.size == 0 and weights.ndim == 3:
            edges = edges.reshape(weights.shape[0], weights.shape[1], weights.shape[2] - 1)
        return cls(weights=weights, edges=edges, unobserved=unobserved, fallback=fallback,
                   raw_anchor=raw_anchor)

    def weight_tensor(self, position: Tensor, gap: Tensor) -> Tensor:
        """(B, Q, D) weights for queries at ``position`` (B, Q) with per-channel gaps ``gap``
        (B, Q, D), on ``gap``'s device and dtype."""
        return lookup_gap_bins(self.weights, self.edges, position, gap)

    def apply(self, samples: Tensor, baselines: ChannelBaselines, position: Tensor) -> Tensor:
        """(S, B, Q, D) samples blended towards ``baselines.linear`` where the context observed
        the channel, towards ``fallback`` where it did not (unchanged there without
        ``unobserved``); ``position`` (B, Q) the queries' regimes."""
        w = self.weight_tensor(position, baselines.gap.to(samples.dtype))
        base = baselines.linear.to(samples.dtype)
        if self.unobserved is None or self.fallback is None:
            w = torch.where(baselines.observed, w, 1.0)
        else:
            u = torch.as_tensor(self.unobserved, dtype=w.dtype, device=w.device)[position]
            fb = torch.as_tensor(self.fallback, dtype=base.dtype, device=base.device)
            w = torch.where(baselines.observed, w, u)
            base = torch.where(baselines.observed, base, fb)
        return base + w * (samples - base)


def lookup_gap_bins(table: np.ndarray, edges: np.ndarray, position: Tensor, gap: Tensor
                    ) -> Tensor:
    """(B, Q, D) entries of a per-regime, per-channel, per-gap-bin ``table`` (3, C, K) with
    increasing bin ``edges`` (3, C, K - 1), for queries at ``position`` (B, Q) with gaps ``gap``
    (B, Q, D); C is D, or 1 for one row shared by every channel. A gap g falls in bin
    ``searchsorted(edges, g, side="right")``. On ``gap``'s device and dtype."""
    c, k = table.shape[1], table.shape[2]
    t = torch.as_tensor(table, dtype=gap.dtype, device=gap.device)[position]  # (B, Q, C, K)
    if c == 0:
        return gap.new_zeros(gap.shape)
    if k == 1:
        return t[..., 0].expand(gap.shape)
    e = torch.as_tensor(edges, dtype=gap.dtype, device=gap.device)[position]  # (B, Q, C, K-1)
    which = (gap[..., None] >= e).sum(-1)  # (B, Q, D), in [0, K-1]
    return t.expand(*gap.shape, k).gather(-1, which[..., None]).squeeze(-1)


def _check_weights(name: str, w: np.ndarray) -> None:
    if not (np.isfinite(w).all() and (w >= 0).all() and (w <= 1).all()):
        raise ConfigError(f"`blend.{name}` must lie in [0, 1]; got {w.tolist()}.")


def nulls_to_inf(x: Any) -> Any:
    """Nested lists with ``None`` read back as ``inf`` (what :func:`infs_to_nulls` wrote)."""
    if isinstance(x, Sequence) and not isinstance(x, str):
        return [nulls_to_inf(v) for v in x]
    return float("inf") if x is None else x


def infs_to_nulls(edges: np.ndarray) -> Any:
    """Nested lists of an array of gap-bin edges, ``inf`` written as ``None`` (JSON has no
    infinity)."""
    return [infs_to_nulls(row) for row in edges] if edges.ndim > 1 else [
        None if not np.isfinite(x) else float(x) for x in edges]
