"""Service settings, read from ``LATENT_ODE_*`` environment variables.

Settings come from the cached factory :func:`get_settings`, never from a module-level instance, so
tests build their own :class:`Settings` and pass it to :func:`service.app.create_app` (or clear the
cache with ``get_settings.cache_clear()``). MLflow reads ``MLFLOW_TRACKING_URI`` itself; set
``LATENT_ODE_TRACKING_URI`` only to override it for the service.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from latent_ode.device import DEVICE_CHOICES, DEVICE_PATTERN

__all__ = ["Settings", "get_settings"]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "latent-ode" / "service"


class Settings(BaseSettings):
    """Everything the service can be told from its environment (prefix ``LATENT_ODE_``)."""

    model_config = SettingsConfigDict(env_prefix="LATENT_ODE_", extra="ignore", frozen=True)

    # Model source.
    model_uri: str = Field(
        "models:/latent-ode@champion",
        description="Registered model to serve: models:/NAME@ALIAS or models:/NAME/VERSION.",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; unset means MLflow's own (MLFLOW_TRACKING_URI)."
    )
    registry_timeout_s: float = Field(
        5.0, gt=0, description="How long the reachability probe of an HTTP tracking server waits."
    )
    model_cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Downloaded model versions; the fallback when the registry is unreachable.",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")

    # Request limits.
    max_points_per_series: int = Field(10_000, ge=1, description="Most observation times per series.")
    max_series_per_request: int = Field(256, ge=1, description="Most series per request.")
    max_query_times_per_series: int = Field(
        10_000, ge=1, description="Most query times per series."
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body; larger ones get 413."
    )
    max_horizon_span_multiple: float = Field(
        10.0,
        ge=0,
        description="Query times may lie at most this many observed spans outside the window.",
    )
    max_horizon_abs: float = Field(
        0.0,
        ge=0,
        description="...or at most this far outside it (model time unit), whichever is larger.",
    )
    max_horizon_trained_spans: float = Field(
        1.0,
        ge=0,
        description="...or at most this many of the model's trained spans (its time scale) "
        "outside it: a series with one observation (span 0) can be forecast by default.",
    )

    max_encoder_steps: int = Field(
        20_000,
        ge=1,
        description="Most Euler steps the encoder may take to read one series: one per "
        "observation plus those through its gaps (twice LATENT_ODE_MAX_POINTS_PER_SERIES by "
        "default, so that the most points allowed can be read).",
    )
    max_abs_normalised_value: float = Field(
        1e6,
        gt=0,
        le=1e30,
        description="Observations more than this many of the model's per-channel scales from its "
        "location are refused (the model computes in float32; such values overflow it or mean "
        "nothing to it).",
    )

    # Work budget per request: the sizes above bound each part; these bound their products.
    max_request_work: int = Field(
        200_000,
        ge=1,
        description="Most query times x samples per request, summed over its series "
        "(sum of Q x num_samples): the decoder's and the quantiles' work.",
    )
    max_request_encoder_steps: int = Field(
        100_000,
        ge=1,
        description="Most encoder steps per request, summed over its series.",
    )
    max_answer_values: int = Field(
        2_000_000,
        ge=1,
        description="Most numbers in an answer: sum of Q x channels x (2 + quantile levels).",
    )

    # Micro-batching.
    batching_enabled: bool = Field(
        True, description="Micro-batch concurrent requests into one predict call."
    )
    batch_max_series: int = Field(64, ge=1, description="Most series in one predict call.")
    batch_max_wait_ms: float = Field(
        2.0, ge=0, description="How long the first request of a batch waits for company."
    )
    batch_chunk_work: int = Field(
        32_768,
        ge=1,
        description="Most work per piece: larger requests are split into pieces of at most this "
        "much (a few series, or a slice of one series' query times) that the fair queue "
        "interleaves with other requests, so a small request waits behind at most one piece of "
        "a large one. Work of a series: samples x (query times + 64) + encoder steps.",
    )
    batch_max_work: int = Field(
        262_144,
        ge=1,
        description="Most work in one predict call (the same units; one piece may exceed it).",
    )

    torch_threads: int = Field(
        1,
        ge=0,
        description="torch intra-op threads, set at start-up (0 = leave torch's default). One "
        "thread per process was fastest on 2 cores: the event loop needs the other.",
    )

    workers: int = Field(
        1, ge=1, description="Worker processes on the one port (`latent-ode serve`), each with "
        "its own model, batcher and inference thread: one per core. Admin reloads reach every "
        "worker; /metrics adds them up."
    )
    worker_dir: Path | None = Field(
        None, description="Set by the server for its workers (reload announcements); not for "
        "users."
    )
    worker_sync_timeout_s: float = Field(
        120.0, gt=0, description="How long an admin reload waits for the other workers to load "
        "the same version before it answers."
    )

    # Administration.
    admin_key: SecretStr | None = Field(
        None, description="API key for /v1/admin/*; unset disables those endpoints."
    )

    # Solver and sampling.
    solver_rtol: float | None = Field(
        None, gt=0, description="Relative tolerance of the ODE solver; unset: the served "
        "model's own (the one it was trained and evaluated at)."
    )
    solver_atol: float | None = Field(
        None, gt=0, description="Absolute tolerance of the ODE solver; unset: the served "
        "model's own."
    )
    solver_max_steps: int = Field(
        2_000, ge=1, description="Step budget per series and request, and the most steps a "
        "request's `solver.max_steps` may ask for."
    )
    solver_min_rtol: float = Field(
        1e-6, gt=0, lt=1, description="The tightest relative tolerance a request's `solver` may "
        "ask for (the model computes in float32: tighter buys nothing)."
    )
    solver_min_atol: float = Field(
        1e-7, gt=0, lt=1, description="The tightest absolute tolerance a request's `solver` may "
        "ask for."
    )
    max_request_solver_work: int = Field(
        131_072_000,
        ge=1,
        description="Most series x samples x solver max_steps per request: the steps the ODE "
        "solver may take for it at worst (default: 256 series x 256 samples x 2,000 steps, what "
        "the other limits allow at the default step limit).",
    )
    default_num_samples: int = Field(
        32, ge=1, description="Latent samples when a request names none."
    )
    max_num_samples: int = Field(256, ge=1, description="Most samples a request may ask for.")
    seed: int = Field(0, ge=0, description="Seed of the latent samples when a request gives none.")

    # Infrastructure (issue 16): retries, slow clients, shutdown, access.
    registry_retry_initial_s: float = Field(
        5.0, gt=0, description="After a start from the disk cache (or with no model), the first "
        "wait before retrying the registry; each failure doubles it."
    )
    registry_retry_max_s: float = Field(
        300.0, gt=0, description="Longest wait between two retries of the registry."
    )
    registry_check_interval_s: float = Field(
        5.0, ge=0, description="/readyz asks the registry at most this often whether it still "
        "answers (it reports `registry: unreachable` while the loaded model keeps serving)."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="A request's body must have arrived this long after the request "
        "began; else 408 (a body trickled byte by byte holds a connection and a task)."
    )
    max_connections: int | None = Field(
        None, ge=1, description="Most connections and requests at once (uvicorn's "
        "limit_concurrency; more get 503); unset: the open-file limit less 128."
    )
    backlog: int = Field(
        256, ge=1, description="Connections the kernel queues before the service accepts them."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long requests in flight may take to finish; "
        "those still running then get 503 (the service is stopping)."
    )
    api_key: SecretStr | None = Field(
        None, description="API key for every page but /livez, /readyz and /v1/admin/* (sent as "
        "`Authorization: Bearer <key>`); unset: no key (the local demo)."
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"LATENT_ODE_DEVICE must be {DEVICE_CHOICES}; got {value!r}.")
        return value

    @field_validator("admin_key", "api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @model_validator(mode="after")
    def _check_samples(self) -> Settings:
        if self.default_num_samples > self.max_num_samples:
            raise ValueError(
                f"LATENT_ODE_DEFAULT_NUM_SAMPLES ({self.default_num_samples}) must not exceed "
                f"LATENT_ODE_MAX_NUM_SAMPLES ({self.max_num_samples})."
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()

