"""Registry resolution, download, on-disk cache and hot swap of the served model.

Loading follows docs/contracts.md: resolve ``models:/NAME@ALIAS`` with
``MlflowClient().get_model_version_by_alias`` (to know the version), download
``models:/NAME/VERSION`` into the cache directory, then
``Forecaster.load(formats.model_artifact.forecaster_path(download))``.

Cache layout (``LATENT_ODE_MODEL_CACHE_DIR``)::

    <name>/versions/<store-key>/<version>/model/      one downloaded pyfunc model directory
    <name>/versions/<store-key>/<version>/.complete   written last: the download is whole
    <name>/resolved/<store-key>/<ref>.json             what <ref> resolved to in that store

``<store-key>`` is ``store-`` and 12 hex digits of the SHA-256 of the tracking URI without its
credentials, so that two tracking stores' "version 1" never share an entry (and a changed password
keeps the cache). ``<ref>`` is ``alias-<ALIAS>`` or ``version-<VERSION>``: the configured model URI.

A registry version's artifacts never change, so a version already in the cache is not
downloaded again. When the registry cannot be reached at start-up, the store loads what the
configured store and model URI resolved to before (same store, name, alias or version), marks the
model's source as ``"cache"``, and the app retries the registry with backoff until it answers. A
registry that answers that it has no such model is believed: nothing is served from the cache then.

While a model is served, :class:`RegistryHealth` asks the registry (at most once per
``LATENT_ODE_REGISTRY_CHECK_INTERVAL_S``) what the configured URI names, so that ``/readyz`` can say
when the registry has become unusable (a tracking server down, or up with its database down)
while the loaded model keeps answering.
Every message that may name the tracking URI goes through :func:`service.redaction.redact`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio

from formats.model_artifact import forecaster_path
from latent_ode import Forecaster
from latent_ode.device import resolve_device
from service.config import Settings
from service.errors import (
    ModelNotReadyError,
    ModelVersionNotFoundError,
    RegistryUnavailableError,
)
from service.redaction import redact, split_credentials

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "LoadedModel", "ModelRef", "ModelStore", "RegistryHealth", "parse_model_uri", "probe_request",
]

logger = logging.getLogger(__name__)

_URI_PATTERN = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_COMPLETE_MARKER = ".complete"
#: Longest wait of /readyz's registry question: under the 4-5 s health-check timeouts of
#: compose and orchestrators, so a hanging registry never makes a serving replica "unhealthy".
_CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/`` URI: a name and either an alias or a version."""

    name: str
    alias: str | None
    version: str | None


def parse_model_uri(uri: str) -> ModelRef:
    """Split ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        ValueError: any other form.
    """
    match = _URI_PATTERN.match(uri)
    if match is None:
        raise ValueError(
            f"LATENT_ODE_MODEL_URI must be models:/NAME@ALIAS or models:/NAME/VERSION; got {uri!r}."
        )
    return ModelRef(name=match["name"], alias=match["alias"], version=match["version"])


@dataclass(frozen=True)
class LoadedModel:
    """A forecaster ready to serve, with where it came from."""

    forecaster: Forecaster
    name: str
    version: str
    uri: str
    source: Literal["registry", "cache"]
    path: Path
    device: str


