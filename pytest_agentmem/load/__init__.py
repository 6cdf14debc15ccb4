"""The load engine: closed and open loop runners, HDR latency recording, ``LoadResult``.

Tests use it through the ``perf`` fixture (:mod:`.fixtures`); the runner can also
be driven directly::

    from pytest_agentmem.load import run_load, validate
    result = await run_load(op, validate(op, concurrency=16, duration=10))
"""

from .engine import run_load
from .fixtures import Perf
from .result import GATED_METRICS, LoadResult, merge_results
from .spec import LoadSpec, validate

__all__ = ["GATED_METRICS", "LoadResult", "LoadSpec", "Perf", "merge_results", "run_load", "validate"]
