"""``hybrid-search bench writes``: incremental write rates (append, upsert changed, upsert unchanged,
delete, compact) beside the full-build rate of the same corpus, measured in the same run.

Records carry precomputed unit vectors (the write path, not the encoder, is what is timed; ``bench
encode`` times encoding), so the figures compare storage work alike. Runs on the configured backend in a
fresh index under the data dir, dropped afterwards.
"""

from __future__ import annotations

import platform
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hybrid_search.config.settings import Settings

__all__ = ["bench_writes"]

_DIMS = 384


def _records(start: int, n: int, version: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    vectors = rng.standard_normal((n, _DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = ("bread", "river", "volcano", "chess", "violin", "harbour", "glacier", "orchard")
    return [
        {
            "id": f"d{i}",
            "title": f"document {i}",
            "text": f"{words[i % 8]} {words[(i * 7) % 8]} note {i} version {version}",
            "vector": vectors[j].tolist(),
            "group": i % 10,
        }
        for j, i in enumerate(range(start, start + n))
    ]


def bench_writes(settings: Settings, docs: int, batch: int) -> dict[str, Any]:
    """Build ``docs`` documents, then time ``batch``-record incremental writes of each kind into them."""
    from hybrid_search.app.client import HybridSearch
    from hybrid_search.ingest.sources import FieldMap

    rng = np.random.default_rng(0)
    base = _records(0, docs, 0, rng)
    fresh = _records(docs, batch, 0, rng)
    changed = _records(0, batch, 1, rng)
    fields = FieldMap(vector_field="vector", metadata_fields=("group",))
    report: dict[str, Any] = {
        "bench": "writes",
        "backend": settings.backend.kind,
        "docs": docs,
        "batch": batch,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "note": "precomputed vectors: storage work only; rates in records per second of wall time",
    }
    hs = HybridSearch.from_settings(settings, index="bench-writes")
    try:
        t = time.perf_counter()
        hs.ingest(base, fields=fields)
        build = time.perf_counter() - t
        report["full_build_docs_per_s"] = round(docs / build, 1)
        runs = {
            "append": lambda: hs.add(fresh, fields=fields),
            "upsert_changed": lambda: hs.upsert(changed, fields=fields),
            "upsert_unchanged": lambda: hs.upsert(changed, fields=fields),
            "delete": lambda: hs.delete_documents([r["id"] for r in fresh]),
        }
        for name, run in runs.items():
            t = time.perf_counter()
            summary = run()
            seconds = time.perf_counter() - t
            report[f"{name}_docs_per_s"] = round(batch / seconds, 1)
            report[f"{name}_vs_full_build"] = round(batch / seconds / report["full_build_docs_per_s"], 3)
            report[f"{name}_summary"] = summary.to_dict()
        t = time.perf_counter()
        report["compact"] = {**hs.compact(), "seconds": round(time.perf_counter() - t, 3)}
        hs.drop()
    finally:
        hs.close()
    return report
