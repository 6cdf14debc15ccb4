"""Sizes of the catalogue's scenarios: ``$AGENTMEM_SCENARIO_SCALE`` times a default.

The defaults fit the whole catalogue (the README's main job) in about five
minutes of wall time on a 2-core machine, provisioning and data included;
``AGENTMEM_SCENARIO_SCALE=4`` makes every data set and measurement four times
larger (``0.5`` halves them).
"""

from __future__ import annotations

from ..config import env_value

#: The catalogue's A/B tolerance (``agentmem_perf(compare_tolerance=...)``). Pairing
#: cancels the machine, not what differs between the base's and the candidate's
#: processes for their whole life (memory layout, history). A/A runs of this
#: catalogue (identical code on both sides) measured CPU per operation up to 4.5 %
#: apart with intervals of +-0.5 %: the result-cache hit path (57 us an operation)
#: +4.5 % once and -3.2 % in another run, the store search -4.1 %. The default 3 %
#: failed one of two A/A runs; 8 % leaves room for that and still catches 10 %.
AB_TOLERANCE = 0.08
#: The same for runs that write as they measure (each side into its own database,
#: whose state and background work then differ): an A/A run measured the
#: add-delete-then-search run 9.2 % apart (10 pairs, interval 2.5-15 %).
AB_WRITE_TOLERANCE = 0.15


#: The search scenario's tolerance against stored baselines. The uncached search path is
#: what the catalogue exists to watch; its CPU per search is an average over thousands
#: of searches a round, so a 10 % slower search path must fail, not pass at 15 %.
SEARCH_TOLERANCE = 0.07


def scale() -> float:
    """The size factor of this run (``$AGENTMEM_SCENARIO_SCALE``, default 1.0)."""
    return float(env_value("AGENTMEM_SCENARIO_SCALE"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` items times the scale, at least ``minimum``."""
    return max(minimum, int(n * scale()))


def scaled_seconds(seconds: float, minimum: float = 0.5) -> float:
    """A measurement's duration times the scale, at least ``minimum`` seconds."""
    return max(minimum, seconds * scale())
