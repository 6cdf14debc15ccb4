"""In-memory adjacency of one user's graph: CSR arrays plus a small delta overlay.

Entities are numbered densely; edges live in three CSR structures (outgoing,
incoming and both), each ``ptr`` (n+1), ``nbr`` (m), ``pred`` (m) and an ``alive`` mask
(deletions tombstone an edge instead of rebuilding). Edges added since the last
build sit in per-node overlay lists. When the overlay plus tombstones grow past
a fraction of the graph, :meth:`compact` rebuilds the CSR (a few tens of ms for
100k edges). All methods are synchronous and never await, so under asyncio a
query always sees a consistent index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

Edge = tuple[int, int, int]  # (subject id, predicate id, object id)

DIRECTIONS = ("out", "in", "both")


class _Csr:
    __slots__ = ("ptr", "nbr", "pred", "alive", "n")

    def __init__(self, n: int, src: np.ndarray, dst: np.ndarray, pred: np.ndarray) -> None:
        order = np.lexsort((dst, src))
        self.n = n
        self.nbr = dst[order].astype(np.int32)
        self.pred = pred[order].astype(np.int32)
        counts = np.bincount(src, minlength=n) if src.size else np.zeros(n, np.int64)
        self.ptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=self.ptr[1:])
        self.alive = np.ones(self.nbr.shape[0], bool)

    def gather(self, frontier: np.ndarray, pred: int | None) -> np.ndarray:
        """Neighbours (with repeats) of the frontier nodes that the CSR covers."""
        if frontier.shape[0] == 1:  # the first hop: one slice
            node = int(frontier[0])
            if node >= self.n:
                return frontier[:0]
            lo, hi = self.ptr[node], self.ptr[node + 1]
            keep = self.alive[lo:hi]
            if pred is not None:
                keep = keep & (self.pred[lo:hi] == pred)
            return self.nbr[lo:hi][keep]
        nodes = frontier[frontier < self.n]
        if nodes.size == 0:
            return nodes
        starts = self.ptr[nodes]
        lens = self.ptr[nodes + 1] - starts
        total = int(lens.sum())
        if total == 0:
            return np.empty(0, np.int32)
        ends = np.cumsum(lens)
        positions = np.repeat(starts - ends + lens, lens) + np.arange(total)
        keep = self.alive[positions]
        if pred is not None:
            keep &= self.pred[positions] == pred
        return self.nbr[positions[keep]]

    def edges_of(self, node: int) -> Iterator[tuple[int, int]]:
        if node >= self.n:
            return
        for pos in range(int(self.ptr[node]), int(self.ptr[node + 1])):
            if self.alive[pos]:
                yield int(self.nbr[pos]), int(self.pred[pos])

    def kill(self, node: int, nbr: int, pred: int) -> bool:
        if node >= self.n:
            return False
        lo, hi = int(self.ptr[node]), int(self.ptr[node + 1])
        for pos in range(lo + int(np.searchsorted(self.nbr[lo:hi], nbr)), hi):
            if self.nbr[pos] != nbr:
                break
            if self.pred[pos] == pred and self.alive[pos]:
                self.alive[pos] = False
                return True
        return False


class AdjacencyIndex:
    """One user's graph for fast neighbourhood and path queries."""

    def __init__(self, triples: Iterable[tuple[str, str, str]] = (), *,
                 compact_ratio: float = 0.1, compact_min: int = 1024) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self.predicates: list[str] = []
        self.predicate_ids: dict[str, int] = {}
        self.edges: set[Edge] = set()
        self.compact_ratio = compact_ratio
        self.compact_min = compact_min
        for s, p, o in triples:
            self.edges.add((self.entity_id(s), self.predicate_id(p), self.entity_id(o)))
        self.compactions = 0
        self._build()

    # ------------------------------------------------------------------ building

    def entity_id(self, name: str) -> int:
        found = self.ids.get(name)
        if found is None:
            found = self.ids[name] = len(self.names)
            self.names.append(name)
        return found

    def predicate_id(self, name: str) -> int:
        found = self.predicate_ids.get(name)
        if found is None:
            found = self.predicate_ids[name] = len(self.predicates)
            self.predicates.append(name)
        return found

    def _build(self) -> None:
        n = len(self.names)
        arr = np.array(sorted(self.edges), np.int64).reshape(-1, 3)
        src, pred, dst = arr[:, 0], arr[:, 1], arr[:, 2]
        self._out = _Csr(n, src, dst, pred)
        self._in = _Csr(n, dst, src, pred)
        # Both directions in one structure: one gather per hop for direction="both".
        self._both = _Csr(n, np.concatenate([src, dst]), np.concatenate([dst, src]),
                          np.concatenate([pred, pred]))
        self._name_array = np.array(self.names, dtype=object)
        self._add_out: dict[int, list[tuple[int, int]]] = {}
        self._add_in: dict[int, list[tuple[int, int]]] = {}
        self._delta = 0

    def compact(self) -> None:
        """Fold the overlay and tombstones into fresh CSR arrays."""
        self._build()
        self.compactions += 1

    @property
    def delta(self) -> int:
        """Edges added or deleted since the last build."""
        return self._delta

    def _maybe_compact(self) -> None:
        if self._delta > max(self.compact_min, self.compact_ratio * len(self.edges)):
            self.compact()

    # ------------------------------------------------------------------ writes

    def add(self, subject: str, predicate: str, obj: str) -> bool:
        edge = (self.entity_id(subject), self.predicate_id(predicate), self.entity_id(obj))
        if edge in self.edges:
            return False
        s, p, o = edge
        self.edges.add(edge)
        self._add_out.setdefault(s, []).append((o, p))
        self._add_in.setdefault(o, []).append((s, p))
        self._delta += 1
        self._maybe_compact()
        return True

    def remove(self, subject: str, predicate: str, obj: str) -> bool:
        s, p, o = self.ids.get(subject), self.predicate_ids.get(predicate), self.ids.get(obj)
        if s is None or p is None or o is None or (s, p, o) not in self.edges:
            return False
        self.edges.discard((s, p, o))
        overlay = self._add_out.get(s)
        if overlay is not None and (o, p) in overlay:
            overlay.remove((o, p))
            self._add_in[o].remove((s, p))
        else:
            self._out.kill(s, o, p)
            self._in.kill(o, s, p)
            self._both.kill(s, o, p)
            self._both.kill(o, s, p)
        self._delta += 1
        self._maybe_compact()
        return True

    # ------------------------------------------------------------------ queries

    def _expand(self, frontier: np.ndarray, pred: int | None, direction: str) -> np.ndarray:
        csr = {"out": self._out, "in": self._in, "both": self._both}[direction]
        parts = [csr.gather(frontier, pred)]
        for overlay, wanted in ((self._add_out, direction != "in"), (self._add_in, direction != "out")):
            if wanted and overlay:
                extra = [nbr for node in frontier.tolist() for nbr, p in overlay.get(node, ())
                         if pred is None or p == pred]
                if extra:
                    parts.append(np.asarray(extra, np.int32))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def neighbor_ids(self, entity: str, hops: int, *, predicate: str | None = None,
                     direction: str = "both") -> np.ndarray:
        """Ids of the entities 1..``hops`` steps from ``entity`` (not itself)."""
        start = self.ids.get(entity)
        pred = None if predicate is None else self.predicate_ids.get(predicate, -1)
        if start is None or pred == -1:
            return np.empty(0, np.int32)
        seen = np.zeros(len(self.names), bool)
        seen[start] = True
        frontier = np.array([start], np.int32)
        found = []
        for _ in range(hops):
            nbrs = self._expand(frontier, pred, direction)
            nbrs = np.unique(nbrs[~seen[nbrs]])
            if nbrs.size == 0:
                break
            seen[nbrs] = True
            found.append(nbrs)
            frontier = nbrs
        return np.concatenate(found) if found else np.empty(0, np.int32)

    def neighbors(self, entity: str, hops: int, *, predicate: str | None = None,
                  direction: str = "both") -> set[str]:
        ids = self.neighbor_ids(entity, hops, predicate=predicate, direction=direction)
        if ids.size and int(ids.max()) < self._name_array.shape[0]:
            return set(self._name_array[ids].tolist())
        names = self.names
        return {names[i] for i in ids.tolist()}

    def steps(self, node: int, direction: str, pred: int | None) -> Iterator[tuple[int, Edge]]:
        """(next node, the stored edge) for each edge leaving ``node`` in ``direction``."""
        if direction != "in":
            for nbr, p in [*self._out.edges_of(node), *self._add_out.get(node, ())]:
                if pred is None or p == pred:
                    yield nbr, (node, p, nbr)
        if direction != "out":
            for nbr, p in [*self._in.edges_of(node), *self._add_in.get(node, ())]:
                if pred is None or p == pred:
                    yield nbr, (nbr, p, node)

    def paths(self, src: str, dst: str, max_hops: int, *, predicate: str | None = None,
              direction: str = "both") -> list[list[tuple[str, str, str]]]:
        """Every simple path of 1..``max_hops`` edges from ``src`` to ``dst``."""
        s, d = self.ids.get(src), self.ids.get(dst)
        pred = None if predicate is None else self.predicate_ids.get(predicate, -1)
        if s is None or d is None or s == d or pred == -1:
            return []
        # Distances to dst (walking edges backwards) prune the depth-first search.
        back = {"out": "in", "in": "out", "both": "both"}[direction]
        to_dst = {d: 0}
        frontier = [d]
        for depth in range(1, max_hops):
            nxt = []
            for node in frontier:
                for nbr, _ in self.steps(node, back, pred):
                    if nbr not in to_dst:
                        to_dst[nbr] = depth
                        nxt.append(nbr)
            frontier = nxt
        found: list[list[Edge]] = []
        trail: list[Edge] = []
        on_path = {s}

        def walk(node: int, left: int) -> None:
            for nbr, edge in self.steps(node, direction, pred):
                if nbr == d:
                    found.append([*trail, edge])
                elif left > 1 and nbr not in on_path and to_dst.get(nbr, max_hops) < left:
                    trail.append(edge)
                    on_path.add(nbr)
                    walk(nbr, left - 1)
                    on_path.discard(nbr)
                    trail.pop()

        walk(s, max_hops)
        names, preds = self.names, self.predicates
        result = [[(names[a], preds[p], names[b]) for a, p, b in path] for path in found]
        result.sort(key=lambda path: (len(path), path))
        return result
