"""docker-compose.yml's balancer run natively: nginx with docker/nginx/api.conf in front of local
service processes (bench/replicas.py, tests/test_replicas.py).

The upstream ``server api:8000 ...;`` line of the file becomes one line per local replica
(``127.0.0.1:<port>``, same parameters) and ``listen 8000;`` a free 127.0.0.1 port; everything
else (least connections, keep-alive, body limit, timeouts) is the file compose mounts. A minimal
main config around it gives nginx a pid file, logs and temp folders in a work folder, so no root
and nothing of the system's nginx is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
API_CONF = REPO / "docker" / "nginx" / "api.conf"

_UPSTREAM_SERVER = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+api:\d+(?P<params>[^;\n]*);",
                              re.MULTILINE)
_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+\d+;", re.MULTILINE)


def nginx_binary() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a normal user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def native_api_conf(upstreams: list[str], port: int) -> str:
    """docker/nginx/api.conf with the compose upstream replaced by ``upstreams`` (host:port) and
    the listen port by ``127.0.0.1:port``."""
    text = API_CONF.read_text()
    if len(_UPSTREAM_SERVER.findall(text)) != 1 or len(_LISTEN.findall(text)) != 1:
        raise ValueError(f"{API_CONF} must have one `server api:PORT ...;` and one `listen PORT;`")
    text = _UPSTREAM_SERVER.sub(
        lambda m: "\n".join(f"{m['indent']}server {u}{m['params']};" for u in upstreams), text
    )
    return _LISTEN.sub(lambda m: f"{m['indent']}listen 127.0.0.1:{port};", text)


def write_nginx_conf(upstreams: list[str], port: int, workdir: Path, *, workers: int = 1) -> Path:
    """A main nginx.conf in ``workdir`` that includes the native api.conf; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "api.conf").write_text(native_api_conf(upstreams, port))
    # As root, nginx's workers would drop to `nobody`, who cannot use the work folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes {workers};\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n"
        f"    client_body_temp_path {workdir / 'tmp' / 'body'};\n"
        f"    proxy_temp_path {workdir / 'tmp' / 'proxy'};\n"
        f"    fastcgi_temp_path {workdir / 'tmp' / 'fastcgi'};\n"
        f"    uwsgi_temp_path {workdir / 'tmp' / 'uwsgi'};\n"
        f"    scgi_temp_path {workdir / 'tmp' / 'scgi'};\n"
        f"    include {workdir / 'api.conf'};\n}}\n"
    )
    return conf


def start_nginx(conf: Path, port: int, *, timeout: float = 30) -> subprocess.Popen[bytes]:
    """Run nginx on ``conf`` in the foreground until ``/livez`` answers through it."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx)")
    workdir = conf.parent
    checked = subprocess.run([binary, "-t", "-p", str(workdir), "-c", str(conf),
                              "-e", str(workdir / "error.log")],
                             capture_output=True, text=True, check=False, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t rejects {conf}: {checked.stderr}")
    with open(workdir / "nginx.out", "wb") as out:
        proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf),
                                 "-e", str(workdir / "error.log")],
                                stdout=out, stderr=subprocess.STDOUT)
    wait_ready(proc, f"http://127.0.0.1:{port}/livez", timeout=timeout, name="nginx",
               see=workdir, poll=0.1)
    return proc


def wait_ready(proc: subprocess.Popen[bytes], url: str, *, timeout: float, name: str,
               see: Path, poll: float = 0.25) -> None:
    """Poll ``url`` until it answers 200; raise (killing ``proc``) if ``proc`` exits first or
    ``timeout`` seconds pass (``name`` and the folder or log ``see`` in the message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {see}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(poll)
    proc.kill()
    raise TimeoutError(f"{name} was not ready in {timeout:g} s; see {see}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate a process (nginx: fast shutdown), killing it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
