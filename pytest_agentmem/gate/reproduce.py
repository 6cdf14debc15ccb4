"""A speed failure judged at the end of the run must reproduce in a fresh process.

The figures judged at the end of a run (a baseline of three or more recordings,
another machine's baselines, a busy machine: :mod:`.across`) are decided on the
run-to-run spread of their recordings. On a shared machine that spread, measured
minutes apart, misses the passing disturbances that last a few minutes: measured on
the project's 2-core machine with unchanged code, ``batch_update`` ran at twice its
CPU per operation for one run (its process's own CPU x3, no other process busy, the
interleaved probe unmoved) and ``graph_3hop`` at +58 % in another, both far beyond
their recordings' spread, while a real +25 % regression of the search path stayed
within it. Within one test the re-measurement runs right after the first rounds,
inside the same disturbance. A disturbance passes; a regression in the code does not.

So before the run fails for such figures, the tests they belong to run once more in
a fresh pytest process, after the run (new process, new servers, minutes later), and
a figure fails the run only if it fails there too. One that passes there is judged
passed, as a figure that its re-measurement clears is, and says so; one that cannot
be judged there is not judged ("not reproduced"). If the fresh process cannot run
(it crashed, timed out, wrote no report), the failures stand, with the reason.
``--agentmem-reproduce off`` turns this off. The fresh process writes no baseline,
history, HTML or step summary: only the JSON report this module reads.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ..child_process import ChildProcess, inherited_environment
from ..config import OPTIONS, REPRODUCING_ENV
from .across import Pending, rejudge
from .checks import ALPHA, holm_family, pct
from .verdict import CheckResult, TestVerdict, measurement_from_dict

#: The reason of a figure that failed here and could not be judged when its test ran again.
NOT_REPRODUCED = "not reproduced"
#: Said beside the pass of a figure that failed here and passed when its test ran again.
DID_NOT_REPRODUCE = "did not reproduce"

#: A figure worse than its tolerance at this p on its own, that Holm's correction across its
#: test took back, is decided again in the fresh process too.
SCREEN_P = 0.05
#: How long the fresh process may take, at most (seconds).
TIMEOUT_S = 1800.0
#: Options of this run the fresh process does not get: what it runs and writes is its own.
_DROPPED = frozenset({
    "--agentmem-report", "--agentmem-html", "--agentmem-history", "--agentmem-history-baseline",
    "--agentmem-compare", "--agentmem-profile-dir", "--junitxml", "--junit-xml", "-k", "-m", "-n",
    "--numprocesses", "--dist", "--maxfail", "--random-order-bucket", "--random-order-seed",
    "--deselect", "--basetemp", "--update-baselines", "--agentmem-update-baselines",
    "--agentmem-add-recording", "--agentmem-strict", "--agentmem-profile", "-x", "--exitfirst",
    "--lf", "--last-failed", "--ff", "--failed-first", "--sw", "--stepwise", "--random-order",
    "--pdb", "--trace", "--co", "--collect-only",
})
#: Options of pytest (beyond ours) that take a value in the next argument.
_PYTEST_VALUED = frozenset({"-k", "-m", "-n", "--numprocesses", "--dist", "--maxfail", "--junitxml",
                            "--junit-xml", "--random-order-bucket", "--random-order-seed", "--deselect",
                            "--basetemp", "-p", "-c", "-o", "--rootdir", "--confcutdir", "-W"})
#: Environment the fresh process does not inherit beyond what no child does
#: (:data:`~pytest_agentmem.child_process.NOT_INHERITED`): its selection, history or comparison.
_DROPPED_ENV = ("PYTEST_ADDOPTS", "AGENTMEM_HISTORY", "AGENTMEM_COMPARE")


def _takes_value(flag: str) -> bool:
    if flag in _PYTEST_VALUED:
        return True
    return any(flag in o.flags and not o.is_flag for o in OPTIONS)


def kept_arguments(args: Sequence[str], positional: Sequence[str]) -> list[str]:
    """``args`` (the run's command line) without its test selection and without :data:`_DROPPED`."""
    out: list[str] = []
    tests = set(positional)
    pending_value: bool | None = None  # the next argument is a value: kept (True) or dropped (False)
    for arg in args:
        if pending_value is not None:
            if pending_value:
                out.append(arg)
            pending_value = None
            continue
        flag, glued = arg.split("=", 1)[0], "=" in arg
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and arg[:2] in _DROPPED:
            continue  # -kexpr, -xvs: a dropped short option with its value or flags glued on
        if arg.startswith("-"):
            if not glued and _takes_value(flag):
                pending_value = flag not in _DROPPED
            if flag not in _DROPPED:
                out.append(arg)
        elif arg not in tests:
            out.append(arg)
    return out


def command(config: pytest.Config, nodeids: Sequence[str], report: Path) -> list[str]:
    """The fresh process's command line: these tests, this run's options, its own JSON report."""
    positional = list(config.args) if config.args_source == pytest.Config.ArgsSource.ARGS else []
    # node ids are relative to the rootdir, the process starts where this run was started
    tests = [str(Path(config.rootpath) / n.split("::", 1)[0]) + n[len(n.split("::", 1)[0]):] for n in nodeids]
    argv = [sys.executable, "-m", "pytest", *tests,
            *kept_arguments(config.invocation_params.args, positional),
            "--agentmem-perf", f"--agentmem-report={report}", "-p", "no:cacheprovider", "-q",
            "--no-header", "-rN"]
    if getattr(config.option, "xmlpath", None):  # a --junitxml of the ini's addopts: not the job's file
        argv.append(f"--junitxml={report.with_suffix('.xml')}")
    return argv


def environment() -> dict[str, str]:
    env = inherited_environment(_DROPPED_ENV)
    env[REPRODUCING_ENV] = "1"
    return env


def run_again(config: pytest.Config, nodeids: Sequence[str]) -> tuple[dict[str, Any] | None, str, float]:
    """Run ``nodeids`` in a fresh pytest process: (its JSON report or None, why not, seconds)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentmem-reproduce-") as folder:
        report = Path(folder) / "report.json"
        process = ChildProcess(command(config, nodeids, report), cwd=Path(config.invocation_params.dir),
                              env=environment(), log_path=Path(folder) / "pytest.log")
        try:
            finished = process.wait(TIMEOUT_S)
        finally:
            process.stop(grace=0.0)
        elapsed = time.monotonic() - started
        if not finished:
            return None, f"it did not finish within {TIMEOUT_S:.0f} s", elapsed
        try:
            return json.loads(report.read_text()), "", elapsed
        except (OSError, ValueError):
            tail = process.log_tail(8).strip().replace("\n", " | ")
            return None, f"it wrote no report (exit {process.returncode}: {tail[-400:]})", elapsed


def fresh_samples(document: dict[str, Any] | None) -> dict[tuple[str, str, str], list[float]]:
    """(node id, measurement, metric) -> the fresh process's rounds of that figure."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for record in (document or {}).get("tests", []):
        for data in record.get("measurements", []):
            try:
                m = measurement_from_dict(data)
            except (KeyError, TypeError, ValueError):
                continue
            for metric in m.metrics:
                values = [float(v) for v in m.samples(metric) if isinstance(v, (int, float))]
                if values:
                    out[(record.get("nodeid", ""), m.name, metric)] = values
    return out


def taken_back(check: CheckResult) -> bool:
    """Worse than its tolerance and significant on its own (p <= :data:`SCREEN_P`), but not
    across its test's comparisons (Holm took it back): a suspect worth a second measurement."""
    return (check.verdict != "fail" and check.kind == "baseline" and check.p_value is not None
            and check.p_value <= SCREEN_P and check.p_adjusted is not None and check.p_adjusted > ALPHA
            and check.change is not None and check.tolerance is not None and check.change > check.tolerance)


def suspects(resolved: Sequence[Pending]) -> list[Pending]:
    """The figures judged at the end of the run that the fresh process decides again: the failed
    ones, and those Holm's correction took back (:func:`taken_back`)."""
    return [p for p in resolved if p.check.verdict == "fail" or taken_back(p.check)]


def settle_again(suspected: Sequence[Pending], document: dict[str, Any] | None, why_not: str,
                 elapsed: float) -> dict[str, int]:
    """Decide each figure of ``suspected`` again on the fresh process's rounds, by the same rule
    and against the same other tests (:func:`~.across.rejudge`), Holm's correction across them;
    change it in place.

    A failed figure: ``reproduced`` (failed again: the failure stands), ``cleared`` (passed
    there: passed), ``unjudged`` (not judged there) or ``kept`` (no fresh rounds: the failure
    stands). A figure Holm took back: ``confirmed`` (failed there too: two independent
    measurements, it fails) or left as it was."""
    fresh = fresh_samples(document)
    counts = {"reproduced": 0, "cleared": 0, "unjudged": 0, "kept": 0, "confirmed": 0}
    later = f"when its test ran again in a fresh process {elapsed:.0f} s later"
    again: dict[int, CheckResult] = {}
    for p in suspected:
        samples = fresh.get((p.verdict.nodeid, p.check.measurement, p.check.metric))
        if samples is not None:
            again[id(p)] = rejudge(p, samples)
    holm_family(list(again.values()))  # one question per suspect: the family is the suspects
    verdicts: dict[int, TestVerdict] = {}
    for p in suspected:
        second = again.get(id(p))
        if p.check.verdict != "fail":
            if second is None or second.verdict != "fail":
                continue
            counts["confirmed"] += 1
            new = replace(p.check, verdict="fail", reason=None, confirmed=True,
                          message=f"{p.check.message}; failed again {later}{_shown(second)}: two "
                                  "measurements independent of each other beyond the tolerance")
        elif second is None:
            counts["kept"] += 1
            new = replace(p.check, message=f"{p.check.message}; could not be reproduced: "
                                           f"{why_not or 'the fresh process did not measure it'}")
        else:
            new = _again(p.check, second, later, counts)
        checks = p.verdict.checks
        checks[checks.index(p.check)] = new
        p.check = new
        verdicts[id(p.verdict)] = p.verdict
    for verdict in verdicts.values():
        verdict.settle()
    return counts


def _shown(check: CheckResult) -> str:
    return f" ({pct(check.raw_change)})" if check.raw_change is not None else ""


def _again(first: CheckResult, again: CheckResult, later: str, counts: dict[str, int]) -> CheckResult:
    shown = _shown(again)
    if again.verdict == "fail":
        counts["reproduced"] += 1
        return replace(first, message=f"{first.message}; reproduced {later}{shown}")
    if again.verdict == "pass":
        counts["cleared"] += 1
        return replace(first, verdict="pass", confirmed=False, reason=DID_NOT_REPRODUCE,
                       message=f"{first.message}; did not reproduce: passed {later}{shown}, so a passing "
                               "disturbance of the machine, not the code")
    counts["unjudged"] += 1
    return replace(first, verdict="not-judged", confirmed=False, reason=NOT_REPRODUCED,
                   message=f"{first.message}; not judged: {NOT_REPRODUCED} {later} (there: "
                           f"{again.reason or 'not judged'})")
