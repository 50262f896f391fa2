"""The package as users get it: a wheel built from this checkout, installed without ``-e`` into a fresh
virtual environment, used from a folder that has its own ``config.py`` and ``search/`` package.

The fresh environment sees the test environment's installed dependencies through a ``.pth`` line (so no
network is needed), but not the checkout: a ``.pth`` line adds a directory without running the ``.pth``
files inside it, so the editable install of the checkout stays out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

TOP_LEVEL = {"hybrid_search", "hybrid_search-0.1.0.dist-info"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in-tree through build/lib and never removes what an earlier build left there: a module
    # since moved or deleted would ride along in the wheel (a package move found this)
    shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        cwd=REPO,
        env=dict(os.environ),
    )
    assert build.returncode == 0, build.stderr
    return next(out.glob("hybrid_search-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir, env={}
        ).stdout.strip()
    )
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        cwd=env_dir,
        env=dict(os.environ),
    )
    assert install.returncode == 0, install.stderr
    env = {
        "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}",
        "HOME": str(env_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return env_dir, env


@pytest.fixture()
def user_project(tmp_path) -> Path:
    """A user's folder whose own modules would shadow generic top-level package names."""
    (tmp_path / "config.py").write_text("raise SystemExit('the user config.py was imported')\n")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "__init__.py").write_text("raise SystemExit('the user search package was imported')\n")
    return tmp_path


def test_the_wheel_holds_one_namespace_with_every_module_and_data_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == TOP_LEVEL
    shipped = {n for n in names if n.endswith(".py")}
    for folder, package in (
        ("backends", "backends"),
        ("search", "search"),
        ("ingest", "ingest"),
        ("rerank", "rerank"),
        ("config", "config"),
        ("app", "app"),
        ("encoding", "encoding"),
    ):
        for module in (REPO / folder).rglob("*.py"):
            assert f"hybrid_search/{package}/{module.relative_to(REPO / folder).as_posix()}" in shipped
    for data in (
        "hybrid_search/app/saved_objects/kibana.ndjson",
        "hybrid_search/app/saved_objects/opensearch-dashboards.ndjson",
        "hybrid_search/ingest/sample/corpus.jsonl",
        "hybrid_search/ingest/sample/queries.jsonl",
        "hybrid_search/ingest/sample/qrels/test.tsv",
        "hybrid_search/py.typed",
    ):
        assert data in names


def test_installed_wheel_runs_from_a_folder_with_its_own_config_and_search(installed, user_project):
    env_dir, env = installed
    python, cli = str(env_dir / "bin" / "python"), str(env_dir / "bin" / "hybrid-search")
    where = _run([python, "-c", "import hybrid_search; print(hybrid_search.__file__)"], cwd=user_project, env=env)
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout

    assert _run([cli, "--help"], cwd=user_project, env=env).returncode == 0
    data = str(user_project / "data")
    ingest = _run(
        [cli, "ingest", "sample", "--index", "sample", "--data-dir", data, "--quiet"], cwd=user_project, env=env
    )
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["stored"] == 40
    found = _run(
        [cli, "search", "green tea water temperature", "--index", "sample", "--data-dir", data, "--json", "--quiet"],
        cwd=user_project,
        env=env,
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["doc_id"] == "d06"

    engines = (
        "import hybrid_search.backends.elasticsearch as es, hybrid_search.backends.opensearch as os_;"
        "from hybrid_search import HybridSearch; print(es.ElasticsearchBackend.__name__, "
        "os_.OpenSearchBackend.__name__, HybridSearch.__name__)"
    )
    out = _run([python, "-c", engines], cwd=user_project, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ElasticsearchBackend", "OpenSearchBackend", "HybridSearch"]


def test_no_generic_top_level_package_is_installed(installed, tmp_path):
    env_dir, env = installed
    for name in ("config", "search", "ingest", "rerank"):
        out = _run([str(env_dir / "bin" / "python"), "-c", f"import {name}"], cwd=tmp_path, env=env)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, name


def test_a_wheel_built_from_the_sdist_is_as_complete(wheel, tmp_path):
    """The sdist carries everything too: a wheel built from it holds the same files as one from the checkout."""
    sdist_dir, rebuilt = tmp_path / "sdist", tmp_path / "rebuilt"
    build = _run(
        [
            sys.executable,
            "-c",
            f"import sys; from setuptools import build_meta as b; print(b.build_sdist({str(sdist_dir)!r}))",
        ],
        cwd=REPO,
        env=dict(os.environ),
    )
    assert build.returncode == 0, build.stderr
    sdist = next(sdist_dir.glob("hybrid_search-*.tar.gz"))
    again = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(rebuilt),
            str(sdist),
        ],
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert again.returncode == 0, again.stderr
    names = set(zipfile.ZipFile(next(rebuilt.glob("*.whl"))).namelist())
    assert {n for n in zipfile.ZipFile(wheel).namelist() if "dist-info" not in n} <= names


def test_the_makefiles_editable_install_prints_no_setuptools_warning():
    """``make demo`` shows what the demo prints, not setuptools' "Editable installation" box: the install
    line of the Makefile, run as written (its environment included) with ``--no-deps``, into this environment
    (it reinstalls the same editable checkout)."""
    line = next(s for s in (REPO / "Makefile").read_text().splitlines() if "pip install" in s and " -e " in s)
    env_part, _, _ = line.strip().partition("$(BIN)/python")
    env = dict(os.environ)
    for assignment in env_part.split():
        name, _, value = assignment.partition("=")
        env[name] = value.strip('"')
    out = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(REPO)], REPO, env)
    assert out.returncode == 0, out.stderr
    assert "Editable installation" not in out.stdout + out.stderr
