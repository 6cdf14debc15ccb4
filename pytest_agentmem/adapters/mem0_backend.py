"""Build a Mem0 OSS ``AsyncMemory`` that runs offline: no telemetry, no LLM, our model.

What :func:`build_async_memory` sets up, and why:

- ``MEM0_TELEMETRY=False`` before ``mem0`` is imported (Mem0 reads it at import
  time; with it off, Mem0 sends no events and evaluates no remote notice flags);
  if something imported ``mem0`` earlier, its telemetry flags are cleared.
- The embedder is Mem0's own fastembed provider (``FastEmbedEmbedding``, whose
  ``embed`` makes one model call per text) given the fastembed model that
  :func:`~pytest_agentmem.memory.embed_model.load_model` loads from the same
  offline files as the run's ``embedder``: same weights, same vectors, and
  nothing is fetched from a model hub.
- Mem0 insists on an LLM configuration even with ``infer=False``. It gets an
  OpenAI one with a placeholder key and an unreachable local base URL, and the
  LLM object is then replaced by :class:`ForbiddenLLM`, which counts calls and
  raises: an ``infer=False`` path that reached an LLM would fail loudly, and
  ``llm_calls`` proves afterwards that none was made.
- spaCy (Mem0's optional lemmatiser and entity extractor): when spaCy is
  installed without its ``en_core_web_sm`` model, Mem0 would download the model
  on first use; the download is prevented, and Mem0 then falls back to raw text
  as it does without spaCy.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..errors import AgentmemError
from ..memory.embed_model import LoadedModel, default_cache_dir, load_model

INSTALL_HINT = "pip install 'pytest-agentmem[mem0]'  (mem0ai and psycopg with its pool)"
#: Where the unused LLM configuration points: a closed local port, never a real service.
UNREACHABLE_LLM_URL = "http://127.0.0.1:9/no-llm"


class Mem0MissingError(AgentmemError, ImportError):
    """``mem0ai`` (or the psycopg driver its pgvector store needs) is not installed."""


class Mem0LLMCalled(AgentmemError):
    """Mem0 tried to call an LLM although the adapter only uses ``infer=False`` paths."""


class ForbiddenLLM:
    """Mem0's LLM slot: counts every call and refuses it (``infer=False`` needs no LLM)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def generate_response(self, *args: Any, **kwargs: Any) -> str:
        with self._lock:
            self.calls += 1
        raise Mem0LLMCalled("Mem0 called its LLM: the adapter stores and searches with infer=False only, "
                            "so this is a Mem0 code path the adapter does not expect")


def import_mem0() -> Any:
    """Import ``mem0`` with telemetry off; :class:`Mem0MissingError` (with the fix) if absent."""
    os.environ["MEM0_TELEMETRY"] = "False"
    try:
        import mem0
        import mem0.memory.main  # noqa: F401 - the AsyncMemory class
        import mem0.vector_stores.pgvector  # noqa: F401 - needs psycopg (or psycopg2)
    except ImportError as exc:
        raise Mem0MissingError(f"Mem0 OSS cannot be imported ({exc}); install it: {INSTALL_HINT}") from None
    _telemetry_off()
    _no_spacy_download()
    return mem0


def _telemetry_off() -> None:
    """Telemetry off also when ``mem0`` was imported before the variable was set.

    Mem0 reads ``MEM0_TELEMETRY`` once at import; ``capture_event``, the notices and
    ``AsyncMemory.__init__`` consult the module flags set from it, so those are cleared.
    """
    from mem0.memory import main, telemetry

    telemetry.MEM0_TELEMETRY = False
    main.MEM0_TELEMETRY = False


def _no_spacy_download() -> None:
    """Stop Mem0 from downloading spaCy's model at first use (it would reach the network)."""
    try:
        import spacy
    except ImportError:
        return  # Mem0 falls back to raw text by itself
    if spacy.util.is_package("en_core_web_sm"):
        return
    from mem0.utils import spacy_models

    spacy_models._load_failed_full = True
    spacy_models._load_failed_lemma = True


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(model_name: str, cache_dir: str | Path | None = None) -> LoadedModel:
    """The fastembed model ``model_name`` loaded from the offline files, once per process."""
    with _MODELS_LOCK:
        if model_name not in _MODELS:
            _MODELS[model_name] = load_model(model_name, cache_dir=cache_dir or default_cache_dir())
        return _MODELS[model_name]


def _embedding_class() -> type:
    from mem0.embeddings.fastembed import FastEmbedEmbedding

    class OfflineFastEmbedEmbedding(FastEmbedEmbedding):  # type: ignore[misc]
        """Mem0's fastembed embedder (its ``embed`` unchanged) on an already loaded model."""

        def __init__(self, loaded: LoadedModel) -> None:
            from mem0.configs.embeddings.base import BaseEmbedderConfig

            self.config = BaseEmbedderConfig(model=loaded.model_name, embedding_dims=loaded.dim)
            self.dense_model = loaded.model

    return OfflineFastEmbedEmbedding


def build_async_memory(*, dsn: str, loaded: LoadedModel, history_db: str | Path,
                       collection: str = "mem0", hnsw: bool = True, maxconn: int = 16) -> Any:
    """An offline ``mem0.AsyncMemory`` on the Postgres database ``dsn`` (see the module doc).

    ``hnsw``: Mem0's pgvector option (its default: an HNSW index); ``maxconn``: its
    connection pool's size. Its ``llm`` is a :class:`ForbiddenLLM`. Blocking (it
    connects and creates Mem0's table): call it in a thread from async code.
    """
    import_mem0()
    from mem0.configs.base import MemoryConfig
    from mem0.memory.main import AsyncMemory

    config = MemoryConfig(
        vector_store={"provider": "pgvector",
                      "config": {"connection_string": dsn, "collection_name": collection,
                                 "embedding_model_dims": loaded.dim, "hnsw": hnsw,
                                 "minconn": 1, "maxconn": maxconn}},
        llm={"provider": "openai", "config": {"api_key": "unused-no-llm", "model": "unused",
                                              "openai_base_url": UNREACHABLE_LLM_URL}},
        embedder={"provider": "openai", "config": {"api_key": "unused-replaced",
                                                   "openai_base_url": UNREACHABLE_LLM_URL,
                                                   "embedding_dims": loaded.dim}},
        history_db_path=str(history_db),
    )
    memory = AsyncMemory(config)
    # Mem0 creates its table lazily at the first call of each thread that finds it
    # missing; concurrent first writes then race (CREATE TABLE IF NOT EXISTS fails with
    # a unique violation on pg_type). Created here, once, before any concurrent use.
    memory.vector_store.create_col()
    memory.embedding_model = _embedding_class()(loaded)
    memory.llm = ForbiddenLLM()
    return memory


def close_async_memory(memory: Any) -> None:
    """Close the history database and the pgvector connection pool of ``memory``."""
    memory.close()
    pool = getattr(getattr(memory, "vector_store", None), "connection_pool", None)
    if pool is not None:
        close = getattr(pool, "close", None) or getattr(pool, "closeall", None)
        if close is not None:
            close()
