"""Session-scoped stand-in servers and Docker detection for the integration tiers.

The stand-ins are real processes on loopback, started from their PyPI packages' bundled binaries and
stopped by PID (noida-db's Python launcher ignores SIGTERM, so the binary is started directly).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def package_file(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / name
    return path if path.exists() else None


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not answer in {timeout:.0f}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running(cmd: list[str], url: str, workdir: Path) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    try:
        _wait_http(url, proc, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def noida_elasticsearch(workdir: Path) -> contextlib.AbstractContextManager[str]:
    binary = package_file("noida_db", "noida-db")
    if binary is None:
        pytest.skip("noida-db is not installed (it is in the dev extra: pip install -e '.[dev]')")
    port = free_port()
    cmd = [
        str(binary),
        "start",
        "--only",
        "elasticsearch",
        "--elasticsearch-port",
        str(port),
        "--data-dir",
        str(workdir / "data"),
    ]
    return running(cmd, f"http://127.0.0.1:{port}", workdir)


def docker_available() -> str | None:
    """``None`` when a Docker daemon answers, else the reason it does not (for the skip message)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:  # any failure means no usable daemon
        return f"no Docker daemon answers ({type(exc).__name__}): real-engine tests need Docker"


def osmem_opensearch(workdir: Path) -> contextlib.AbstractContextManager[str]:
    binary = package_file("osmem_server", "bin/osmem-server")
    if binary is None:
        pytest.skip("osmem-server is not installed (it is in the dev extra: pip install -e '.[dev]')")
    from osmem_server import OsmemServer

    @contextlib.contextmanager
    def run() -> Iterator[str]:
        server = OsmemServer.start(binary=str(binary), freeze=False)
        try:
            yield server.url
        finally:
            server.close()

    return run()
