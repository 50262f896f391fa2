"""The chunking modes ``--chunking`` names (``ingest.chunking``), parsed and checked where settings are read;
``ingest.chunking`` splits texts by them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hybrid_search.config.errors import ConfigError

__all__ = ["ChunkKind", "Chunking"]

ChunkKind = Literal["auto", "none", "words", "sentences", "tokens"]


@dataclass(frozen=True, slots=True)
class Chunking:
    """A chunking mode as ``--chunking`` names it: ``auto``, ``none`` or ``KIND:SIZE:OVERLAP``."""

    kind: ChunkKind = "auto"
    size: int = 0
    overlap: int = 0

    @classmethod
    def parse(cls, text: str) -> Chunking:
        """``auto``, ``none``, ``words:200:20``, ``sentences:5:1``, ``tokens:256:32`` (overlap optional, 0)."""
        parts = text.strip().lower().split(":")
        kind = parts[0]
        usage = (
            f"unknown chunking {text!r}: use auto, none, or words|sentences|tokens:SIZE[:OVERLAP] "
            "(e.g. sentences:5:1, tokens:256:32), SIZE > OVERLAP >= 0"
        )
        if kind not in get_args(ChunkKind):
            raise ConfigError(usage)
        if kind in ("auto", "none"):
            if len(parts) != 1:
                raise ConfigError(usage)
            return cls(kind)  # type: ignore[arg-type]
        try:
            size = int(parts[1])
            overlap = int(parts[2]) if len(parts) == 3 else 0
        except (IndexError, ValueError):
            raise ConfigError(usage) from None
        if len(parts) > 3 or size < 1 or not 0 <= overlap < size:
            raise ConfigError(usage)
        return cls(kind, size, overlap)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.kind if self.kind in ("auto", "none") else f"{self.kind}:{self.size}:{self.overlap}"

    @property
    def splits(self) -> bool:
        """Whether documents may get more than one passage (every mode but ``none``)."""
        return self.kind != "none"
