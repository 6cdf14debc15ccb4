"""SQL of the Postgres repository's lexical and hybrid (lexical + dense) search.

Lexical ranking is Postgres' own full-text search: a generated ``tsvector``
column (:data:`TSV_COLUMN`, text search configuration :data:`TEXT_SEARCH_CONFIG`)
with a GIN index, ranked by ``ts_rank``. The query is an **OR** of the query
text's lexemes (stemmed, stop words dropped, by the same configuration):
``plainto_tsquery`` ANDs them and a question of eight words then matches almost
nothing. Hybrid search runs both branches in ONE statement: a dense CTE (the
caller's, exact or through the HNSW index) and a lexical CTE, each with its own
LIMIT (:data:`FUSION_DEPTH`), joined by a FULL OUTER JOIN and ordered by the
reciprocal rank fusion score ``1/(k + dense rank) + 1/(k + lexical rank)``
(:data:`RRF_K`). Both branches apply the same WHERE clause, so scopes and
metadata filters hold for every row either returns.

Choices, measured on LoCoMo (categories 1-4, 1,533 questions, evidence recall@10, branch lists fused offline;
dense alone 0.448; ``tests/bench/test_retrieval_quality.py`` reproduces the
ablation):

* ranking ``ts_rank`` (0.600 alone) over ``ts_rank_cd`` (0.580) and a BM25
  computed in SQL (0.611 alone, but 0.633 fused against ``ts_rank``'s 0.643 and
  several times the CPU: it unnests every candidate's lexemes);
* configuration ``english`` (stemming, stop words) over ``simple`` (0.522 alone);
* ``k = 10``: with two lists and a top-heavy metric a small k rewards agreement
  at the top; fused recall@10 was 0.632-0.645 for k from 2 to 15 and fell to
  0.59 at the customary k = 60 (made for fusing many deep lists);
* depth 50 per branch (0.643; 25: 0.635; 100: 0.642), equal weights (a dense
  weight of 0.7 or 1.5: 0.638 and 0.603).
"""

from __future__ import annotations

from .model import SEARCH_MODES

#: The generated column holding the memory's lexemes.
TSV_COLUMN = "content_tsv"
#: Text search configuration of the column and of the query (stemming + stop words).
TEXT_SEARCH_CONFIG = "english"
#: Reciprocal rank fusion constant (module doc).
RRF_K = 10
#: Rows each branch contributes to the fusion (at least the search's limit).
FUSION_DEPTH = 50
__all__ = ["SEARCH_MODES", "TSV_COLUMN", "TEXT_SEARCH_CONFIG", "RRF_K", "FUSION_DEPTH"]


def tsv_column_sql() -> str:
    """The column definition (CREATE TABLE or ALTER TABLE ... ADD COLUMN)."""
    return (f"{TSV_COLUMN} tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, content)) STORED")


def or_query_sql(text_param: str) -> str:
    """A scalar subquery: the tsquery ORing the lexemes of ``text_param``, NULL if it has none.

    The lexemes come from ``to_tsvector`` with the column's configuration, so
    they match the stored ones exactly; each is quoted for the tsquery syntax
    (backslash and quote doubled), so no user text is parsed as an operator.
    """
    quoted = "'''' || replace(replace(l.lexeme, '\\', '\\\\'), '''', '''''') || ''''"
    return (f"(SELECT NULLIF(string_agg({quoted}, ' | '), '')::tsquery "
            f"FROM unnest(to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, {text_param})) l)")


def lexical_cte(table: str, where_sql: str, text_param: str, depth_param: str) -> str:
    """CTEs ``lq`` (the query) and ``l`` (id, r = rank from 1, score) of the lexical branch."""
    return (f"lq AS (SELECT {or_query_sql(text_param)} AS q), "
            f"l AS MATERIALIZED (SELECT id, row_number() OVER (ORDER BY score DESC, id) AS r, score FROM ("
            f"SELECT m.id, ts_rank(m.{TSV_COLUMN}, lq.q) AS score FROM {table} m, lq "
            f"WHERE {where_sql} AND m.{TSV_COLUMN} @@ lq.q "
            f"ORDER BY score DESC, m.id LIMIT {depth_param}) x)")


def exact_dense_cte(table: str, where_sql: str, depth_param: str, cap_param: str) -> str:
    """CTE ``d`` (id, r, matched) of the dense branch by an exact scan of at most ``cap`` + 1 rows.

    ``matched`` is how many rows the filter matched (``cap + 1``: more than the
    cap; the ranks are then not the answer). ``$1`` is the query vector.
    """
    return (f"d AS MATERIALIZED (SELECT id, r, matched FROM ("
            f"SELECT s.id, row_number() OVER (ORDER BY s.embedding <=> $1, s.id) AS r, "
            f"count(*) OVER () AS matched "
            f"FROM (SELECT id, embedding FROM {table} WHERE {where_sql} LIMIT {cap_param}) s) x "
            f"WHERE r <= {depth_param})")


def index_dense_cte(table: str, where_sql: str, fetch_param: str, depth_param: str) -> str:
    """CTE ``d`` (id, r, matched = 0) of the dense branch through the HNSW index.

    The index is asked for ``fetch`` rows (relaxed order under an iterative
    scan), which are re-ranked by distance and cut to ``depth``.
    """
    return (f"d AS MATERIALIZED (SELECT id, r, 0::bigint AS matched FROM ("
            f"SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM ("
            f"SELECT id, embedding <=> $1 AS distance FROM {table} WHERE {where_sql} "
            f"ORDER BY embedding <=> $1 LIMIT {fetch_param}) i) x WHERE r <= {depth_param})")


def fused_sql(table: str, columns: str, dense: str, lexical: str, limit_param: str,
              k: int = RRF_K) -> str:
    """The hybrid statement: rows of ``table`` (``columns``) with ``score`` (the RRF
    score), ``dense_n`` (rows of the dense branch) and ``matched`` (the exact
    dense branch's count, else 0), best first."""
    k = int(k)
    return (f"WITH {dense}, {lexical}, "
            f"f AS (SELECT coalesce(d.id, l.id) AS fid, "
            f"coalesce(1.0 / ({k} + d.r), 0) + coalesce(1.0 / ({k} + l.r), 0) AS fscore, "
            f"d.r AS dr, l.r AS lr FROM d FULL OUTER JOIN l ON d.id = l.id "
            f"ORDER BY fscore DESC, dr NULLS LAST, lr NULLS LAST LIMIT {limit_param}) "
            f"SELECT {columns}, f.fscore::float8 AS score, (SELECT count(*) FROM d) AS dense_n, "
            f"(SELECT coalesce(max(matched), 0) FROM d) AS matched "
            f"FROM f JOIN {table} t ON t.id = f.fid ORDER BY f.fscore DESC, f.dr NULLS LAST, f.lr NULLS LAST")


def lexical_sql(table: str, columns: str, lexical: str, limit_param: str) -> str:
    """The lexical-only statement: rows with ``score`` = ``ts_rank``, best first."""
    return (f"WITH {lexical} SELECT {columns}, l.score::float8 AS score FROM l JOIN {table} t ON t.id = l.id "
            f"WHERE l.r <= {limit_param} ORDER BY l.r")
