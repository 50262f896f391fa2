"""The learned-sparse encoder (SPLADE): a masked-language model's logits turned into token weights.

``weight(t) = max over the text's tokens of log(1 + relu(logit_t))`` (Formal et al., "SPLADE v2", 2021), as
sentence-transformers' ``SparseEncoder`` computes it with its SPLADE pooling; queries go through the same model
(not inference-free). A vector is a ``{token: weight}`` mapping of the non-zero entries (about 20 for a query,
150 for a passage out of 30,522). Tokens that no engine accepts as a feature name (a ``.`` inside, or the
model's special tokens) are dropped on both sides, so documents and queries stay comparable.

Batching, devices and dtypes are the bi-encoder's (``encoding.encoder``). The model loads on first use.
This module must never talk to a search backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from hybrid_search.config.errors import ConfigError
from hybrid_search.config.settings import ModelSettings
from hybrid_search.encoding.encoder import TransformerParts, pad_encodings, plan_batches
from hybrid_search.encoding.models import model_identity

__all__ = ["SparseEncoder", "SparseVector", "check_sparse_vector", "sparse_dot"]

SparseVector = dict[str, float]

DEFAULT_MAX_LENGTH = 256


def check_sparse_vector(value: object) -> SparseVector | str:
    """``value`` as a sparse vector (token -> positive finite weight, no ``.`` in a token), or why not."""
    if not isinstance(value, dict):
        return f"a sparse vector must be an object of token -> weight, not {type(value).__name__}"
    out: SparseVector = {}
    for token, weight in value.items():
        if not isinstance(token, str) or not token or "." in token:
            return f"sparse token {token!r} must be non-empty text without '.'"
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not np.isfinite(weight) or weight <= 0:
            return f"sparse weight of {token!r} must be a positive finite number, got {weight!r}"
        out[token] = float(weight)
    return out


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    """The dot product of two sparse vectors (what every backend's sparse score is)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return float(sum(w * large[t] for t, w in small.items() if t in large))


class SparseEncoder(TransformerParts):
    """SPLADE encoding with transformers ``AutoModelForMaskedLM``. Construction loads nothing."""

    auto_class = "AutoModelForMaskedLM"

    def __init__(self, model: str, *, settings: ModelSettings | None = None) -> None:
        if not model:
            raise ConfigError("a sparse encoder needs a model: a hub id, a local folder, or splade-tiny (offline)")
        self.model_name = model_identity(model)
        self.settings = settings or ModelSettings()

    @cached_property
    def max_length(self) -> int:
        return self.settings.max_length or DEFAULT_MAX_LENGTH

    @cached_property
    def _vocabulary(self) -> tuple[np.ndarray, list[str]]:
        """Which output ids may carry weight (a boolean mask) and each id's token text."""
        vocab = self._hf_tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            tokens[i] = token
        special = set(self._hf_tokenizer.all_special_tokens)
        keep = np.asarray([bool(t) and "." not in t and t not in special for t in tokens], dtype=bool)
        return keep, tokens

    def encode_queries(self, queries: Sequence[str]) -> list[SparseVector]:
        return self.encode(queries)

    def encode_documents(self, passages: Sequence[str]) -> list[SparseVector]:
        return self.encode(passages)

    def encode(self, texts: Sequence[str]) -> list[SparseVector]:
        """One sparse vector per text, in order (an empty mapping for a text that weighs nothing)."""
        import torch

        out: list[SparseVector] = [{} for _ in texts]
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        pad_id = self._hf_tokenizer.pad_token_id or 0
        with_types = "token_type_ids" in self._hf_tokenizer.model_input_names
        keep, tokens = self._vocabulary
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.batch_tokens, self.settings.max_batch_size):
                arrays = pad_encodings([encodings[i] for i in batch], pad_id, with_types)
                inputs = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
                logits = self._model(**inputs).logits.float()
                padding = ~inputs["attention_mask"].bool().unsqueeze(-1)
                # relu and log1p rise monotonically, so the max over tokens comes first and the activation runs on
                # one vocabulary row per text: the same weights as activating every token, without four passes
                # over a (texts x tokens x vocabulary) tensor (measured 3.1 s -> 0.4 s for 32 passages on a CPU)
                peak = logits.masked_fill_(padding, float("-inf")).amax(dim=1)
                weights = torch.log1p(torch.relu(peak)).cpu().numpy()  # one transfer
                weights[:, ~keep[: weights.shape[1]]] = 0.0
                for row, i in zip(weights, batch, strict=True):
                    ids = np.flatnonzero(row > 0)
                    out[i] = {tokens[j]: float(row[j]) for j in ids}
        return out
