"""The baseline anchor and the learned per-channel observation noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latent_ode import ConfigError, DecoderConfig, ModelConfig, Series, collate
from latent_ode.anchor import BaselineAnchor
from latent_ode.baselines import channel_baselines
from latent_ode.likelihoods import gaussian_log_likelihood
from latent_ode.model import LatentODE


def _context() -> tuple:
    # Channel 0 observed at 0 and 2; channel 1 never observed.
    s = Series(times=np.array([0.0, 2.0]), values=np.array([[1.0, np.nan], [3.0, np.nan]]))
    obs = collate([s], dtype=torch.float64)
    query = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    decoded = torch.full((2, 1, 3, 2), -5.0, dtype=torch.float64)  # (S, B, Q, D)
    return obs, query, decoded


def test_full_trust_without_decay_answers_the_baseline_and_none_the_decoder() -> None:
    obs, query, decoded = _context()
    anchor = BaselineAnchor(2).double()
    with torch.no_grad():
        anchor.trust.fill_(60.0)  # sigmoid = 1 in float64
        anchor.decay.fill_(-60.0)  # softplus ~ 1e-26: no decay over these gaps
    out = anchor(decoded, obs, query)
    torch.testing.assert_close(out[:, 0, :, 0], torch.tensor([[2.0, 3.0, 3.0]] * 2, dtype=torch.float64))
    # The unobserved channel keeps the decoder's answer whatever the trust.
    torch.testing.assert_close(out[..., 1], decoded[..., 1])
    with torch.no_grad():
        anchor.trust.fill_(-60.0)
    torch.testing.assert_close(anchor(decoded, obs, query), decoded)


def test_trust_decays_with_the_gap_to_the_nearest_observation() -> None:
    obs, query, decoded = _context()
    anchor = BaselineAnchor(2).double()  # trust 1/2, decay rate log 2 per unit of time
    base = channel_baselines(obs, query)
    tau = anchor.weight(base.gap, base.observed)[0, :, 0]
    # Gaps 1, 0 and 2: tau = 1/2 * 2^-gap.
    torch.testing.assert_close(tau, torch.tensor([0.25, 0.5, 0.125], dtype=torch.float64))
    out = anchor(decoded, obs, query)[0, 0, :, 0]
    torch.testing.assert_close(out, tau * torch.tensor([2.0, 3.0, 3.0], dtype=torch.float64)
                               + (1 - tau) * -5.0)


def test_learned_noise_starts_at_obs_std_respects_its_floor_and_is_per_channel() -> None:
    model = LatentODE(ModelConfig(input_dim=3, obs_std=0.05, obs_std_min=1e-3, learn_obs_std=True))
    torch.testing.assert_close(model.obs_std, torch.full((3,), 0.05))
    with torch.no_grad():
        model.obs_log_excess.copy_(torch.tensor([-100.0, 0.0, math.log(0.2)]))
    torch.testing.assert_close(model.obs_std, torch.tensor([1e-3, 1.001, 0.201]))
    assert LatentODE(ModelConfig(input_dim=3, obs_std=0.05)).obs_std == 0.05


def test_per_channel_likelihood_matches_torch_normal() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 4, 3, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 4, 3, generator=gen) < 0.7
    std = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    got = gaussian_log_likelihood(pred, target, mask, std)
    logp = torch.distributions.Normal(pred, std).log_prob(target)
    want = (logp * mask).sum((-1, -2)) / mask.sum((-1, -2))
    torch.testing.assert_close(got, want)


def test_learned_noise_and_anchor_train_and_round_trip(tmp_path) -> None:
    from latent_ode import Forecaster, Normaliser
    from pipelines.sources.spirals import spirals

    data = spirals(12, n_times=15, n_total=100, seed=0)
    cfg = ModelConfig(input_dim=2, latent_dim=4, learn_obs_std=True, decoder=DecoderConfig(anchor=True))
    fc = Forecaster.create(cfg, Normaliser.fit(data), channels=["x", "y"], time_unit="s", seed=0)
    from latent_ode.tasks import interpolation_task

    batch = collate([fc.normaliser.transform(s) for s in data])
    context, target = interpolation_task(batch, 0.5, generator=torch.Generator().manual_seed(0))
    out = fc.model.loss(context, target)
    out.loss.backward()
    for p in (fc.model.obs_log_excess, fc.model.anchor.trust, fc.model.anchor.decay):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    loaded = Forecaster.load(fc.save(tmp_path / "m"))
    assert loaded.model.config == cfg
    a = fc.predict(data[:2], [np.array([0.5, 9.0])] * 2, num_samples=4)
    b = loaded.predict(data[:2], [np.array([0.5, 9.0])] * 2, num_samples=4)
    np.testing.assert_allclose(a[0].mean, b[0].mean, rtol=1e-6)


def test_obs_std_min_must_not_exceed_obs_std() -> None:
    with pytest.raises(ConfigError, match=r"obs_std_min"):
        ModelConfig(input_dim=1, obs_std=0.01, obs_std_min=0.1)
