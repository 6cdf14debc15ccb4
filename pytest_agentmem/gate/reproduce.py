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

So before the run fails for such figures, the tests they belong to run again in fresh
pytest processes after the run (new process, new servers, minutes later), one after
the other, up to ``--agentmem-reproduce N`` of them (3 by default). The same goes for
a figure that this run found worse than its tolerance but could not fail: Holm's
correction took it back, or its recordings' spread left it undecided (p <=
:data:`SCREEN_P` on its own). This run picked the suspects out; the fresh runs alone
decide them, each process one run against the recordings' run-to-run spread
(:meth:`~.recordings.RunSpread.p_worse_runs`), Holm's correction across the suspects.
A suspect that one fresh process measures within its tolerance has cleared and runs no
more; the others run in every process. A figure fails the run only if its fresh runs put
it worse than its tolerance beyond their spread (not merely worse than its baseline: a
machine state lasting an hour put unchanged ``batch_delete`` at +36 % against a 30 %
tolerance in three fresh processes) and each of them measured it worse than the
tolerance. A failed figure that passes there is judged passed, and says so; one that
cannot be judged there is not judged ("not reproduced"). If no fresh process can run (it crashed, timed out, wrote
no report), the failures stand, with the reason. ``--agentmem-reproduce off`` turns
this off. The fresh processes write no baseline, history, HTML or step summary: only
the JSON report this module reads.

Why several runs: one run of the search scenario moves 10 % (1 SD) from the next on
this project's 2-core machine, so one fresh run against five recordings tells a
+25 % regression from nothing only about half the time; three runs, averaged, most of
the time.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ..child_process import ChildProcess, inherited_environment
from ..config import OPTIONS, REPRODUCING_ENV
from .across import Pending, rejudge
from .checks import as_ratio, holm_family, pct
from .directions import direction_of
from .stats import centre
from .verdict import CheckResult, TestVerdict, measurement_from_dict
from .yardstick import MOVED_WITH_THE_MODEL

#: The reason of a figure that failed here and could not be judged when its test ran again.
NOT_REPRODUCED = "not reproduced"
#: Said beside the pass of a figure that failed here and passed when its test ran again.
DID_NOT_REPRODUCE = "did not reproduce"

#: A figure worse than its tolerance at this p on its own (before Holm's correction), that did
#: not fail, is decided again in the fresh processes too: picked out by this run, decided on
#: theirs. Judged offline on 20 earlier runs of the catalogue against another machine's
#: baselines (tests/quality/test_gate_quality_machines.py, the other runs of a cell standing in
#: for the fresh processes), 0.10 found a +25 % regression in 4 of 10 runs, 0.05 and 0.25 in 3;
#: none failed an unchanged run.
SCREEN_P = 0.10
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


def suspect(check: CheckResult) -> bool:
    """A figure the fresh processes decide again: failed, or worse than its tolerance and
    significant on its own at :data:`SCREEN_P` but not failed (Holm's correction took it back,
    or its run-to-run spread left it undecided). Not a figure that moved with its model
    yardstick (:mod:`.yardstick`): fresh processes on the same machine would measure that again."""
    if check.verdict == "fail":
        return True
    if check.reason == MOVED_WITH_THE_MODEL:
        return False
    return (check.kind == "baseline" and check.p_value is not None and check.p_value <= SCREEN_P
            and check.change is not None and check.tolerance is not None and check.change > check.tolerance)


def suspects(resolved: Sequence[Pending]) -> list[Pending]:
    """The figures judged at the end of the run that the fresh processes decide again."""
    return [p for p in resolved if suspect(p.check)]


def _key(p: Pending) -> tuple[str, str, str]:
    return (p.verdict.nodeid, p.check.measurement, p.check.metric)


