"""The one rule for what models read of a document: its title, a space, its text (BEIR's convention); and the
names of the text analyzers BM25 uses, with the CJK segmentation the embedded backend applies.

Encoders, cross-encoders, duplicate checks and corpus statistics all read a document through
``passage_text``, so a change of convention is made here once.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal, get_args

__all__ = ["ANALYZERS", "LANGUAGES", "Analyzer", "cjk_bigrams", "has_cjk", "passage_text"]


def passage_text(title: str, text: str) -> str:
    """``title text`` with the ends trimmed (a document without a title reads as its text alone)."""
    return f"{title} {text}".strip()


# --- text analyzers: the names a user picks, the same behaviour on every backend (each backend maps them) ---
Analyzer = Literal["standard", "english", "folding", "cjk", "french", "german", "spanish", "italian", "portuguese"]
ANALYZERS: tuple[str, ...] = get_args(Analyzer)
LANGUAGES = ("english", "french", "german", "spanish", "italian", "portuguese")  # stop words and a stemmer each

# Han, Hiragana, Katakana, Hangul (and their compatibility blocks): written without spaces between words
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\u31f0-\u31ff]+")


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds Chinese, Japanese or Korean script."""
    return _CJK_RUN.search(text) is not None


def cjk_bigrams(text: str) -> str:
    """Runs of CJK characters rewritten as their overlapping bigrams (a lone character stays a unigram),
    after width folding (NFKC), as Elasticsearch's ``cjk`` analyzer segments them: ``緑茶が好き`` reads as
    ``緑茶 茶が が好 好き``. Other text is left as it is."""

    def pairs(match: re.Match[str]) -> str:
        run = match.group(0)
        grams = [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
        return f" {' '.join(grams)} "

    return _CJK_RUN.sub(pairs, unicodedata.normalize("NFKC", text))
