"""Defects a review found, each pinned by a test that failed before its fix: index names reaching the file
system, credentials in messages, an unescaped Kibana space, the query log's close race and memory bound,
settings files that escape as tracebacks, and deletes that count a refusal as "did not exist"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import SAMPLE

from hybrid_search.app.logs import QueryLog
from hybrid_search.backends.base import IndexedDocument, IndexSpec, check_index_name
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.config.errors import ConfigError, IndexingError
from hybrid_search.config.settings import BackendSettings, LogSettings, load_settings
from hybrid_search.search.hits import Hit, SearchResult

SPEC = IndexSpec(dims=4)
BAD_NAMES = ["../victim", "..", ".", "a/b", "A", "", "-x", "_x", "x y", "x\\y", "x:y", "x" * 300, "caf\u00e9"]


def _entry_points(backend):
    """Every public call of a backend that takes an index or alias name, with harmless other arguments."""
    vec = np.ones(4, dtype=np.float32) / 2
    doc = IndexedDocument("d", "t", "text", vec)
    return {
        "ensure_index": lambda n: backend.ensure_index(n, SPEC),
        "index_exists": backend.index_exists,
        "index_spec": backend.index_spec,
        "begin_build": lambda n: backend.begin_build(n, SPEC),
        "resume_build": lambda n: backend.begin_build("ok", SPEC, resume_from=n),
        "finish_build": lambda n: backend.finish_build(n, "ok-1"),
        "finish_build_physical": lambda n: backend.finish_build("ok", n),
        "rollback": backend.rollback,
        "upsert": lambda n: backend.upsert(n, [doc]),
        "delete": lambda n: backend.delete(n, ["d"]),
        "search_bm25": lambda n: backend.search_bm25(n, "q", 1),
        "search_knn": lambda n: backend.search_knn(n, vec, 1, 10),
        "count": backend.count,
        "refresh": backend.refresh,
        "drop_index": backend.drop_index,
        "stats": backend.stats,
        "log_ensure": lambda n: backend.log_sink().ensure(n, {"properties": {}}),
        "log_append": lambda n: backend.log_sink().append(n, [{}]),
        "log_latest": lambda n: backend.log_sink().latest(n),
        "log_count": lambda n: backend.log_sink().count(n),
    }


def test_one_validator_accepts_what_every_engine_accepts():
    for good in ("nq", "quora-2026.1", "a_b", "x" * 200):
        check_index_name(good)
    for bad in BAD_NAMES:
        with pytest.raises(ConfigError, match="index name"):
            check_index_name(bad)


def test_embedded_checks_names_at_every_entry_point(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "spec.json").write_text(json.dumps(SPEC.to_dict()))
    data = tmp_path / "data" / "inner"
    with EmbeddedBackend(data_dir=data) as backend:
        for name, call in _entry_points(backend).items():
            for bad in ("../../victim", "../victim", "a/b", ".."):
                with pytest.raises(ConfigError, match="index name"):
                    call(bad)
                assert victim.is_dir() and (victim / "spec.json").is_file(), (name, bad)


@pytest.mark.parametrize("kind", ["elasticsearch", "opensearch"])
def test_cluster_backends_check_names_before_any_request(kind):
    from hybrid_search.backends import open_backend

    settings = load_settings(overrides={"backend": {"kind": kind, "urls": "http://127.0.0.1:9"}})
    with open_backend(settings) as backend:  # nothing listens there: a request would be BackendUnavailable
        for name, call in _entry_points(backend).items():
            with pytest.raises(ConfigError, match="index name"):
                call("../victim")


def test_a_tampered_alias_file_cannot_point_outside_the_data_dir(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "spec.json").write_text(json.dumps(SPEC.to_dict()))
    data = tmp_path / "data"
    data.mkdir()
    (data / "aliases.json").write_text(json.dumps({"nq": "../victim"}))
    with EmbeddedBackend(data_dir=data) as backend, pytest.raises(ConfigError, match="index name"):
        backend.drop_index("nq")
    assert (victim / "spec.json").is_file()


# --- credentials never appear in a message ---------------------------------------------------------------
SECRET = "s3cr3t-Pa55"


def test_urls_with_credentials_are_refused_without_echoing_them():
    for given in (f"http://elastic:{SECRET}@localhost:9200", f"https://u:{SECRET}@a:9200,http://b:9200"):
        with pytest.raises(ConfigError) as err:
            BackendSettings(urls=given)
        assert SECRET not in str(err.value) and "HYBRID_SEARCH_PASSWORD" in str(err.value)
        assert "***" in str(err.value)


def test_no_error_path_prints_the_secret(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYBRID_SEARCH_PASSWORD": SECRET}
    user = {"HYBRID_SEARCH_BACKEND__USERNAME": "elastic"}
    runs = [
        (
            ["search", "x", "--mode", "bm25", "--backend", "elasticsearch", "--url", f"http://u:{SECRET}@127.0.0.1:9"],
            {},
        ),
        (["search", "x", "--mode", "bm25", "--backend", "elasticsearch", "--url", "http://127.0.0.1:9"], user),
        (["search", "x", "--mode", "bm25", "--backend", "opensearch", "--url", "http://127.0.0.1:9"], user),
        (["inspect", "--backend", "opensearch", "--url", f"http://admin:{SECRET}@127.0.0.1:9"], {}),
        (["ingest", "sample", "--backend", "elasticsearch"], {"HYBRID_SEARCH_BACKEND__URLS": f"http://e:{SECRET}@h:1"}),
        (["dashboards", "install", "--kibana-url", f"http://elastic:{SECRET}@127.0.0.1:9"], {}),
        (["dashboards", "install", "--kibana-url", "http://127.0.0.1:9", "--username", "elastic"], {}),
    ]
    for args, extra in runs:
        out = subprocess.run(
            [sys.executable, "-m", "hybrid_search.app.cli", *args, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
        )
        assert out.returncode != 0, args
        assert SECRET not in out.stdout + out.stderr, args
        assert out.stderr.startswith("error: "), out.stderr


def test_kibana_space_is_checked_and_escaped():
    from hybrid_search.app.dashboards import install_saved_objects

    for bad in ("a/../b", "Space", "a b", "x?y=1", ""):
        with pytest.raises(ConfigError, match="space"):
            install_saved_objects("http://127.0.0.1:9", "kibana", "nq", space=bad, attempts=1)


# --- settings files ---------------------------------------------------------------------------------------
def test_a_malformed_yaml_file_is_a_config_error(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text("search:\n  rrf_k: [1, 2\n")
    with pytest.raises(ConfigError, match=r"settings file .*settings.yaml is not valid YAML at line 3.*expected"):
        load_settings(bad)
    not_a_map = tmp_path / "list.yaml"
    not_a_map.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(not_a_map)
    broken = tmp_path / "settings.toml"
    broken.write_text("[search\nrrf_k = 1\n")
    with pytest.raises(ConfigError, match="settings file"):
        load_settings(broken)


# --- the query log ----------------------------------------------------------------------------------------
class _ListSink:
    location = "memory"

    def __init__(self):
        self.docs = []

    def ensure(self, name, mapping):
        pass

    def append(self, name, docs, *, refresh=False):
        self.docs += docs
        return len(docs)

    def latest(self, name):
        return None

    def count(self, name):
        return len(self.docs)


def _result(query="q", text="t", hits=3):
    return SearchResult(
        query=query,
        mode="bm25",
        timings_ms={"total": 1.0},
        hits=tuple(Hit(doc_id=f"d{i}", rank=i + 1, score=1.0, text=text) for i in range(hits)),
    )


def test_an_entry_recorded_while_close_runs_is_written_or_counted():
    sink = _ListSink()
    qlog = QueryLog(sink, index="race", backend="test")
    qlog.record(_result())  # starts the writer
    real_put = qlog._queue.put_nowait
    closer = []

    def put_then_race(item):
        # close() starts between record's check and its put; without the fix it queues its stop marker
        # first and the entry is neither written nor counted
        if not closer:
            closer.append(threading.Thread(target=qlog.close))
            closer[0].start()
            closer[0].join(0.3)
        real_put(item)

    qlog._queue.put_nowait = put_then_race  # type: ignore[method-assign]
    qlog.record(_result())
    closer[0].join(10)
    stats = qlog.stats
    assert stats.recorded == 2 and stats.in_flight == 0
    assert stats.written + stats.dropped == 2 and len(sink.docs) == stats.written


def test_the_queue_is_bounded_by_bytes_and_holds_no_hit_texts():
    gate = threading.Event()

    class Stuck(_ListSink):
        def append(self, name, docs, *, refresh=False):
            gate.wait(10)
            return super().append(name, docs, refresh=refresh)

    qlog = QueryLog(
        Stuck(), index="big", backend="test", settings=LogSettings(queue_size=10_000, queue_bytes=1 << 20, batch_size=1)
    )
    for _ in range(2_000):  # 100 KB of hit text each: they must not be held
        qlog.record(_result(text="x" * 100_000, hits=10))
    assert qlog.queued_bytes <= 1 << 20
    held = [e for e in list(qlog._queue.queue) if e is not None]
    assert all("x" * 1000 not in json.dumps(e.doc) for e in held[:5] if hasattr(e, "doc"))
    for _ in range(50):  # a 100 KB query counts against the byte bound
        qlog.record(_result(query="q" * 100_000, hits=1))
    gate.set()
    stats = qlog.close()
    assert stats.recorded == 2_050 and stats.dropped > 0 and stats.in_flight == 0
    assert stats.written + stats.dropped + stats.failed == stats.recorded


# --- deletes ----------------------------------------------------------------------------------------------
def test_a_refused_delete_is_an_error_not_a_missing_document(noida_url):
    from faults import BulkFaults

    from hybrid_search.backends.elasticsearch import ElasticsearchBackend

    backend = ElasticsearchBackend(
        BackendSettings(kind="elasticsearch", urls=(noida_url,), bulk_attempts=2, backoff_max=0.01)
    )
    index = "delete-refused"
    backend.drop_index(index)
    backend.ensure_index(index, SPEC)
    backend.upsert(index, [IndexedDocument(f"d{i}", "t", "x", np.ones(4, dtype=np.float32) / 2) for i in range(3)])
    backend.refresh(index)
    faults = BulkFaults(backend.client, ["storm429"] * 10)
    try:
        with pytest.raises(IndexingError, match="429"):
            backend.delete(index, ["d0", "d1"])
    finally:
        faults.restore()
    assert backend.delete(index, ["d0", "missing"]) == 1
    backend.refresh(index)
    assert backend.count(index) == 2
    backend.drop_index(index)
    backend.close()


def test_sample_is_untouched_by_these_tests():
    assert (SAMPLE / "corpus.jsonl").is_file()
