"""Register: a new model version, and the ``champion`` alias only if it beats doing nothing and
the current champion.

Two checks, in order (unless forced):

1. the skill gate (``[register] require_skill``, on by default): the new version's validation
   skill in each regime, ``val/interp/skill`` (against linear interpolation) and
   ``val/forecast/skill`` (against LOCF), must be known and not negative;
2. the comparison: the configured metric (lower is better) must beat the champion's. A champion
   whose run does not carry that metric (registered before it was named so) is compared on the
   first of :data:`COMPARABLE` that both carry; with none in common the alias stays, so a renamed
   metric never promotes by default.

The decision (:func:`decide_promotion`) is a pure function; :func:`register` drives any object
with the :class:`Registry` methods (MLflow's registry in production, a fake in tests). A failure
after the version was created deletes it again, so a failed step leaves no half-registered model.

A process killed mid-step cannot clean up. So, given an ``identity`` (the train run, the config
hash, the data digest), every version carries it as tags set when it is created, and
``register`` first looks for a version with that identity: one whose registration completed
(tag ``latent_ode.registration = complete``, set after the alias decision) is reported as a
match and nothing new is registered; one left incomplete by a killed process is completed (metric
tag, alias decision) instead of registering another. With ``force``, a matching version takes
the alias instead of a new one being registered.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from latent_ode.errors import ConfigError
from pipelines.config import PipelineConfig

__all__ = ["COMPARABLE", "SKILL_METRICS", "Decision", "RegisterResult", "Registry",
           "decide_promotion", "register"]

logger = logging.getLogger(__name__)

SKILL_METRICS = ("val/interp/skill", "val/forecast/skill")
"""The validation skills the gate reads (``1 - model MSE / baseline MSE``, pooled over channels)."""
COMPARABLE = ("val/forecast/mse", "val/interp/mse", "val_loss")
"""Lower-is-better metrics to compare on, in order, when the champion lacks the configured one."""


class _Champion(Protocol):
    version: str
    metric: float | None
    metrics: dict[str, float]


class _Found(Protocol):
    version: str
    run_id: str
    tags: dict[str, str]


class Registry(Protocol):
    """What :func:`register` needs from a model registry (``find_version`` and the ``tags`` of
    ``log_and_register`` only when an identity is given)."""

    name: str
    alias: str

    def champion(self, metric: str) -> _Champion | None: ...
    def exists(self) -> bool: ...
    def find_version(self, identity: dict[str, str]) -> _Found | None: ...
    def log_and_register(self, forecaster_dir: Path, metrics: dict[str, float],
                         tags: dict[str, str] | None = None) -> str: ...
    def set_alias(self, version: str) -> None: ...
    def tag_version(self, version: str, key: str, value: str) -> None: ...
    def delete_version(self, version: str, *, drop_model: bool = False) -> None: ...


@dataclass(frozen=True)
class Decision:
    """Whether the new version takes the alias, and why (one readable sentence)."""

    promote: bool
    reason: str


@dataclass(frozen=True)
class RegisterResult:
    """The registered version and the promotion decision."""

    model_name: str
    version: str
    promoted: bool
    reason: str
    metric: str
    value: float
    matched: bool = False
    """An identical version (same identity) was registered before; nothing new was."""
    completed_run_id: str | None = None
    """The run of a half-registered version that this call completed (it was killed)."""


TAG_COMPLETE = "latent_ode.registration"
"""Set to ``complete`` on a version once its metric tag and the alias decision are recorded."""
TAG_PROMOTED = "promoted"
TAG_REASON = "promotion_reason"


def _skill_gate(metrics: dict[str, float], alias: str) -> str | None:
    """Why the gate refuses ``alias`` to a version with ``metrics``, or None when it passes."""
    for name in SKILL_METRICS:
        value = metrics.get(name)
        if value is None:
            return (f"{name} is missing, so nothing shows the model beats doing nothing (evaluate "
                    f"the validation split: `latent-ode evaluate`, then `register --evaluate-run`)"
                    f"; `{alias}` stays unchanged; use --force to promote anyway")
        if not (math.isfinite(value) and value >= 0.0):
            regime = name.split("/")[1]
            baseline = "linear interpolation" if regime == "interp" else "LOCF"
            return (f"{name} = {value:.4g} < 0: on the validation split the model is worse than "
                    f"{baseline}; `{alias}` stays unchanged; use --force to promote anyway")
    return None


def decide_promotion(
    *,
    metric: str,
    new_metrics: dict[str, float],
    champion_version: str | None,
    champion_metrics: dict[str, float] | None,
    force: bool,
    alias: str = "champion",
    require_skill: bool = True,
) -> Decision:
    """Decide whether a new version takes ``alias``: the skill gate, then ``metric`` (lower is
    better) against the champion's (see the module docstring).

    Args:
        metric: the configured comparison metric; ``new_metrics`` has it.
        new_metrics: the new version's metrics.
        champion_version: the current holder of the alias, or ``None``.
        champion_metrics: its run's metrics (``None`` or empty when it logged none).
        force: promote regardless of the gate and the comparison.
        alias: the alias name, for the reason.
        require_skill: apply the skill gate.
    """
    new_value = new_metrics[metric]
    if force:
        return Decision(True, f"forced (--force): takes `{alias}` regardless of {metric}"
                              + (" and of the validation skill" if require_skill else ""))
    if not math.isfinite(new_value):
        return Decision(False, f"{metric} = {new_value} is not finite; `{alias}` stays unchanged")
    if require_skill and (why := _skill_gate(new_metrics, alias)) is not None:
        return Decision(False, why)
    if champion_version is None:
        return Decision(True, f"no current `{alias}`; the new version takes it ({metric} = "
                              f"{new_value:.6g})")
    champ = {k: v for k, v in (champion_metrics or {}).items() if math.isfinite(v)}
    on, note = metric, ""
    if metric not in champ:
        common = [m for m in COMPARABLE if m in champ and m in new_metrics
                  and math.isfinite(new_metrics[m])]
        if not common:
            return Decision(False, f"current `{alias}` version {champion_version} has no finite "
                                   f"{metric} nor any of {list(COMPARABLE)} to compare on; "
                                   f"`{alias}` stays unchanged; use --force to promote anyway")
        on = common[0]
        note = f"; compared on {on}, since version {champion_version} has no {metric}"
    new, old = new_metrics[on], champ[on]
    if new < old:
        return Decision(True, f"{on} {new:.6g} < {old:.6g} of current `{alias}` version "
                              f"{champion_version} (lower is better{note})")
    return Decision(False, f"{on} {new:.6g} is not better than {old:.6g} of current `{alias}` "
                           f"version {champion_version} (lower is better{note}); use --force to "
                           "promote anyway")


def register(
    cfg: PipelineConfig,
    forecaster_dir: Path,
    metrics: dict[str, float],
    registry: Registry,
    *,
    force: bool = False,
    identity: dict[str, str] | None = None,
) -> RegisterResult:
    """Register the forecaster in ``forecaster_dir`` and move the alias if it is better.

    Args:
        cfg: the pipeline config (``[register]``: metric to compare, skill gate).
        forecaster_dir: the folder written by ``Forecaster.save``.
        metrics: the candidate's metrics (train and evaluate), containing ``cfg.register.metric``.
        registry: where to register.
        force: promote regardless of the skill gate and the comparison.
        identity: tags naming what the version holds (train run, config hash, data digest): set
            when the version is created, and used to find a version registered before (see the
            module docstring). ``None`` always registers a new version.

    Raises:
        ConfigError: ``metrics`` lacks the configured comparison metric (nothing is registered).
    """
    metric = cfg.registry.metric
    if metric not in metrics:
        raise ConfigError(
            f"`register.metric` is {metric!r}, which this run did not produce; choose one of "
            f"{sorted(metrics)}."
        )
    new_value = float(metrics[metric])
    found = registry.find_version(identity) if identity else None
    complete = found is not None and found.tags.get(TAG_COMPLETE) == "complete"
    if found is not None and complete and not force:
        promoted = found.tags.get(TAG_PROMOTED) == "true"
        reason = (f"identical to version {found.version} (same train run, config hash and data "
                  f"digest), registered before; nothing new registered. Its decision then: "
                  f"{found.tags.get(TAG_REASON, 'not recorded')}")
        logger.info("%s: %s", registry.name, reason)
        return RegisterResult(
            model_name=registry.name, version=found.version, promoted=promoted, reason=reason,
            metric=metric, value=new_value, matched=True,
        )
    champion = registry.champion(metric)
    existed = registry.exists()
    if found is not None:  # incomplete, or complete and --force: no new version
        version, created = found.version, False
        if not complete:
            logger.warning("%s version %s was left half-registered (its registration was "
                           "interrupted); completing it instead of registering another",
                           registry.name, version)
    elif identity:
        version, created = registry.log_and_register(forecaster_dir, metrics, tags=identity), True
    else:
        version, created = registry.log_and_register(forecaster_dir, metrics), True
    try:
        if champion is not None and champion.version == version and not complete:
            # Killed after the alias moved, before the registration was marked complete.
            decision = Decision(True, f"took `{registry.alias}` before its registration was "
                                      "interrupted; keeps it")
        else:
            decision = decide_promotion(
                metric=metric, new_metrics={k: float(v) for k, v in metrics.items()},
                champion_version=champion.version if champion else None,
                champion_metrics=champion.metrics if champion else None,
                force=force, alias=registry.alias, require_skill=cfg.registry.require_skill,
            )
        registry.tag_version(version, metric, repr(new_value))
        if decision.promote:
            registry.set_alias(version)
        if identity:
            registry.tag_version(version, TAG_PROMOTED, str(decision.promote).lower())
            registry.tag_version(version, TAG_REASON, decision.reason)
            registry.tag_version(version, TAG_COMPLETE, "complete")
    except BaseException:
        if created:
            registry.delete_version(version, drop_model=not existed)
        raise
    verb = "PROMOTED to" if decision.promote else "registered, NOT promoted to"
    logger.info("%s version %s %s `%s`: %s", registry.name, version, verb, registry.alias,
                decision.reason)
    return RegisterResult(
        model_name=registry.name, version=version, promoted=decision.promote,
        reason=decision.reason, metric=metric, value=new_value,
        completed_run_id=found.run_id if found is not None and not complete else None,
    )
