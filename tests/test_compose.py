"""Structure of the multi-machine deployment: docker-compose.yml, its GPU override, the Dockerfiles.

Our machines have no Docker engine, so nothing here starts a container. Instead every test pins
one thing the stack needs to come up and talk to itself: the services and their health checks,
the wiring between them (tracking URI, MLflow's Host-header allow-list, start-up order), the
secrets (only ever ``${...}`` references to ``.env``, all listed in ``.env.example``), and that
the commands the containers run exist, both ``latent-ode ...`` (walked through the real argparse
parser) and ``mlflow server ...`` (parsed by MLflow's own click command). The same topology runs
natively, with real processes, in the end-to-end test, tests/test_stack_postgres.py and
tests/test_replicas.py. Nothing here interprets a file by hand: YAML by PyYAML, ``.env`` and
compose's ``${...}`` by python-dotenv, the Dockerfiles by Docker's own (BuildKit) parser through
the ``dockerfile`` package, the balancer's nginx file by NGINX's ``crossplane``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values
from dotenv.variables import parse_variables
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU_FILE = REPO / "docker-compose.gpu.yml"
MULTINODE_FILE = REPO / "docker-compose.multinode.yml"
DOCKERFILE = REPO / "Dockerfile"
MLFLOW_DOCKERFILE = REPO / "docker" / "mlflow" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"

EXPECTED_SERVICES = {"postgres", "minio", "minio-init", "mlflow", "api", "balancer", "trainer"}
LONG_RUNNING_SERVICES = ("postgres", "minio", "mlflow", "api", "balancer")
NGINX_CONF = REPO / "docker" / "nginx" / "api.conf"
# Container-side directory of the project image (the Dockerfile's WORKDIR): relative paths in
# its commands resolve against the repository root copied there.
IMAGE_WORKDIR = "/app"

# Environment keys whose values are credentials: never literal in a compose file.
CREDENTIAL_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|ROOT_USER")
# ...and of those, the ones with no sensible default, so a missing value must stop compose.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?msg}, ${VAR?msg},
# ${VAR:+alt}. "$${" is an escaped dollar, left for the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])[^}]*)?\}")
REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")
WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}$")
URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^/@\s]+)@")


# --------------------------------------------------------------------------------------------
# Reading the files


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path.name} must be a YAML mapping; got {type(data).__name__}"
    return data


def interpolated(path: Path) -> dict[str, Any]:
    """A compose file as compose reads it with ``.env.example`` as its ``.env``.

    python-dotenv expands ``${VAR}`` and ``${VAR:-default}`` (compose's rules for a set
    variable); compose's ``${VAR:?message}`` is ``${VAR}`` once the variable is set, and ``$$``
    is a literal ``$`` left for the container's shell.
    """
    text = REQUIRED.sub(r"${\1}", path.read_text()).replace("$${", "\0{")
    env = env_example()
    text = "".join(atom.resolve(env) for atom in parse_variables(text))
    data = yaml.safe_load(text.replace("\0", "$"))
    assert isinstance(data, dict), f"{path.name} must be a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it after reading ``.env`` (here: .env.example)."""
    return interpolated(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def gpu_services() -> dict[str, dict[str, Any]]:
    return interpolated(GPU_FILE)["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, whichever of compose's two spellings it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv_of(value: str | list[str] | None) -> list[str]:
    """A ``command``/``entrypoint`` as an argv list (compose splits strings like a shell)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option_value(argv: list[str], option: str) -> str:
    """The value after ``option`` (``--opt VALUE`` or ``--opt=VALUE``) in ``argv``."""
    for i, token in enumerate(argv):
        if token == option:
            assert i + 1 < len(argv), f"{option} is the last token of {argv}; it needs a value"
            return argv[i + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    raise AssertionError(f"{option} is missing from {shlex.join(argv)}")


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs as Docker's own parser (BuildKit's, through the
    ``dockerfile`` package) reads the file; an exec-form (JSON) argument list comes back as JSON,
    the shell form as its text."""
    import dockerfile

    return [
        (command.cmd.upper(),
         json.dumps(list(command.value)) if command.json else " ".join(command.value))
        for command in dockerfile.parse_file(str(path))
    ]


def exec_form(arguments: str) -> list[str]:
    """A Dockerfile ``CMD``/``ENTRYPOINT`` argument; the exec (JSON) form keeps signals working."""
    try:
        argv = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"expected the exec form (a JSON list), got the shell form: {arguments}")
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), arguments
    return argv


