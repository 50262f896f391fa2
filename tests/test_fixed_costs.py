"""No fixed costs a job does not need: storing records that carry their vectors (a build or an upsert), and
a BM25 search, never import torch or load a model (a fresh process, as a user's first command is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from hybrid_search import HybridSearch
    records = [json.loads(line) for line in open(sys.argv[2])]
    with HybridSearch(index="given", data_dir=sys.argv[1]) as hs:
        built = hs.ingest(records[:20], vector_field="vec")
        upserted = hs.upsert(records, vector_field="vec")
        hits = hs.search("note", mode="bm25").hits
    print(json.dumps({"stored": built.stored, "added": upserted.added, "hits": len(hits),
                      "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
    """
)


def test_storing_given_vectors_imports_no_torch(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "given.jsonl"
    with source.open("w") as fh:
        for i in range(30):
            v = rng.standard_normal(384)
            fh.write(json.dumps({"id": f"g{i}", "text": f"note {i}", "vec": (v / np.linalg.norm(v)).tolist()}) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(source)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"stored": 20, "added": 10, "hits": 10, "torch": False, "transformers": False}
