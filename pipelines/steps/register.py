"""Register: a new model version, and the ``champion`` alias only if it is better.

The decision (:func:`decide_promotion`) is a pure function; :func:`register` drives any object
with the :class:`Registry` methods (MLflow's registry in production, a fake in tests). A failure
after the version was created deletes it again, so a failed step leaves no half-registered model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from latent_ode.errors import ConfigError
from pipelines.config import PipelineConfig

__all__ = ["Decision", "RegisterResult", "Registry", "decide_promotion", "register"]

logger = logging.getLogger(__name__)


class _Champion(Protocol):
    version: str
    metric: float | None


class Registry(Protocol):
    """What :func:`register` needs from a model registry."""

    name: str
    alias: str

    def champion(self, metric: str) -> _Champion | None: ...
    def exists(self) -> bool: ...
    def log_and_register(self, forecaster_dir: Path, metrics: dict[str, float]) -> str: ...
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


def decide_promotion(
    *,
    metric: str,
    new_value: float,
    champion_version: str | None,
    champion_value: float | None,
    force: bool,
    alias: str = "champion",
) -> Decision:
    """Decide whether a new version with ``new_value`` of ``metric`` (lower is better) takes ``alias``.

    Args:
        metric: the metric name, for the reason.
        new_value: the new version's value.
        champion_version: the current holder of the alias, or ``None``.
        champion_value: its value of ``metric``, or ``None`` when its run did not log it.
        force: promote regardless of the comparison.
        alias: the alias name, for the reason.
    """
    if force:
        return Decision(True, f"forced (--force): takes `{alias}` regardless of {metric}")
    if not math.isfinite(new_value):
        return Decision(False, f"{metric} = {new_value} is not finite; `{alias}` stays unchanged")
    if champion_version is None:
        return Decision(True, f"no current `{alias}`; the new version takes it ({metric} = "
                              f"{new_value:.6g})")
    if champion_value is None or not math.isfinite(champion_value):
        return Decision(True, f"current `{alias}` (version {champion_version}) has no finite "
                              f"{metric}; the new version ({metric} = {new_value:.6g}) takes it")
    if new_value < champion_value:
        return Decision(True, f"{metric} {new_value:.6g} < {champion_value:.6g} of current "
                              f"`{alias}` version {champion_version} (lower is better)")
    return Decision(False, f"{metric} {new_value:.6g} is not better than {champion_value:.6g} of "
                           f"current `{alias}` version {champion_version} (lower is better); "
                           "use --force to promote anyway")


def register(
    cfg: PipelineConfig,
    forecaster_dir: Path,
    metrics: dict[str, float],
    registry: Registry,
    *,
    force: bool = False,
) -> RegisterResult:
    """Register the forecaster in ``forecaster_dir`` and move the alias if it is better.

    Args:
        cfg: the pipeline config (``[register]``: metric to compare).
        forecaster_dir: the folder written by ``Forecaster.save``.
        metrics: the candidate's metrics (train and evaluate), containing ``cfg.register.metric``.
        registry: where to register.
        force: promote regardless of the comparison.

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
    champion = registry.champion(metric)
    existed = registry.exists()
    version = registry.log_and_register(forecaster_dir, metrics)
    try:
        decision = decide_promotion(
            metric=metric, new_value=new_value,
            champion_version=champion.version if champion else None,
            champion_value=champion.metric if champion else None,
            force=force, alias=registry.alias,
        )
        registry.tag_version(version, metric, repr(new_value))
        if decision.promote:
            registry.set_alias(version)
    except BaseException:
        registry.delete_version(version, drop_model=not existed)
        raise
    verb = "PROMOTED to" if decision.promote else "registered, NOT promoted to"
    logger.info("%s version %s %s `%s`: %s", registry.name, version, verb, registry.alias,
                decision.reason)
    return RegisterResult(
        model_name=registry.name, version=version, promoted=decision.promote,
        reason=decision.reason, metric=metric, value=new_value,
    )