def python_minor_of_base_image(path: Path) -> str:
    froms = [args for kw, args in dockerfile_instructions(path) if kw == "FROM"]
    assert froms, f"{path} has no FROM"
    match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?(?:-\S+)?(?:\s+AS\s+\S+)?", froms[-1], re.I)
    assert match, f"{path}: final stage must be an official python:X.Y image; got FROM {froms[-1]}"
    return match.group(1)


def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE, interpolate=False)
    assert all(v is not None for v in values.values()), f".env.example has keys without =: {values}"
    return {k: str(v) for k, v in values.items()}


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from walk_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_strings(v)


def latent_ode_commands(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Every ``latent-ode ...`` argv the image or a compose service runs, by where it is."""
    found: dict[str, list[str]] = {}
    for kw, args in dockerfile_instructions(DOCKERFILE):
        if kw in ("CMD", "ENTRYPOINT"):
            argv = exec_form(args)
            if argv and argv[0] == "latent-ode":
                found[f"Dockerfile {kw}"] = argv
    for name, service in services.items():
        for key in ("entrypoint", "command"):
            argv = argv_of(service.get(key))
            if argv and argv[0] == "latent-ode":
                found[f"service {name} {key}"] = argv
    return found


# --------------------------------------------------------------------------------------------
# Checking a command line against an argparse parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def cli_problems(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """What is wrong with running ``argv`` (``["latent-ode", ...]``) through ``parser``.

    argparse parses the line itself (unknown subcommands and options, missing arguments, bad
    values). An option must also be spelt out in full: argparse accepts an abbreviation, whose
    meaning a later option with the same prefix would silently change.
    """
    known = {name for p in _parsers(parser) for name in p._option_string_actions}
    problems = [f"`{shlex.join(argv)}` has no option {token.split('=', 1)[0]} (spell it out)"
                for token in argv[1:]
                if token.startswith("--") and token.split("=", 1)[0] not in known]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(argv[1:])
    except SystemExit as exc:
        if exc.code not in (0, None):
            problems.append(f"argparse rejects `{shlex.join(argv)}`: {stderr.getvalue().strip()}")
    return problems


def _toy_cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latent-ode")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    pipeline = commands.add_parser("pipeline").add_subparsers(dest="action", required=True)
    pipeline.add_parser("run").add_argument("--config", required=True)
    return parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["latent-ode", "pipeline", "run", "--config", "a.toml"], None),
        (["latent-ode", "serve", "--host", "0.0.0.0", "--port=8000"], None),
        (["latent-ode", "pipeline", "start", "--config", "a.toml"], "invalid choice: 'start'"),
        (["latent-ode", "serve", "--workers", "2"], "has no option --workers"),
        (["latent-ode", "serve", "--hos", "0.0.0.0"], "has no option --hos"),
        (["latent-ode", "pipeline"], "the following arguments are required: action"),
        (["latent-ode", "pipeline", "run"], "the following arguments are required: --config"),
        (["latent-ode", "serve", "--port", "eighty"], "invalid int value"),
    ],
)
def test_cli_checker_names_what_is_wrong(argv: list[str], expected: str | None) -> None:
    # The check below is only worth something if it can fail: prove it on a parser we control.
    problems = cli_problems(_toy_cli(), argv)
    if expected is None:
        assert problems == [], problems
    else:
        assert any(expected in p for p in problems), f"expected {expected!r} in {problems}"


# --------------------------------------------------------------------------------------------
# Services and their wiring


def test_every_service_of_the_topology_exists(services: dict[str, dict[str, Any]]) -> None:
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"docker-compose.yml lacks the services {sorted(missing)}"


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("postgres", "pg_isready"),
        ("minio", "ready"),
        ("mlflow", "/health"),
        ("api", "/readyz"),
        ("balancer", "/readyz"),
    ],
)
def test_long_running_services_have_health_checks(
    services: dict[str, dict[str, Any]], name: str, probe: str
) -> None:
    check = services[name].get("healthcheck")
    assert check and not check.get("disable"), f"{name} needs a healthcheck (others wait on it)"
    text = healthcheck_text(services[name])
    assert text.split()[0] in ("CMD", "CMD-SHELL"), f"{name} healthcheck test: {text!r}"
    assert probe in text, f"{name} healthcheck should probe {probe!r}; it runs {text!r}"
    # The slim Python images have neither curl nor wget.
    if name in ("mlflow", "api"):
        assert "curl" not in text and "wget" not in text, f"{name}: no curl/wget in the image"


def test_health_probes_use_the_ports_the_servers_listen_on(
    services: dict[str, dict[str, Any]],
) -> None:
    mlflow_port = option_value(argv_of(services["mlflow"]["command"]), "--port")
    assert f":{mlflow_port}/health" in healthcheck_text(services["mlflow"])
    serve = latent_ode_commands(services)["Dockerfile CMD"]
    assert f":{option_value(serve, '--port')}/readyz" in healthcheck_text(services["api"])


def test_start_order_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        ("minio-init", "minio"): "service_healthy",
        ("mlflow", "postgres"): "service_healthy",
        ("mlflow", "minio-init"): "service_completed_successfully",
        ("api", "mlflow"): "service_healthy",
        ("trainer", "mlflow"): "service_healthy",
    }
    for (service, dependency), condition in expected.items():
        depends = services[service].get("depends_on") or {}
        assert isinstance(depends, dict) and dependency in depends, (
            f"{service} must depend on {dependency} with a condition (long form of depends_on)"
        )
        got = depends[dependency].get("condition")
        assert got == condition, f"{service} -> {dependency}: condition {got!r}, want {condition!r}"
    # Waiting on service_healthy for a service without a health check never ends.
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                assert services[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )


def test_mlflow_server_command_is_accepted_by_mlflow(services: dict[str, dict[str, Any]]) -> None:
    from mlflow.cli import cli

    argv = argv_of(services["mlflow"]["command"])
    assert argv[:2] == ["mlflow", "server"], f"mlflow service runs {argv[:2]}, not mlflow server"
    # make_context parses exactly as `mlflow server` would (unknown options raise) without
    # starting anything; the ${...} placeholders are just strings to it.
    ctx = cli.commands["server"].make_context("server", argv[2:])
    params = ctx.params
    assert params["serve_artifacts"] is True, "--serve-artifacts: clients must not need S3 keys"
    assert params["host"] == "0.0.0.0", "bind all interfaces, or other containers cannot connect"
    backend = urlsplit(params["backend_store_uri"])
    # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, and the image
    # installs psycopg2 (test_mlflow_image_pins_the_projects_mlflow).
    assert backend.scheme == "postgresql+psycopg2", f"backend store: {backend.scheme}"
    assert backend.hostname == "postgres", f"backend store host {backend.hostname!r}"
    destination = params["artifacts_destination"] or ""
    assert destination.startswith("s3://"), f"--artifacts-destination {destination!r}"
    # The bucket mlflow writes to is the one minio-init creates.
    bucket = env_of(services["minio-init"])["BUCKET"]
    assert destination == f"s3://{bucket}", f"{destination} is not the bucket minio-init makes"
    env = env_of(services["mlflow"])
    endpoint = urlsplit(env.get("MLFLOW_S3_ENDPOINT_URL", ""))
    assert endpoint.hostname == "minio" and endpoint.port == 9000, f"S3 endpoint {endpoint}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env.keys()


@pytest.mark.parametrize("client", ["api", "trainer"])
def test_clients_reach_the_mlflow_service(services: dict[str, dict[str, Any]], client: str) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    uri = env_of(services[client]).get("MLFLOW_TRACKING_URI", "")
    parts = urlsplit(uri)
    assert parts.scheme == "http" and parts.hostname == "mlflow", (
        f"{client}: MLFLOW_TRACKING_URI={uri!r} should be http://mlflow:PORT (the mlflow service)"
    )
    argv = argv_of(services["mlflow"]["command"])
    assert parts.port == int(option_value(argv, "--port")), f"{client} uses port {parts.port}"
    # The Host header a client of this URI sends must pass MLflow's DNS-rebinding guard, or
    # every request but /health is refused with 403.
    allowed = [h.strip() for h in option_value(argv, "--allowed-hosts").split(",")]
    assert is_allowed_host_header(allowed, parts.netloc), (
        f"--allowed-hosts {allowed} rejects Host {parts.netloc!r} sent by {client}"
    )


def test_mlflow_accepts_its_published_port_on_the_host(services: dict[str, dict[str, Any]]) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = option_value(argv_of(services["mlflow"]["command"]), "--allowed-hosts").split(",")
    for host in ("localhost:5000", "127.0.0.1:5000", "localhost:5555"):
        assert is_allowed_host_header(allowed, host), f"{allowed} rejects a browser on {host}"


def test_api_serves_the_champion_and_restarts(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    env = env_of(api)
    assert env.get("LATENT_ODE_MODEL_URI") == "models:/latent-ode@champion"
    assert api.get("restart") == "unless-stopped"
    # Replicas cannot share a host port: only the balancer publishes one.
    assert not api.get("ports"), f"api replicas publish no port; the balancer does: {api['ports']}"


def nginx_directives(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """``(directive, arguments, enclosing blocks)`` of an nginx config file, as crossplane
    (NGINX's own Python parser) reads it; a file of ``conf.d`` holds http-level blocks only, so
    contexts are not checked here (``nginx -t`` checks the whole config in tests/test_replicas.py).
    """
    import crossplane

    payload = crossplane.parse(str(path), check_ctx=False, single=True, comments=False)
    errors = [e["error"] for e in payload["errors"]]
    assert payload["status"] == "ok", f"{path}: {errors}"
    found: list[tuple[str, list[str], list[str]]] = []

    def walk(directives: list[dict[str, Any]], blocks: list[str]) -> None:
        for d in directives:
            found.append((d["directive"], d["args"], blocks))
            if "block" in d:
                walk(d["block"], [*blocks, " ".join([d["directive"], *d["args"]])])

    walk(payload["config"][0]["parsed"], [])
    return found


def test_nginx_directive_reader_sees_blocks(tmp_path: Path) -> None:
    conf = tmp_path / "api.conf"
    conf.write_text("upstream api { server a:1; # x;\n}\nserver { listen 80; }")
    assert [d for d in nginx_directives(conf) if d[0] in ("server", "listen")] == [
        ("server", ["a:1"], ["upstream api"]), ("server", [], []), ("listen", ["80"], ["server"])]
    conf.write_text("server { listen 80;")
    with pytest.raises(AssertionError, match="unexpected end of file"):
        nginx_directives(conf)


def test_api_replicas_sit_behind_the_balancer(services: dict[str, dict[str, Any]]) -> None:
    from service.config import Settings

    replicas = int(services["api"].get("deploy", {}).get("replicas", 1))
    assert replicas >= 2, f"the api runs {replicas} replica(s); the stack wants several"
    balancer = services["balancer"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in balancer.get("volumes", [])}
    assert mounts.get("/etc/nginx/conf.d/default.conf") == "./docker/nginx/api.conf", mounts
    directives = nginx_directives(NGINX_CONF)
    upstreams = [args[0] for name, args, blocks in directives
                 if name == "server" and blocks and blocks[-1].startswith("upstream ")]
    serve = latent_ode_commands(services)["Dockerfile CMD"]
    assert upstreams == [f"api:{option_value(serve, '--port')}"], (
        f"the balancer's upstream {upstreams} is not the api service's port"
    )
    (upstream_block,) = {blocks[-1] for name, args, blocks in directives if name == "server"
                         and blocks and blocks[-1].startswith("upstream ")}
    proxied = [args[0] for name, args, _ in directives if name == "proxy_pass"]
    assert proxied == [f"http://{upstream_block.split()[1]}"], proxied
    listens = [args[0] for name, args, _ in directives if name == "listen"]
    published = [str(p).rsplit(":", 1)[-1] for p in balancer.get("ports", [])]
    assert published == listens, f"the balancer publishes {published}; nginx listens on {listens}"
    assert healthcheck_text(balancer).endswith(f":{listens[0]}/readyz"), healthcheck_text(balancer)
    # The service's own 413 (with a detail) must be the one a client sees, not nginx's.
    (size,) = [args[0] for name, args, _ in directives if name == "client_max_body_size"]
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    limit = int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
    default_body = Settings.model_fields["max_body_bytes"].default
    assert limit > default_body, f"nginx cuts bodies at {size}, below the service's {default_body}"
    assert ("proxy_http_version", ["1.1"]) in [(n, a) for n, a, _ in directives], (
        "keep-alive to the replicas needs HTTP/1.1"
    )


def _settings_class(client: str) -> type:
    if client == "api":
        from service.config import Settings

        return Settings
    from pipelines.config import PipelineSettings

    return PipelineSettings


@pytest.mark.parametrize("client", ["api", "trainer"])
def test_environment_names_are_settings_of_the_program(
    services: dict[str, dict[str, Any]], gpu_services: dict[str, dict[str, Any]], client: str
) -> None:
    # The settings ignore unknown LATENT_ODE_* variables, so a misspelt name would be dropped
    # without a word (e.g. an admin key that never arrives and leaves /v1/admin disabled).
    settings = _settings_class(client)
    prefix = settings.model_config.get("env_prefix", "").upper()
    assert prefix == "LATENT_ODE_", f"{settings.__name__} reads {prefix!r}, not LATENT_ODE_"
    known = {f"{prefix}{name}".upper() for name in settings.model_fields}
    for source, service in (("docker-compose.yml", services), ("gpu", gpu_services)):
        names = {k for k in env_of(service[client]) if k.startswith(prefix)}
        unknown = names - known
        assert not unknown, (
            f"{source}: {client} sets {sorted(unknown)}, which {settings.__name__} does not read; "
            f"it reads {sorted(known)}"
        )


def test_trainer_only_runs_on_demand(services: dict[str, dict[str, Any]]) -> None:
    assert services["trainer"].get("profiles") == ["train"], "trainer belongs to profile `train`"
    profiled = sorted(n for n, s in services.items() if s.get("profiles") and n != "trainer")
    assert not profiled, f"{profiled} would not start with a plain `docker compose up`"
    argv = argv_of(services["trainer"].get("command"))
    assert argv[:3] == ["latent-ode", "pipeline", "run"] and "--config" in argv, argv
    assert services["trainer"].get("image") == services["api"].get("image"), (
        "trainer and api should share one image (one build)"
    )


def test_gpu_override_reserves_an_nvidia_gpu(
    services: dict[str, dict[str, Any]], gpu_services: dict[str, dict[str, Any]]
) -> None:
    stray = gpu_services.keys() - services.keys()
    assert not stray, f"the override defines {sorted(stray)}, which the base file does not have"
    for name in ("api", "trainer"):
        service = gpu_services.get(name)
        assert service, f"docker-compose.gpu.yml must override {name}"
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        assert devices, f"{name}: no deploy.resources.reservations.devices"
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), (
            f"{name}: no nvidia device with capabilities [gpu] in {devices}"
        )
        assert env_of(service).get("LATENT_ODE_DEVICE") == "cuda", f"{name}: LATENT_ODE_DEVICE"
        assert service.get("image") != services[name].get("image"), (
            f"{name}: the CUDA image needs its own tag, or it overwrites the CPU build"
        )


def test_multinode_override_gives_the_trainer_the_hosts_network_and_a_shared_folder(
    services: dict[str, dict[str, Any]],
) -> None:
    override = interpolated(MULTINODE_FILE)["services"]
    assert set(override) == {"trainer"}, f"the multinode override changes {sorted(override)}"
    trainer = override["trainer"]
    assert trainer.get("network_mode") == "host", "the ranks must reach each other's ports"
    # On the host network the tracking server is compose's published loopback port.
    uri = urlsplit(env_of(trainer)["MLFLOW_TRACKING_URI"])
    published = [str(p) for p in services["mlflow"]["ports"]]
    assert [f"{uri.hostname}:{uri.port}:5000"] == published, (uri, published)
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = option_value(argv_of(services["mlflow"]["command"]), "--allowed-hosts").split(",")
    assert is_allowed_host_header(allowed, uri.netloc), f"{allowed} rejects {uri.netloc}"
    targets = [str(v).split(":")[1] for v in trainer.get("volumes", [])]
    assert targets == ["/shared"], targets
    assert {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"} <= env_of(trainer).keys()


def test_named_volumes_persist_the_database_and_the_bucket(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    mounts: dict[str, set[str]] = {}
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source, target = volume.get("source", ""), volume["target"]
            else:
                source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/", "~")):
                continue  # a bind mount of a host path, not a named volume
            assert source in declared, f"{name} mounts volume {source!r}, which is not declared"
            used.add(source)
            mounts.setdefault(name, set()).add(target)
    assert declared <= used, f"declared volumes {sorted(declared - used)} are used by no service"
    assert "/var/lib/postgresql/data" in mounts.get("postgres", set()), "postgres data volume"
    minio_dir = argv_of(services["minio"]["command"])[1]
    assert minio_dir in mounts.get("minio", set()), f"minio serves {minio_dir}; mount a volume"


# --------------------------------------------------------------------------------------------
# Secrets and .env


def _environments(*files: Path) -> Iterator[tuple[str, str, str]]:
    for path in files:
        for name, service in load_yaml(path)["services"].items():
            for key, value in env_of(service).items():
                yield f"{path.name}:{name}", key, value


def test_credentials_are_references_to_env(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for where, key, value in _environments(COMPOSE_FILE, GPU_FILE, MULTINODE_FILE):
        if CREDENTIAL_KEY.search(key):
            checked += 1
            assert WHOLE_REFERENCE.match(value), f"{where} {key}: literal value, use ${{VAR}}"
            if SECRET_KEY.search(key):
                operator = INTERPOLATION.match(value)
                assert operator and operator.group(2) == ":?", (
                    f"{where} {key}={value}: a secret has no default; write ${{VAR:?message}}"
                )
    assert checked >= 5, f"only {checked} credential variables found; the pattern is broken"
    # Credentials inside URLs (the PostgreSQL store URI): with every ${...} reference replaced
    # by a marker, the password part of user:password@ must be exactly one marker.
    url_passwords = 0
    for text in walk_strings(load_yaml(COMPOSE_FILE)):
        masked = INTERPOLATION.sub("<ref>", text)
        for userinfo in URL_USERINFO.findall(masked):
            if ":" in userinfo:
                url_passwords += 1
                assert userinfo.split(":", 1)[1] == "<ref>", f"literal password in a URL: {text}"
    assert url_passwords >= 1, "the backend store URI's password was not found; check broken"


def test_env_example_lists_every_variable_with_placeholders() -> None:
    example = env_example()
    referenced = {
        m.group(1) for path in (COMPOSE_FILE, GPU_FILE, MULTINODE_FILE)
        for m in INTERPOLATION.finditer(path.read_text())
    }
    assert referenced, "no ${...} references found; the pattern is broken"
    missing = referenced - example.keys()
    assert not missing, f".env.example lacks {sorted(missing)}, which the compose files use"
    for key, value in example.items():
        if CREDENTIAL_KEY.search(key):
            assert value.startswith("change-me"), f".env.example {key}: use a change-me value"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False).returncode
    if ignored != 128:  # 128: not a git checkout (e.g. an sdist); nothing to check then
        assert ignored == 0, ".env holds the real secrets and must be git-ignored"


# --------------------------------------------------------------------------------------------
# Images


def test_images_use_the_python_of_pyproject() -> None:
    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    allowed = {f"3.{m}" for m in range(0, 40) if f"3.{m}.0" in spec}
    for path in (DOCKERFILE, MLFLOW_DOCKERFILE):
        minor = python_minor_of_base_image(path)
        assert allowed == {minor}, (
            f"{path.relative_to(REPO)} uses Python {minor}; requires-python {spec} allows "
            f"{sorted(allowed)}: one Python version across pyproject and the images"
        )


def test_mlflow_image_pins_the_projects_mlflow() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )
    text = MLFLOW_DOCKERFILE.read_text()
    for package in ("mlflow", "psycopg2-binary"):
        got = re.findall(rf'"{package}==([\w.]+)"', text)
        assert got == [pins[package]], (
            f"docker/mlflow pins {package} {got}, constraints {pins[package]}"
        )
    assert "boto3" in text, "the tracking server needs boto3 (S3)"


def test_project_image_serves_as_non_root_with_a_readiness_check(
    services: dict[str, dict[str, Any]],
) -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    by_kind: dict[str, list[str]] = {}
    for kw, args in instructions:
        by_kind.setdefault(kw, []).append(args)
    assert by_kind.get("EXPOSE") == ["8000"], f"EXPOSE {by_kind.get('EXPOSE')}"
    users = by_kind.get("USER", [])
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root USER"
    assert any("-c constraints.txt ." in run for run in by_kind.get("RUN", [])), (
        "install the project with `pip install -c constraints.txt .` (the same pins as CI)"
    )
    health = " ".join(by_kind.get("HEALTHCHECK", []))
    assert "/readyz" in health and "urllib" in health, f"HEALTHCHECK {health!r}"
    assert exec_form(by_kind["CMD"][-1]) == [
        "latent-ode",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    # Build args compose passes must exist in the Dockerfile, or they are silently ignored.
    declared_args = {a.split("=", 1)[0] for a in by_kind.get("ARG", [])}
    for name in ("api", "trainer"):
        build = services[name].get("build") or {}
        passed = set((build.get("args") or {}).keys()) if isinstance(build, dict) else set()
        assert passed <= declared_args, f"{name} passes {passed - declared_args}, not ARGs"
    assert "TORCH_INDEX_URL" in declared_args


def test_latent_ode_commands_exist_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    commands = latent_ode_commands(services)
    assert {"Dockerfile CMD", "service trainer command"} <= commands.keys(), sorted(commands)
    from pipelines.cli import build_parser

    parser = build_parser()
    problems = [f"{where}: {p}" for where, argv in commands.items() for p in cli_problems(parser, argv)]
    assert not problems, "\n".join(problems)


def _repo_paths(services: dict[str, dict[str, Any]]) -> set[str]:
    """Repository paths the compose file relies on: build contexts, Dockerfiles, config files."""
    paths: set[str] = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):  # a bind mount of a repository file
                paths.add(source[2:])
        build = service.get("build")
        if isinstance(build, str):
            paths.add(build)
        elif isinstance(build, dict):
            context = build.get("context", ".")
            paths.add(context)
            paths.add(str(Path(context) / build.get("dockerfile", "Dockerfile")))
    for argv in latent_ode_commands(services).values():
        for token in argv[1:]:
            if re.fullmatch(r"[\w.-]+(/[\w.-]+)+\.\w+", token):
                paths.add(token)
    return paths


def test_paths_the_compose_file_uses_exist(services: dict[str, dict[str, Any]]) -> None:
    paths = _repo_paths(services)
    assert {"pipelines/configs/periodic.toml", "docker/nginx/api.conf"} <= paths, sorted(paths)
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docker-compose.yml refers to {missing}, which are not in the repository"


def test_dockerignore_keeps_what_the_image_needs(services: dict[str, dict[str, Any]]) -> None:
    # Docker's own matching rules, as the docker SDK (an MLflow dependency) applies them.
    from docker.utils.build import PatternMatcher

    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    excluded = PatternMatcher(patterns).matches
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {
        "pyproject.toml",
        "constraints.txt",
        "latent_ode/__init__.py",
        "formats/__init__.py",
        "pipelines/__init__.py",
        "service/__init__.py",
        pyproject.get("readme", "README.md"),
    }
    needed |= {p for p in _repo_paths(services) if p.startswith("pipelines/")}
    kept_out = sorted(p for p in needed if excluded(p))
    assert not kept_out, f".dockerignore keeps {kept_out} out of the image, which needs them"
    for secret_or_bulk in (".env", ".venv/bin/python", ".git/HEAD", "mlflow.db"):
        assert excluded(secret_or_bulk), f".dockerignore must exclude {secret_or_bulk}"


# --------------------------------------------------------------------------------------------
# Compose's own validation, where the compose plugin is installed


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def docker_compose() -> list[str]:
    if not _docker_compose_available():
        pytest.skip("the docker compose plugin is not installed (no engine needed, just the CLI)")
    return ["docker", "compose", "--project-directory", str(REPO)]


def _clean_env() -> dict[str, str]:
    # Only what the CLI needs to run: variables of the calling shell must not fill the
    # ${...} references, or the checks below would depend on who runs them.
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_CONFIG")}


@pytest.mark.parametrize(
    "files",
    [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"],
     ["docker-compose.yml", "docker-compose.multinode.yml"]],
    ids=["base", "gpu", "multinode"],
)
def test_docker_compose_config_accepts_the_files(docker_compose: list[str], files: list[str]) -> None:
    args = [a for f in files for a in ("-f", str(REPO / f))]
    result = subprocess.run(
        [*docker_compose, *args, "--env-file", str(ENV_EXAMPLE), "--profile", "train", "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_clean_env(),
    )
    assert result.returncode == 0, f"docker compose config rejects {files}:\n{result.stderr}"


def test_docker_compose_refuses_to_start_without_secrets(docker_compose: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [*docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_clean_env(),
    )
    assert result.returncode != 0, "compose accepted a stack with no passwords set"
    assert "in .env" in result.stderr, f"the error should say where to set it: {result.stderr}"
