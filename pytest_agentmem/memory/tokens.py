"""Counting tokens with a real tokenizer, offline: the embedding model's own.

Token savings (what a memory layer saves a language model's context) are
tokens of the retrieved memories against tokens of the whole history. They are
counted with the offline all-MiniLM-L6-v2 tokenizer (BERT's uncased WordPiece,
30,522 entries, the ``tokenizer.json`` the embedder loads): a real subword
tokenizer, though not an LLM's own (a byte-pair tokenizer such as cl100k
counts somewhat differently; the ratio of two counts moves much less than the
counts). Texts are counted whole, without the model's truncation, padding or
special tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .embed_model import INSTALL_HINT, EmbedderMissingError, minilm_tokenizer_path


class TokenCounter:
    """Counts the tokens of texts with a ``tokenizers`` tokenizer read from a ``tokenizer.json``."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.name = name

    @classmethod
    def load(cls, path: str | Path | None = None) -> TokenCounter:
        """The tokenizer at ``path``; by default the offline embedding model's."""
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise EmbedderMissingError("the tokenizers package is not installed", hint=INSTALL_HINT) from None
        where = Path(path) if path is not None else minilm_tokenizer_path()
        if not where.is_file():
            raise EmbedderMissingError(f"no tokenizer at {where}", hint=INSTALL_HINT)
        return cls(Tokenizer.from_file(str(where)), where.parent.name)

    def count(self, text: str) -> int:
        """Tokens of one text (no special tokens, never truncated)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Iterable[str]) -> list[int]:
        """Tokens of each text, encoded in one batch."""
        texts = list(texts)
        if not texts:
            return []
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


def token_savings(retrieved: float, full: float) -> float:
    """``1 - retrieved / full``: the share of the full history's tokens a retrieval leaves out."""
    if full <= 0:
        raise ValueError(f"the full history has {full} tokens; nothing to save from")
    return 1.0 - retrieved / full
