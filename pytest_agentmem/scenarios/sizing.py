"""Sizes of the catalogue's scenarios: ``$AGENTMEM_SCENARIO_SCALE`` times a default.

The defaults fit the whole catalogue (the README's main job) in about five
minutes of wall time on a 2-core machine, provisioning and data included;
``AGENTMEM_SCENARIO_SCALE=4`` makes every data set and measurement four times
larger (``0.5`` halves them).
"""

from __future__ import annotations

from ..config import env_value

#: The catalogue's A/B tolerance (``agentmem_perf(compare_tolerance=...)``), every scenario.
#: Pairing cancels the machine, not what differs between the base's and the candidate's
#: processes for their whole life (memory layout, history, each side's own database): A/A
#: runs with one process a side measured CPU per operation up to 4.5 % apart on the
#: result cache's hit path and 9-12 % on runs that write, with intervals of +-0.5 %. With
#: several processes a side (``--agentmem-compare-processes``) the gate measures that
#: spread in every run and judges the change against it, so 5 % holds for every scenario.
AB_TOLERANCE = 0.05
#: Kept for scenarios that write as they measure (each side into its own database): the
#: same 5 %, now that the processes' spread is measured rather than allowed for.
AB_WRITE_TOLERANCE = AB_TOLERANCE


#: The search scenario's tolerance against stored baselines. The uncached search path is
#: what the catalogue exists to watch, so a 10 % slower search path must fail. Its CPU per
#: search in units of the model's (``cpu_model_ratio``, the same rounds) moves 2 % (1 SD)
#: from run to run, so a tolerance of 5 % leaves a 10 % regression 2.5 SD beyond it in one
#: fresh process, where 7 % left it 1.5 SD beyond and 3 fresh processes could not show it
#: (a +10.6 % ratio, p = 0.0065 against the recordings, was not confirmed).
SEARCH_TOLERANCE = 0.05


def scale() -> float:
    """The size factor of this run (``$AGENTMEM_SCENARIO_SCALE``, default 1.0)."""
    return float(env_value("AGENTMEM_SCENARIO_SCALE"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` items times the scale, at least ``minimum``."""
    return max(minimum, int(n * scale()))


def scaled_seconds(seconds: float, minimum: float = 0.5) -> float:
    """A measurement's duration times the scale, at least ``minimum`` seconds."""
    return max(minimum, seconds * scale())
