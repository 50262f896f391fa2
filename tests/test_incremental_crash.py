"""SIGKILL during incremental writes (slow tier): a child process upserts new versions of every document
and deletes and re-adds some, and is killed at random moments, again and again. After each kill the next
open must show every document whole, either at the version before the write in flight or at that one; the
text index and the graph must hold exactly the stored documents (no ghost, no duplicate, none missing); and
a rerun of the write finishes it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hybrid_search.backends.embedded import EmbeddedBackend

N = 40
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_incremental_crash import versioned
    from hybrid_search import HybridSearch
    data, start = sys.argv[1], int(sys.argv[2])
    progress = open(sys.argv[4], "a")
    import hybrid_search.encoding.encoder, hybrid_search.ingest.incremental  # imported before the clock starts
    with HybridSearch(index="crash", data_dir=data, overrides={"ingest": {"batch_size": 8}}) as hs:
        hs.search("warm up", mode="bm25")
        for v in range(start, start + 1000):
            progress.write(f"start {v}\\n"); progress.flush()
            hs.upsert(versioned(v), vector_field="vec")
            hs.delete_documents([f"r{v % 40}", f"r{(v + 7) % 40}"])
            hs.upsert([r for r in versioned(v) if r["id"] in (f"r{v % 40}", f"r{(v + 7) % 40}")], vector_field="vec")
            progress.write(f"done {v}\\n"); progress.flush()
    """
)


def vector(doc: int, version: int) -> list[float]:
    v = np.random.default_rng(doc * 100_003 + version).standard_normal(384).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def versioned(version: int) -> list[dict]:
    return [
        {"id": f"r{i}", "text": f"shared words record {i} version {version}", "vec": vector(i, version), "v": version}
        for i in range(N)
    ]


def _check(data: Path, allowed: set[int]) -> dict[str, int]:
    """Open as the next process would; return id -> version, after checking every invariant."""
    with EmbeddedBackend(data_dir=data) as backend:
        stored = {d.doc_id: d for batch in backend.iter_documents("crash") for d in batch}
        versions = {}
        for doc_id, doc in stored.items():
            version = int(doc.text.rsplit(" ", 1)[1])
            assert version in allowed, (doc_id, version, allowed)
            versions[doc_id] = version
        # a document is missing only while its delete-and-re-add was in flight
        assert len(stored) >= N - 2
        bm25 = [h.doc_id for h in backend.search_bm25("crash", "shared words", 100)]
        assert sorted(bm25) == sorted(stored), "the text index holds exactly the stored documents"
        for doc_id, version in versions.items():
            hits = backend.search_knn("crash", np.asarray(vector(int(doc_id[1:]), version)), 1, 100)
            assert hits and hits[0].doc_id == doc_id and hits[0].text == stored[doc_id].text
        assert backend.count("crash") == len(stored)
    return versions


@pytest.mark.slow
def test_kill_9_loop_during_incremental_writes(tmp_path):
    from hybrid_search import HybridSearch

    data = tmp_path / "data"
    with HybridSearch(index="crash", data_dir=data) as hs:
        hs.ingest(versioned(0), vector_field="vec")
    progress = tmp_path / "progress"
    rng = random.Random(7)
    start, kills = 1, 0
    seen: set[int] = set()
    for _round in range(8):
        progress.write_text("")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data), str(start), str(Path(__file__).parent), str(progress)], env=ENV
        )
        deadline = time.monotonic() + 120
        while f"start {start}" not in (progress.read_text() if progress.exists() else ""):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        lines = progress.read_text().split()
        begun = max(int(v) for k, v in zip(lines[::2], lines[1::2], strict=True) if k == "start")
        # before a version's first write every document is at the previous one; any may be at the new one
        versions = _check(data, {begun - 1, begun})
        seen |= set(versions.values())
        start = begun  # the rerun writes the interrupted version again, then goes on
    assert kills == 8
    assert len(seen) > 3, f"the kills all landed before any write: {seen}"
    with HybridSearch(index="crash", data_dir=data, overrides={"ingest": {"batch_size": 8}}) as hs:
        summary = hs.upsert(versioned(start), vector_field="vec")
        assert summary.rejected == 0 and summary.added + summary.updated + summary.unchanged == N
    versions = _check(data, {start})
    assert len(versions) == N


# where the deterministic kills land: (the PhysicalIndex method wrapped, die before it on this call)
AIMED = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])
    from test_incremental_crash import versioned
    from hybrid_search import HybridSearch
    from hybrid_search.backends.embedded.physical import PhysicalIndex
    data, version, method, nth = sys.argv[1], int(sys.argv[2]), sys.argv[4], int(sys.argv[5])
    calls = {"n": 0}
    real = getattr(PhysicalIndex, method)

    def wrapper(self, *args, **kwargs):
        pending = self.db.execute("SELECT count(*) FROM text_pending").fetchone()[0]
        if method != "_apply_pending_text_deletes" or pending:
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args, **kwargs)

    setattr(PhysicalIndex, method, wrapper)
    with HybridSearch(index="crash", data_dir=data, overrides={"ingest": {"batch_size": 8}}) as hs:
        hs.upsert(versioned(version), vector_field="vec")
        hs.delete_documents(["r3", "r4"])
    """
)

AIMS = [
    ("_index_text", 2),  # a batch's rows are committed in SQLite, the text index has not taken them
    ("_add_vectors", 3),  # rows and text are in, the graph has not taken the vectors
    ("flush", 1),  # everything written, the graph file not yet persisted
    ("_apply_pending_text_deletes", 1),  # the delete removed rows in SQLite, not yet from the text index
]


@pytest.mark.slow
@pytest.mark.parametrize("method,nth", AIMS)
def test_a_kill_between_sqlite_text_and_graph_is_repaired_by_the_next_open(tmp_path, method, nth):
    from hybrid_search import HybridSearch

    data = tmp_path / "data"
    with HybridSearch(index="crash", data_dir=data) as hs:
        hs.ingest(versioned(0), vector_field="vec")
    child = subprocess.run(
        [sys.executable, "-c", AIMED, str(data), "1", str(Path(__file__).parent), method, str(nth)],
        env=ENV,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL  # it died where it was aimed, not of something else
    versions = _check(data, {0, 1})
    if method == "_apply_pending_text_deletes":
        assert "r3" not in versions and "r4" not in versions  # the delete is done: rows first, text repaired
    with HybridSearch(index="crash", data_dir=data, overrides={"ingest": {"batch_size": 8}}) as hs:
        hs.upsert(versioned(1), vector_field="vec")
        hs.delete_documents(["r3", "r4"])
    versions = _check(data, {1})
    assert len(versions) == N - 2
