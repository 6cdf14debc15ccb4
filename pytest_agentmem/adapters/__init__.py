"""Adapters: other memory systems behind the ``memory_service`` verbs, so the shipped
scenarios run against them unchanged (one fixture override in a conftest).

- :mod:`.mem0`: Mem0 OSS (``mem0ai``, the optional extra ``mem0``) on the run's
  Postgres/pgvector and the run's embedding model, with no LLM.
"""
