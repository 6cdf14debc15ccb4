"""The token counter: the embedding model's own tokenizer, offline, never truncating."""

from __future__ import annotations

import pytest

from pytest_agentmem.memory.embed_model import EmbedderMissingError
from pytest_agentmem.memory.tokens import TokenCounter, token_savings


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    try:
        return TokenCounter.load()
    except EmbedderMissingError as exc:
        pytest.skip(str(exc))


def test_counts_a_known_string(counter: TokenCounter) -> None:
    # BERT uncased WordPiece: hello , world ! / una ##ffa ##ble token ##ization
    assert counter.count("Hello, world!") == 4
    assert counter.count("unaffable tokenization") == 5
    assert counter.count("") == 0
    assert counter.count_many(["Hello, world!", "unaffable tokenization"]) == [4, 5]
    assert counter.count_many([]) == []


def test_never_truncates_nor_pads(counter: TokenCounter) -> None:
    long = "memory " * 2_000  # far past the model's 256-token limit
    assert counter.count(long) == 2_000
    assert counter.count_many(["a", long]) == [1, 2_000]


def test_savings() -> None:
    assert token_savings(50, 1000) == pytest.approx(0.95)
    assert token_savings(0, 10) == 1.0
    with pytest.raises(ValueError, match="nothing to save"):
        token_savings(1, 0)


def test_missing_tokenizer_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EmbedderMissingError, match="(?s)no tokenizer at .*hint: install"):
        TokenCounter.load(tmp_path / "tokenizer.json")
