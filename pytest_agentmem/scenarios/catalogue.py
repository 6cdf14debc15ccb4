"""The whole scenario catalogue, as one import::

    # tests/perf/test_catalogue.py
    from pytest_agentmem.scenarios.catalogue import *  # noqa: F401,F403

=====================  =============================================  ====================
scenario               module                                         fixtures
=====================  =============================================  ====================
memory creation        :mod:`.standard` (add, add_batch)              ``memory_service``
memory retrieval       :mod:`.standard` (search, update/delete)       ``memory_service``
vector search          :mod:`.vector_search` (pgvector, LanceDB;      ``memory_repo``,
                       unfiltered, 1 % and 99 % filters; recall)      ``lancedb_store``
graph reasoning        :mod:`.graph` (1-, 2-, 3-hop)                  ``graph_store``
batch operations       :mod:`.batch` (add, update, delete by 100)     ``memory_repo``
caches                 :mod:`.caches` (result cache),                 ``memory_service``,
                       :mod:`.embedding` (model and embedding cache)  ``embedder``
accuracy               :mod:`.locomo` (LoCoMo evidence recall)        ``memory_service``
concurrent users       :mod:`.users` (1,000 -> 20,000 agents, audit)  ``memory_service``
=====================  =============================================  ====================

Each scenario checks correctness beside speed and runs against whatever its
fixtures give (override them in your conftest to measure your own system).
Sizes scale with ``$AGENTMEM_SCENARIO_SCALE`` (:mod:`.sizing`). Import a module
alone to run only its scenarios.
"""

from __future__ import annotations

from .batch import *  # noqa: F401,F403
from .batch import __all__ as _batch
from .caches import *  # noqa: F401,F403
from .caches import __all__ as _caches
from .embedding import *  # noqa: F401,F403
from .embedding import __all__ as _embedding
from .graph import *  # noqa: F401,F403
from .graph import __all__ as _graph
from .locomo import *  # noqa: F401,F403
from .locomo import __all__ as _locomo
from .standard import *  # noqa: F401,F403
from .standard import __all__ as _standard
from .users import *  # noqa: F401,F403
from .users import __all__ as _users
from .vector_search import *  # noqa: F401,F403
from .vector_search import __all__ as _vector_search

__all__ = [*_standard, *_vector_search, *_graph, *_batch, *_caches, *_embedding, *_locomo, *_users]