def _worse_than_tolerance(p: Pending, samples: list[float]) -> bool:
    """This fresh run alone measured the figure worse than its tolerance (against the same
    scaled baseline): it has not cleared yet."""
    again = rejudge(p, [samples])
    if not again.baseline or again.value <= 0:
        return True
    higher = direction_of(again.metric) == "higher"
    worse = again.baseline / again.value if higher else again.value / again.baseline
    return worse > 1 + as_ratio(p.tolerance, higher)


@dataclass
class Reproduction:
    """The fresh processes' rounds of each suspect, and how it went."""

    runs: dict[int, list[list[float]]]  # id(Pending) -> one list of rounds per fresh process
    persisted: set[int]  # id(Pending): worse than the tolerance in every fresh run it had
    processes: int = 0
    elapsed: float = 0.0
    why_not: str = ""


def reproduce(config: pytest.Config, suspected: Sequence[Pending], processes: int,
              say: Callable[[str], None]) -> Reproduction:
    """Run the tests of ``suspected`` again in up to ``processes`` fresh processes, one after
    the other. A figure that one of them measures within its tolerance has cleared and is not
    run again; the others are measured in every process, so a failure must hold in each."""
    started = time.monotonic()
    done = Reproduction({id(p): [] for p in suspected}, set())
    open_ = list(suspected)
    for k in range(processes):
        tests = list(dict.fromkeys(p.verdict.nodeid for p in open_))
        if not tests:
            break
        say(f"agentmem: fresh process {k + 1} of at most {processes}: {len(tests)} "
            f"test{'s' if len(tests) != 1 else ''} ({len(open_)} figure{'s' if len(open_) != 1 else ''}) ...")
        document, why_not, _ = run_again(config, tests)
        done.processes += 1
        if document is None:
            done.why_not = why_not
            break
        fresh = fresh_samples(document)
        still = []
        for p in open_:
            samples = fresh.get(_key(p))
            if samples is None:
                continue  # not measured there: decided on what it has
            done.runs[id(p)].append(samples)
            if _worse_than_tolerance(p, samples):
                still.append(p)
        open_ = still
    done.persisted = {id(p) for p in open_ if done.runs[id(p)]}
    done.elapsed = time.monotonic() - started
    return done


def settle_again(suspected: Sequence[Pending], done: Reproduction) -> dict[str, int]:
    """Decide each figure of ``suspected`` again on its fresh runs alone (the run that picked
    it out does not vote), by the same rule and against the same other tests
    (:func:`~.across.rejudge`), Holm's correction across the suspects; change it in place.

    A figure fails only if it fails on its fresh runs (beyond its tolerance,
    :func:`~.checks.within_spread`) and each of them measured it worse than
    the tolerance. A failed figure: ``reproduced`` (the failure stands), ``cleared`` (passed
    there: passed), ``unjudged`` (not judged there) or ``kept`` (no fresh rounds: the failure
    stands). A figure that had not failed: ``confirmed`` (it fails now), ``unjudged`` (a passed
    one every fresh run measured worse than its tolerance, not beyond it) or left as it was."""
    counts = {"reproduced": 0, "cleared": 0, "unjudged": 0, "kept": 0, "confirmed": 0}
    again: dict[int, CheckResult] = {}
    for p in suspected:
        if done.runs[id(p)]:
            again[id(p)] = rejudge(p, done.runs[id(p)])
    holm_family(list(again.values()))  # one question per suspect: the family is the suspects
    verdicts: dict[int, TestVerdict] = {}
    for p in suspected:
        second, runs = again.get(id(p)), done.runs[id(p)]
        held = second is not None and second.verdict == "fail" and id(p) in done.persisted
        later = _later(second.baseline if second is not None else p.check.baseline, runs, done)
        if p.check.verdict != "fail":
            if held:
                counts["confirmed"] += 1
                new = replace(p.check, verdict="fail", reason=None, confirmed=True,
                              message=_failed_again(p.check.message, later))
            elif _worse_each_time(p, second, done):  # worse than the tolerance each time: not passed
                counts["unjudged"] += 1
                new = replace(p.check, verdict="not-judged", reason=NOT_REPRODUCED, confirmed=False,
                              message=_worse_not_beyond(p.check.message, later, second))
            else:
                continue
        elif second is None:
            counts["kept"] += 1
            new = replace(p.check, message=f"{p.check.message}; could not be reproduced: "
                                           f"{done.why_not or 'the fresh process did not measure it'}")
        else:
            new = _again(p.check, second, held, later, counts, id(p) in done.persisted)
        checks = p.verdict.checks
        checks[checks.index(p.check)] = new
        p.check = new
        verdicts[id(p.verdict)] = p.verdict
    for verdict in verdicts.values():
        verdict.settle()
    return counts


