"""The one rule for what models read of a document: its title, a space, its text (BEIR's convention).

Encoders, cross-encoders, duplicate checks and corpus statistics all read a document through
``passage_text``, so a change of convention is made here once.
"""

from __future__ import annotations

__all__ = ["passage_text"]


def passage_text(title: str, text: str) -> str:
    """``title text`` with the ends trimmed (a document without a title reads as its text alone)."""
    return f"{title} {text}".strip()
