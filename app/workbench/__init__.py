"""The search workbench: ``hybrid-search serve`` (or ``create_app`` mounted in any ASGI server) serves a JSON
API and a page that compares modes side by side, shows why each hit is where it is, and saves judgements
that ``eval`` and ``tune`` read. Needs the ``serve`` extra (Starlette, uvicorn)."""

from hybrid_search.app.workbench.judgements import Judgements, JudgementStore, query_id
from hybrid_search.app.workbench.service import Workbench, rbo

__all__ = ["JudgementStore", "Judgements", "Workbench", "create_app", "query_id", "rbo"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # Starlette is imported only when the app is made
        from hybrid_search.app.workbench.api import create_app

        return create_app
    raise AttributeError(name)
