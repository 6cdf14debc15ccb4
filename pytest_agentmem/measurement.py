"""What a perf test measured: the value handed from the load engine to the gate.

The ``perf`` fixture turns every ``perf.run`` and ``perf.record`` into a
:class:`Measurement` and appends it to the test item's stash under
:data:`MEASUREMENTS_KEY`; the gate reads them after the test body has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class Measurement:
    """One named set of figures measured by a test.

    ``metrics`` holds the headline value of each metric (``qps``, ``p95_ms``,
    ``error_rate``, ``recall`` ...). ``rounds`` holds the same metrics once per
    repeated round, the samples the regression statistics work on; a metric
    measured once has a single round. ``load`` is the full ``LoadResult`` for a
    ``perf.run`` (timeline, histogram, resources), ``None`` for ``perf.record``.
    """

    name: str
    metrics: dict[str, float]
    rounds: list[dict[str, float]] = field(default_factory=list)
    load: Any = None
    kind: str = "load"  # "load" (perf.run), "record" (perf.record) or "benchmark"
    confirmations: int = 0  # extra measurement passes run to confirm a suspected regression
    info: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    #: Where the time went (statements, pool, I/O, Redis, profile): see pytest_agentmem.evidence.
    evidence: dict[str, Any] = field(default_factory=dict)

    def samples(self, metric: str) -> list[float]:
        """Per-round values of ``metric`` (the headline value if no rounds)."""
        values = [r[metric] for r in self.rounds if metric in r]
        if values:
            return values
        return [self.metrics[metric]] if metric in self.metrics else []


MEASUREMENTS_KEY = pytest.StashKey[list[Measurement]]()


def measurements_of(item: pytest.Item) -> list[Measurement]:
    """The measurements recorded so far by ``item`` (created empty on first use)."""
    found = item.stash.get(MEASUREMENTS_KEY, None)
    if found is None:
        found = []
        item.stash[MEASUREMENTS_KEY] = found
    return found
