"""A crash loop: the real ``hybrid-search ingest`` in a child process, killed with SIGKILL at chosen points
(while encoding, after a bulk write but before its checkpoint, half-way through writing the checkpoint,
after the checkpoint, and before and after the alias swap), resumed with ``--resume`` each time.

SIGKILL is a real crash: no ``finally`` block, no flush, no exit handler runs. The only thing injected is
*when* the child dies (a wrapper around the real method kills its own process at the chosen call), since
a test cannot otherwise aim a kill at a phase that lasts milliseconds. After every kill the alias still
serves a complete index; at the end the index holds exactly ``read - rejected`` documents, no duplicates,
and the same ids, texts and vectors as an uninterrupted build of the same source.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

# stage -> (what to wrap, when to die relative to the wrapped call)
DRIVER = r"""
import os, signal, sys
stage, nth = os.environ["KILL_STAGE"], int(os.environ["KILL_AT"])
calls = {"n": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def wrap(owner, name, before):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and before:
            die()
        out = real(*args, **kwargs)
        if calls["n"] == nth and not before:
            die()
        return out
    setattr(owner, name, wrapper)

from hybrid_search.encoding.encoder import Encoder
from hybrid_search.ingest import pipeline
from hybrid_search.backends.embedded import EmbeddedBackend
from hybrid_search.backends.cluster import ClusterBackend

if stage == "encode":
    wrap(Encoder, "encode_documents", before=True)
elif stage == "after_bulk":
    for cls in (EmbeddedBackend, ClusterBackend):
        wrap(cls, "upsert", before=False)
elif stage == "mid_checkpoint":
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith(".json") and "checkpoints" in str(dst):
            calls["n"] += 1
            if calls["n"] == nth:
                die()  # the new checkpoint is written to its temporary file, not yet renamed
        return real_replace(src, dst)
    os.replace = replace  # the one os module: every atomic write goes through it
elif stage == "after_checkpoint":
    wrap(pipeline.Checkpoint, "save", before=False)
elif stage == "before_swap":
    for cls in (EmbeddedBackend, ClusterBackend):
        wrap(cls, "finish_build", before=True)
elif stage == "after_swap":
    for cls in (EmbeddedBackend, ClusterBackend):
        wrap(cls, "finish_build", before=False)

from hybrid_search.app.cli import main
sys.exit(main(sys.argv[1:]))
"""

KILLS = [
    ("encode", 2),
    ("after_bulk", 2),
    ("mid_checkpoint", 3),
    ("after_checkpoint", 2),
    ("encode", 3),
    ("after_bulk", 1),
    ("before_swap", 1),
    ("after_swap", 1),
]
N_DOCS, BAD = 150, {17, 60, 61, 140}  # BAD positions are rejects (empty text, duplicate id)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "corpus.jsonl"
    lines = []
    for i in range(N_DOCS):
        if i in (17, 140):
            lines.append(json.dumps({"_id": f"bad{i}", "text": "  "}))
        elif i in (60, 61):
            lines.append(json.dumps({"_id": "doc-0005", "text": "a duplicate id"}))
        else:
            lines.append(json.dumps({"_id": f"doc-{i:04d}", "title": f"T{i}", "text": f"passage number {i} " * 3}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ingest(source, common, env, *, stage=None, nth=0, resume=False):
    args = ["ingest", str(source), "--index", "crash", "--batch-size", "16", "--quiet", *common]
    if resume:
        args.append("--resume")
    child_env = {**env, "KILL_STAGE": stage or "none", "KILL_AT": str(nth)}
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, env=child_env, timeout=300
    )


def _content(backend, index):
    ids, vectors = [], []
    for chunk_ids, chunk in backend.iter_vectors(index, 64):
        ids += chunk_ids
        vectors.append(chunk)
    texts = backend.get_texts(index, ids)
    order = np.argsort(ids)
    return [ids[i] for i in order], [texts[ids[i]] for i in order], np.concatenate(vectors)[order]


def _crash_loop(source, common, open_backend, env):
    expected = N_DOCS - len(BAD)  # two empty texts, and two later copies of doc-0005
    clean = _ingest(source, common, env)
    assert clean.returncode == 0, clean.stderr
    with open_backend() as backend:
        reference_physical = backend.stats("crash").physical
        reference = _content(backend, "crash")
    assert len(reference[0]) == expected

    kills, resume = 0, False
    for stage, nth in KILLS:
        out = _ingest(source, common, env, stage=stage, nth=nth, resume=resume)
        assert out.returncode == -signal.SIGKILL, (stage, out.returncode, out.stderr[-800:])
        kills += 1
        resume = True
        with open_backend() as backend:  # whatever the kill interrupted, the alias serves a complete index
            assert backend.count("crash") == expected, stage
    final = _ingest(source, common, env, resume=True)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert (summary["read"], summary["rejected"], summary["stored"]) == (N_DOCS, len(BAD), expected)
    with open_backend() as backend:
        ids, texts, vectors = _content(backend, "crash")
        assert backend.count("crash") == expected == len(set(ids)) == len(ids)  # exactly once each
        assert backend.stats("crash").physical != reference_physical
        assert ids == reference[0] and texts == reference[1]
        np.testing.assert_allclose(vectors, reference[2], atol=1e-6)  # same model, same passages
    return kills


def test_crash_loop_on_the_embedded_backend(source, tmp_path):
    from hybrid_search.backends.embedded import EmbeddedBackend

    data = tmp_path / "data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    kills = _crash_loop(source, ["--data-dir", str(data)], lambda: EmbeddedBackend(data_dir=data), env)
    assert kills == len(KILLS) >= 5


@pytest.mark.integration
def test_crash_loop_on_elasticsearch(source, tmp_path, noida_url):
    from hybrid_search.backends.elasticsearch import ElasticsearchBackend
    from hybrid_search.config.settings import BackendSettings

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--data-dir", str(tmp_path / "data"), "--backend", "elasticsearch", "--url", noida_url]
    with ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(noida_url,))) as backend:
        backend.drop_index("crash")
    kills = _crash_loop(
        source, common, lambda: ElasticsearchBackend(BackendSettings(kind="elasticsearch", urls=(noida_url,))), env
    )
    assert kills == len(KILLS) >= 5
