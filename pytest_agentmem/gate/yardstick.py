"""A CPU figure that moved with its own yardstick moved with the machine, not the code.

Where the embedding model ran, a load measurement carries ``model_cpu_ms_per_op`` (the
model's CPU per operation) and ``cpu_model_ratio`` (``cpu_ms_per_op`` in units of it,
:func:`~pytest_agentmem.load.result.model_yardstick`). The model runs in the same process,
in the same rounds, on the same cores as the rest of the operation, so a machine that runs
slower for an hour (a busy host, another vCPU placement) moves both parts alike and leaves
the ratio where it was: on this project's 2-core machine, an unchanged search measured
``cpu_ms_per_op`` +28 % against its recordings of three hours before, in the run and in three
fresh processes, with its ratio at +2 %.

So a failed ``cpu_ms_per_op`` or ``model_cpu_ms_per_op`` whose measurement's ratio stayed
within the figure's tolerance of its baseline, either way, is not judged: the model and
the rest of the operation moved together, which is the machine's speed, and the ratio (judged
as it is) answers for the code outside the model. A change of one part only moves the ratio
beyond the tolerance, and the figure is judged as measured: code outside the model made
slower raises it (and fails it); the model's own work made larger (a text embedded twice)
lowers it, and the model's figure is judged on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..load.result import CPU_MODEL_RATIO, MODEL_CPU_METRIC

if TYPE_CHECKING:
    from .verdict import CheckResult

#: The figure measured in units of the model (see the module docstring).
RATIO_METRIC = CPU_MODEL_RATIO
#: The figures that move with the machine when the ratio does not.
SCALED_BY_THE_MODEL = ("cpu_ms_per_op", MODEL_CPU_METRIC)
#: The reason of such a figure, not judged.
MOVED_WITH_THE_MODEL = "moved with the model"


def excuse_uniform_moves(checks: Sequence[CheckResult]) -> None:
    """Turn to "not judged" each failed stored-baseline figure of :data:`SCALED_BY_THE_MODEL`
    whose measurement's :data:`RATIO_METRIC` did not fail and moved less than the figure's
    tolerance from its baseline, either way. The check objects are changed, not replaced:
    the end of the run's bookkeeping (:mod:`.across`, :mod:`.reproduce`) holds them."""
    ratios = {c.measurement: c for c in checks
              if c.metric == RATIO_METRIC and c.kind == "baseline" and c.verdict != "fail"
              and c.raw_change is not None}
    for check in checks:
        ratio = ratios.get(check.measurement)
        if (ratio is None or check.verdict != "fail" or check.kind != "baseline"
                or check.metric not in SCALED_BY_THE_MODEL or check.tolerance is None):
            continue
        if abs(ratio.raw_change) > check.tolerance:  # type: ignore[arg-type]
            continue  # one part moved unlike the other: judged as measured
        check.verdict, check.confirmed, check.reason = "not-judged", False, MOVED_WITH_THE_MODEL
        check.message = (f"{check.message}; not judged: the embedding model, measured in the same rounds, "
                         f"moved with it ({check.measurement}.{RATIO_METRIC} {ratio.raw_change:+.1%} against "
                         f"its baseline, within the {check.tolerance:.0%} tolerance): the machine's speed "
                         f"moved, not the code; {RATIO_METRIC} judges the code outside the model")