class ModelStore:
    """Holds the served model and replaces it atomically.

    Requests read :attr:`current` once and keep that object for their whole life, so a swap never
    changes the model under a request in flight.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ref = parse_model_uri(settings.model_uri)
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    # ----------------------------------------------------------------------------------- access

    @property
    def current(self) -> LoadedModel | None:
        """The model being served, or None."""
        return self._current

    def require(self) -> LoadedModel:
        """The model being served.

        Raises:
            ModelNotReadyError: none is loaded; the detail says why.
        """
        model = self._current
        if model is None:
            why = f": {self.last_error}" if self.last_error else ""
            raise ModelNotReadyError(
                f"no model is loaded{why}. Start the MLflow tracking server or fix "
                "LATENT_ODE_MODEL_URI, then POST /v1/admin/reload or restart the service."
            )
        return model

    # ---------------------------------------------------------------------------------- loading

    def load_at_startup(self) -> LoadedModel | None:
        """Load the configured model from the registry, else from the disk cache; never raises.

        Returns:
            The model now served, or None (then ``last_error`` says why).
        """
        try:
            model = self._load_from_registry(None)
        except ModelVersionNotFoundError as exc:
            # The registry answered: whatever the cache holds is not what it names now.
            self.last_error = redact(str(exc))
            logger.error("no model loaded: %s", self.last_error)
            return None
        except Exception as exc:  # noqa: BLE001 - every other failure falls back to the cache
            registry_error = redact(str(exc))
            logger.warning(
                "could not load %s from the registry: %s", self._settings.model_uri, registry_error
            )
            try:
                model = self._load_from_cache()
            except Exception as cache_exc:  # noqa: BLE001 - logged; /readyz reports it
                self.last_error = redact(
                    f"the registry failed ({registry_error}) and the disk cache has no usable "
                    f"model ({cache_exc})"
                )
                logger.error("no model loaded: %s", self.last_error)
                return None
            logger.warning(
                "serving %s version %s from the disk cache %s because the registry failed",
                model.name, model.version, model.path,
            )
        self._current = model
        self.last_error = None
        return model

    def reload(self, version: str | None = None) -> tuple[LoadedModel, LoadedModel | None]:
        """Load the configured alias (or ``version``) from the registry and swap it in.

        Returns:
            (the new model, the one it replaced).

        Raises:
            RegistryUnavailableError: the registry or the download failed; nothing changes.
            ModelVersionNotFoundError: no such version or alias.
        """
        with self._lock:
            try:
                model = self._load_from_registry(version)
            except Exception as exc:
                if self._current is None:  # /readyz says why, with the latest reason
                    self.last_error = redact(str(exc))
                raise
            previous = self._current
            self._current = model
            self.last_error = None
        logger.info(
            "now serving %s version %s (was %s)",
            model.name, model.version, previous.version if previous else "none",
        )
        return model, previous

    def _tracking_uri(self) -> str:
        import mlflow

        return self._settings.tracking_uri or mlflow.get_tracking_uri()

    def _probe(self, tracking_uri: str) -> None:
        """Fail fast when an HTTP tracking server is down (MLflow itself retries for minutes).

        Credentials in the URI (``https://user:password@host``) go into a Basic ``Authorization``
        header, as MLflow's own client sends them; urllib would take them for part of the host.
        """
        if not tracking_uri.startswith(("http://", "https://")):
            return
        shown = redact(tracking_uri)
        request = probe_request(tracking_uri)
        try:
            with urllib.request.urlopen(request, timeout=self._settings.registry_timeout_s) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryUnavailableError(
                redact(f"the MLflow tracking server {shown} is unreachable ({exc})")
            ) from exc
        if status != 200:
            raise RegistryUnavailableError(
                f"the MLflow tracking server {shown} answered {status} at /health"
            )

    def check_registry(self) -> str | None:
        """Ask the registry what the configured model URI names now (never raises).

        Returns:
            None when the registry answers, also when its answer is that it has no such model
            (it is reachable; a reload would say what is wrong); else why it cannot be used: the
            tracking server is unreachable, or it answers with an error (e.g. 503 when its
            database is down, which its ``/health`` does not show).
        """
        tracking_uri = self._tracking_uri()
        shown = redact(tracking_uri)
        try:
            if tracking_uri.startswith(("http://", "https://")):
                timeout = min(self._settings.registry_timeout_s, _CHECK_TIMEOUT_S)
                return self._ask_http_registry(tracking_uri, shown, timeout=timeout)
            self._probe(tracking_uri)
            self._ask_registry_client(tracking_uri)
        except RegistryUnavailableError as exc:
            return redact(str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return redact(f"the MLflow registry {shown} failed: {exc}")
        return None

    def _registry_question(self) -> tuple[str, dict[str, str]]:
        """The REST path and query that resolve the configured model URI."""
        ref = self._ref
        if ref.alias is not None:
            return "/api/2.0/mlflow/registered-models/alias", {"name": ref.name, "alias": ref.alias}
        return "/api/2.0/mlflow/model-versions/get", {"name": ref.name, "version": str(ref.version)}

    def _ask_http_registry(
        self, tracking_uri: str, shown: str, *, timeout: float | None = None
    ) -> str | None:
        """One REST call, no retries (MLflow's client retries a 503 for minutes)."""
        path, query = self._registry_question()
        request = probe_request(tracking_uri, f"{path}?{urllib.parse.urlencode(query)}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._settings.registry_timeout_s):
                return None
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
                why = f"{body.get('error_code', '')}: {body.get('message', '')}".strip(": ")
            except (ValueError, OSError, AttributeError):
                why = str(exc.reason)
            # The registry answered that it has no such model (404) or alias (400 "not found").
            if exc.code == 404 or (exc.code == 400 and "not found" in why.lower()):
                return None
            return redact(f"the MLflow registry {shown} answered {exc.code} ({why[:300]})")
        except (urllib.error.URLError, OSError) as exc:
            return redact(f"the MLflow tracking server {shown} is unreachable ({exc})")

    def _ask_registry_client(self, tracking_uri: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self._settings.tracking_uri)
        ref = self._ref
        try:
            if ref.alias is not None:
                client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                client.get_model_version(ref.name, str(ref.version))
        except MlflowException as exc:
            # A missing alias is INVALID_PARAMETER_VALUE "... not found" (as _load_from_registry)
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and "not found" not in str(exc).lower():
                raise

    def _load_from_registry(self, version: str | None) -> LoadedModel:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        tracking_uri = self._tracking_uri()
        self._probe(tracking_uri)
        if tracking_uri.startswith(("http://", "https://")):
            # A server up with its database down passes /health but answers 503 to every
            # registry call, which MLflow's client would retry for minutes: fail fast instead.
            why = self._ask_http_registry(tracking_uri, redact(tracking_uri))
            if why is not None:
                raise RegistryUnavailableError(why)
        registry_uri = self._settings.tracking_uri
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        name = self._ref.name
        try:
            if version is not None:
                resolved = client.get_model_version(name, version).version
            elif self._ref.alias is not None:
                resolved = client.get_model_version_by_alias(name, self._ref.alias).version
            else:
                resolved = client.get_model_version(name, str(self._ref.version)).version
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
                what = f"version {version}" if version else self._settings.model_uri
                raise ModelVersionNotFoundError(
                    f"the registry has no {what} of model {name!r}; register it or pick an "
                    "existing version"
                ) from exc
            raise RegistryUnavailableError(redact(f"the MLflow registry failed: {exc}")) from exc
        resolved = str(resolved)
        path = self._download(client, name, resolved, tracking_uri)
        model = self._load_forecaster(name, resolved, path, source="registry")
        if version is None:  # what the configured URI resolves to (an admin's pick is not)
            self._write_pointer(resolved)
        return model

    def _download(self, client: MlflowClient, name: str, version: str, tracking_uri: str) -> Path:
        """Download a version's model directory into the cache (once) and return its path.

        ``download_artifacts("models:/...")`` would resolve the name with MLflow's global registry
        URI, ignoring the one configured here, so the version's storage location is resolved
        with our client first.
        """
        import mlflow.artifacts

        final = self._version_dir(name, version)
        if (final / _COMPLETE_MARKER).exists():
            logger.info("model %s version %s is already in the cache at %s", name, version, final)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=final.parent))
        started = time.monotonic()
        try:
            source = client.get_model_version_download_uri(name, version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(tmp / "download"), tracking_uri=tracking_uri
                )
            )
            # The model directory (MLmodel, artifacts/forecaster/) lies wherever MLflow put it.
            model_root = local if (local / "MLmodel").exists() else next(local.rglob("MLmodel")).parent
            model_root.rename(tmp / "model")
            shutil.rmtree(tmp / "download", ignore_errors=True)
            (tmp / _COMPLETE_MARKER).write_text(version)
            self._publish(tmp, final)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryUnavailableError(
                redact(f"downloading models:/{name}/{version} failed: {exc}")
            ) from exc
        logger.info(
            "downloaded %s version %s to %s in %.1f s", name, version, final,
            time.monotonic() - started,
        )
        return final

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        """Move a finished download into place; another replica sharing the cache may have
        published the same version meanwhile, and then its copy wins (never delete a complete
        copy someone may be loading)."""
        if not (final / _COMPLETE_MARKER).exists() and final.exists():
            shutil.rmtree(final)  # an incomplete leftover of an interrupted download
        try:
            tmp.rename(final)
        except OSError:
            if not (final / _COMPLETE_MARKER).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_forecaster(
        self, name: str, version: str, path: Path, *, source: Literal["registry", "cache"]
    ) -> LoadedModel:
        device = str(resolve_device(self._settings.device))
        forecaster = Forecaster.load(forecaster_path(path / "model"), device=device)
        return LoadedModel(
            forecaster=forecaster,
            name=name,
            version=version,
            uri=self._settings.model_uri,
            source=source,
            path=path,
            device=device,
        )

    def _load_from_cache(self) -> LoadedModel:
        """What the configured store and model URI resolved to before, and nothing else: a
        cached model of another store, or of another alias or version, is never served.

        Raises:
            FileNotFoundError: the cache holds no such model, or only part of its download.
        """
        name = self._ref.name
        shown = redact(self._tracking_uri())
        if self._ref.version is not None:
            version = self._ref.version
        else:
            pointer = self._pointer_path()
            if not pointer.exists():
                raise FileNotFoundError(
                    f"{shown} never resolved {self._settings.model_uri} for this cache "
                    f"({self._settings.model_cache_dir}); a cached model of another store, "
                    "alias or version is not served"
                )
            version = str(json.loads(pointer.read_text())["version"])
        path = self._version_dir(name, version)
        if not (path / _COMPLETE_MARKER).exists():
            raise FileNotFoundError(
                f"version {version} of {name!r} from {shown} is not in the cache or its download "
                f"is incomplete ({path})"
            )
        return self._load_forecaster(name, version, path, source="cache")

    # ------------------------------------------------------------------------------- cache paths

    def _store_key(self) -> str:
        """A short key of the tracking store, so that two stores' "version 1" never share a cache
        entry (a relative SQLite path is made absolute: it names a different store per cwd;
        credentials are left out: a new password does not make a new store)."""
        uri, _ = split_credentials(self._tracking_uri())
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            uri = prefix + str(Path(uri[len(prefix):]).resolve())
        return "store-" + hashlib.sha256(uri.encode()).hexdigest()[:12]

    def _name_dir(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return Path(self._settings.model_cache_dir) / safe

    def _version_dir(self, name: str, version: str) -> Path:
        return self._name_dir(name) / "versions" / self._store_key() / version

    def _pointer_path(self) -> Path:
        ref = self._ref
        key = f"alias-{ref.alias}" if ref.alias is not None else f"version-{ref.version}"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        return self._name_dir(ref.name) / "resolved" / self._store_key() / f"{safe}.json"

    def _write_pointer(self, version: str) -> None:
        pointer = self._pointer_path()
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"version": version, "uri": self._settings.model_uri}))
        tmp.replace(pointer)


class RegistryHealth:
    """The registry's last answer to :meth:`ModelStore.check_registry`, asked again (in a worker
    thread, one question at a time) when older than ``interval_s``, so a balancer or orchestrator
    probing ``/readyz`` often costs the registry one request per interval."""

    def __init__(self, store: ModelStore, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._error: str | None = None

    async def error(self) -> str | None:
        """None when the registry answers, else why it cannot be used (see check_registry)."""
        return await anyio.to_thread.run_sync(self._error_now)

    def _error_now(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._checked is None or now - self._checked >= self._interval_s:
                self._error = self._store.check_registry()
                self._checked = time.monotonic()
            return self._error


def probe_request(tracking_uri: str, path: str = "/health") -> urllib.request.Request:
    """A ``GET`` of ``path`` (default ``/health``) on an HTTP tracking server, credentials as a
    header."""
    bare, credentials = split_credentials(tracking_uri)
    request = urllib.request.Request(bare.rstrip("/") + path)
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request
