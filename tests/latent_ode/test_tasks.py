"""Task selection and the one loop over a held-out split, shared by validation, the noise
calibration and evaluation."""

from __future__ import annotations

import pytest
import torch

from latent_ode import Observations, Series, TrainConfig, collate
from latent_ode.tasks import (
    interpolation_task,
    minibatch,
    task_batches,
    task_pair,
    training_task,
    validation_tasks,
)


def _split() -> Observations:
    # Five series of different lengths, so that minibatches carry padding of their own.
    series = [Series(times=torch.arange(n).double().numpy(), values=torch.randn(n, 2).numpy())
              for n in (3, 8, 5, 2, 6)]
    return collate(series)


@pytest.mark.parametrize(("task", "val_metric", "expected"), [
    ("both", "val_mse", ("interpolation", "extrapolation")),
    ("interpolation", "val_loss", ("interpolation",)),
    ("extrapolation", "val_mse", ("extrapolation",)),
    ("extrapolation", "val_interp_mse", ("interpolation", "extrapolation")),
    ("interpolation", "val_extrap_mse", ("interpolation", "extrapolation")),
])
def test_validation_measures_the_trained_tasks_and_the_metrics_task(task, val_metric,
                                                                     expected) -> None:
    assert validation_tasks(TrainConfig(task=task, val_metric=val_metric)) == expected


def test_training_task_draws_only_when_both_tasks_train() -> None:
    gen = torch.Generator().manual_seed(0)
    drawn = [training_task(TrainConfig(task="both", extrap_prob=0.25), gen) for _ in range(400)]
    assert 0.18 < drawn.count("extrapolation") / 400 < 0.32
    before = gen.get_state()
    assert training_task(TrainConfig(task="interpolation"), gen) == "interpolation"
    assert torch.equal(gen.get_state(), before)  # a fixed task consumes no randomness


def test_task_batches_is_the_plain_loop_over_tasks_and_minibatches() -> None:
    obs = _split()
    items = list(task_batches(obs, ("interpolation", "extrapolation"), batch_size=2,
                              interp_fraction=0.5, extrap_split=0.5,
                              generator=torch.Generator().manual_seed(3)))
    assert [(i.task, i.start, i.size) for i in items] == [
        ("interpolation", 0, 2), ("interpolation", 2, 2), ("interpolation", 4, 1),
        ("extrapolation", 0, 2), ("extrapolation", 2, 2), ("extrapolation", 4, 1)]
    # The same pairs as drawing each minibatch by hand, padding trimmed to the minibatch.
    gen = torch.Generator().manual_seed(3)
    for item in items:
        batch = minibatch(obs, torch.arange(item.start, item.start + item.size))
        context, target = task_pair(batch, item.task, interp_fraction=0.5, extrap_split=0.5,
                                    generator=gen)
        for got, want in ((item.context, context), (item.target, target)):
            torch.testing.assert_close(got.times, want.times, rtol=0, atol=0)
            torch.testing.assert_close(got.mask, want.mask, rtol=0, atol=0)
    assert items[2].target.times.shape[1] == 6  # the last minibatch: one series of 6 points


def test_task_batches_draws_as_a_lazy_loop_and_untrimmed_keeps_the_split_width() -> None:
    """The caller's own draws between items interleave with the contexts' draws, and
    ``trim=False`` draws each context on the whole split's width (as evaluate always has)."""
    obs = _split()
    gen = torch.Generator().manual_seed(5)
    contexts = []
    for item in task_batches(obs, ("interpolation",), batch_size=2, interp_fraction=0.5,
                             extrap_split=0.5, generator=gen, trim=False):
        contexts.append(item.context)
        torch.rand(7, generator=gen)  # e.g. validation's latent noise
    gen = torch.Generator().manual_seed(5)
    for k, start in enumerate(range(0, 5, 2)):
        batch = obs.index(torch.arange(start, min(start + 2, 5)))
        assert batch.times.shape[1] == 8
        want, _ = interpolation_task(batch, 0.5, generator=gen)
        torch.rand(7, generator=gen)
        torch.testing.assert_close(contexts[k].times, want.times, rtol=0, atol=0)
