"""Deprecated module name: training lives in ``hybrid_search.app.training`` (pairs, mining, trainers, quality)."""

from hybrid_search.app.training import *  # noqa: F403
from hybrid_search.app.training import __all__  # noqa: F401