def _later(base: float | None, runs: Sequence[Sequence[float]], done: Reproduction) -> str:
    """``when its test ran again in a fresh process 21 s later (+31%)``, or in several: each
    run's change against ``base`` (the baseline as the figure was judged against, scaled)."""
    changes = ", ".join(pct(centre(r) / base - 1) for r in runs if r) if base else ""
    shown = f" ({changes})" if changes else ""
    if len(runs) <= 1:
        return f"when its test ran again in a fresh process {done.elapsed:.0f} s later{shown}"
    return f"when its test ran again in {len(runs)} fresh processes, over {done.elapsed:.0f} s{shown}"


def _worse_each_time(p: Pending, second: CheckResult | None, done: Reproduction) -> bool:
    """Every fresh run measured the figure worse than its tolerance, and they did not show it
    beyond (``second`` not judged, or passed because the suspects' Holm family took its failure
    back): a figure shown passed until then must not stay so."""
    return (second is not None and second.verdict in ("not-judged", "pass") and id(p) in done.persisted
            and p.check.verdict == "pass")


def _worse_not_beyond(first: str, later: str, second: CheckResult) -> str:
    """The message of a passed figure that every fresh run measured worse than its tolerance
    (``second``: its judgement there, not judged)."""
    there = second.message.split("not judged: ", 1)[-1]
    return (f"{first}; not judged: worse than its tolerance in every fresh run {later}, but not shown "
            f"beyond it ({there})")


def _failed_again(first: str, later: str) -> str:
    """The message of a figure that had not failed and failed in the fresh runs: it leads with
    the failure, and a first "not judged" becomes what the run itself said (a reader of a cut
    line sees "failed", not "not judged", beside ``FAIL``)."""
    failed = f"failed again {later}: measurements independent of the run that picked it out, beyond the tolerance"
    head, unjudged, detail = first.partition(": not judged: ")
    if not unjudged:  # a failure Holm took back: the message already leads with the change
        return f"{first}; {failed}"
    return f"{head}: {failed} (in the run itself, not judged: {detail})"


def _again(first: CheckResult, again: CheckResult, held: bool, later: str,
           counts: dict[str, int], persisted: bool = False) -> CheckResult:
    """A failed figure decided again on its fresh runs (``persisted``: each of them measured it
    worse than its tolerance, so a "pass" there is the suspects' Holm family taking the
    failure back, not a run within the tolerance: not judged, never cleared)."""
    if held:
        counts["reproduced"] += 1
        return replace(first, message=f"{first.message}; reproduced {later}")
    if again.verdict == "pass" and not persisted:
        counts["cleared"] += 1
        return replace(first, verdict="pass", confirmed=False, reason=DID_NOT_REPRODUCE,
                       message=f"{first.message}; did not reproduce: passed {later}, so a passing "
                               "disturbance of the machine, not the code")
    counts["unjudged"] += 1
    there = again.reason or {"fail": "failed there, but not in every run",
                             "pass": "worse than its tolerance in each, not significant among the suspects"
                             }.get(again.verdict, "not judged")
    return replace(first, verdict="not-judged", confirmed=False, reason=NOT_REPRODUCED,
                   message=f"{first.message}; not judged: {NOT_REPRODUCED} {later} (there: {there})")
