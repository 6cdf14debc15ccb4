"""Gate quality of the A/B mode: does ``--agentmem-compare`` fail exactly the slower commits?

A temporary git repository holds a real CPU-bound operation (JSON-encode and
SHA-256 of the stdlib's own ``json`` sources, cut in 400-character chunks) in
``work.py`` and a perf test that measures it with ``perf.run``. Its history: the
base commit, then commits that leave the operation unchanged (a comment) or make
it 3 %, 5 %, 10 % and 25 % slower by doing proportionally more of the same real
work. Each "CI run" checks a commit out and runs the real thing,
``pytest --agentmem-compare <base>`` in a fresh process, and reads its verdict
from the JSON report; quiet, and with a noisy neighbour (one process per core
spinning in a loop, started before and stopped after the run). Conditions are
interleaved so the machine's drift hits them alike.

Goals (issue 11): 0 false failures in unchanged runs, quiet and with the
neighbour; 10 % slower caught in >= 19 of 20, quiet and with the neighbour; 5 %
slower caught in >= 16 of 20 quiet; an A/B run costs at most 2.2x the wall time
of a plain run of the same test. ``AGENTMEM_GATE_QUALITY_RUNS`` scales the run
counts (default 20 for unchanged, 5 % and 10 %, 10 for the others).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neighbours import Neighbour  # noqa: E402

UNITS = 100
SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.25)
DURATION_S = 2.0  # measured time of the perf.run on each side

WORK = '''
import hashlib, json, os
UNITS = {units}
_SRC = "".join(open(os.path.join(os.path.dirname(json.__file__), f)).read()
               for f in ("encoder.py", "decoder.py", "__init__.py"))
CHUNKS = [_SRC[i:i + 400] for i in range(0, len(_SRC) - 400, 400)]


def op(i):
    h = hashlib.sha256()
    for u in range(UNITS):
        c = CHUNKS[(i * 7 + u) % len(CHUNKS)]
        h.update(json.dumps({{"u": u, "text": c, "words": c.split()[:16]}}).encode())
    return h.digest()
'''

TEST = f'''
import pytest

import work


@pytest.mark.agentmem_perf
async def test_op(perf):
    async def one(i):
        work.op(i)

    await perf.run(one, duration={DURATION_S}, warmup=50, name="op")
'''


def _runs(slowdown: float) -> int:
    scale = float(os.environ.get("AGENTMEM_GATE_QUALITY_RUNS", "20")) / 20
    return max(1, round((20 if slowdown in (0.0, 0.05, 0.10) else 10) * scale))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(root: Path) -> tuple[Path, str, dict[float, str]]:
    """The repository, its base commit, and the candidate commit of each slowdown."""
    repo = root / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "bench@example.invalid")
    _git(repo, "config", "user.name", "bench")
    (repo / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (repo / "test_op.py").write_text(TEST)
    (repo / "work.py").write_text(WORK.format(units=UNITS))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD")
    commits: dict[float, str] = {}
    for slowdown in SLOWDOWNS:
        _git(repo, "checkout", "-q", base)
        units = round(UNITS * (1 + slowdown))
        text = WORK.format(units=units) + ("\n# unchanged: a comment only\n" if not slowdown else "")
        (repo / "work.py").write_text(text)
        _git(repo, "commit", "-qam", f"{slowdown:.0%} slower")
        commits[slowdown] = _git(repo, "rev-parse", "HEAD")
    return repo, base, commits


def run_pytest(repo: Path, report: Path, compare: str | None) -> tuple[dict, float]:
    """One CI run in a fresh process; (its JSON report, wall seconds)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--agentmem-perf",
            f"--agentmem-report={report}", "test_op.py"]
    if compare:
        args.append(f"--agentmem-compare={compare}")
    # one process a side, as its published figures were measured (AGENTMEM_COMPARE_PROCESSES to vary it)
    env = dict(os.environ, AGENTMEM_COMPARE_PROCESSES=os.environ.get("GATE_QUALITY_AB_PROCESSES", "1"))
    started = time.perf_counter()
    done = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1) or not report.exists():
        raise AssertionError(f"pytest exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return json.loads(report.read_text()), wall


def verdict_of(report: dict) -> tuple[bool, dict[str, float], list[str]]:
    """(failed, paired change of each gated metric, failure messages)."""
    record = report["tests"][0]
    changes = {c["metric"]: c["change"] for c in record["checks"]
               if c["kind"] == "paired" and c["change"] is not None}
    failures = [c["message"] for c in record["checks"] if c["verdict"] == "fail"]
    return record["outcome"] == "failed", changes, failures


def smallest_caught(rates: dict[float, float], share: float = 0.8) -> float:
    """Smallest slowdown caught in ``share`` of runs (linear between measured conditions)."""
    points = sorted(rates.items())
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if r0 < share <= r1:
            return s0 + (s1 - s0) * (share - r0) / (r1 - r0)
    return points[0][0] if points and points[0][1] >= share else -1.0


@pytest.mark.timeout(0)  # 160 A/B runs: 30-45 minutes
@pytest.mark.agentmem_perf(max_false_failures_quiet=0, max_false_failures_noisy=0,
                           min_caught_10pct_quiet_share=0.95, min_caught_10pct_noisy_share=0.95,
                           min_caught_5pct_quiet_share=0.8, max_cost_ratio=2.2, reference=False)
def test_gate_quality_ab(perf, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    repo, base, commits = make_repo(tmp_path)
    started = time.perf_counter()
    outcomes: dict[tuple[float, bool], list[tuple[bool, dict[str, float]]]] = {}
    false_messages: list[str] = []
    cost: list[float] = []
    report = tmp_path / "report.json"
    for r in range(max(_runs(s) for s in SLOWDOWNS)):
        for slowdown in SLOWDOWNS:
            if r >= _runs(slowdown):
                continue
            _git(repo, "checkout", "-q", commits[slowdown])
            for noisy in (False, True):
                neighbour = Neighbour() if noisy else None
                try:
                    data, wall = run_pytest(repo, report, base)
                    if slowdown == 0.0 and not noisy:
                        _, plain = run_pytest(repo, report.with_name("plain.json"), None)
                        cost.append(wall / plain)
                finally:
                    if neighbour is not None:
                        neighbour.stop()
                failed, changes, failures = verdict_of(data)
                outcomes.setdefault((slowdown, noisy), []).append((failed, changes))
                # one line a run as it goes, so that an interrupted benchmark still leaves its data
                print(f"run {r + 1}: {'noisy' if noisy else 'quiet'} {slowdown:.0%} slower: "
                      f"{'FAILED' if failed else 'passed'}; " + ", ".join(
                          f"{k} {v:+.1%}" for k, v in sorted(changes.items())), flush=True)
                if failed and slowdown == 0.0:
                    false_messages += [f"{'noisy' if noisy else 'quiet'}: {m}" for m in failures]
    lines = [f"A/B gate quality ({DURATION_S:.0f} s measured a side, tolerance: the default; "
             "columns: failed/runs, median paired change of qps and cpu_ms_per_op):"]
    rates: dict[bool, dict[float, float]] = {False: {}, True: {}}
    for (slowdown, noisy), rows in sorted(outcomes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        failed = sum(f for f, _ in rows)
        rates[noisy][slowdown] = failed / len(rows)
        qps = [c.get("qps", float("nan")) for _, c in rows]
        cpu = [c.get("cpu_ms_per_op", float("nan")) for _, c in rows]
        lines.append(f"  {'noisy' if noisy else 'quiet'} {slowdown:4.0%} slower: failed {failed:2d}/{len(rows)}; "
                     f"qps change median {statistics.median(qps):+.1%} (min {min(qps):+.1%}, max {max(qps):+.1%}); "
                     f"cpu/op change median {statistics.median(cpu):+.1%}")
    lines += [f"  false failure: {m}" for m in false_messages]
    quiet80 = smallest_caught({s: v for s, v in rates[False].items() if s > 0})
    noisy80 = smallest_caught({s: v for s, v in rates[True].items() if s > 0})
    lines.append(f"  smallest slowdown caught in 80% of runs: quiet {quiet80:.1%}, noisy {noisy80:.1%}; "
                 f"A/B cost {statistics.median(cost):.2f}x a plain run (median of {len(cost)}); "
                 f"elapsed {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)

    def share(slowdown: float, noisy: bool) -> float:
        rows = outcomes.get((slowdown, noisy), [])
        return sum(f for f, _ in rows) / len(rows) if rows else 0.0

    perf.record("gate_quality_ab",
                false_failures_quiet=sum(f for f, _ in outcomes[(0.0, False)]),
                false_failures_noisy=sum(f for f, _ in outcomes[(0.0, True)]),
                caught_10pct_quiet_share=share(0.10, False), caught_10pct_noisy_share=share(0.10, True),
                caught_5pct_quiet_share=share(0.05, False), caught_3pct_quiet_share=share(0.03, False),
                caught_25pct_noisy_share=share(0.25, True),
                smallest_caught_80pct_quiet=quiet80, smallest_caught_80pct_noisy=noisy80,
                cost_ratio=statistics.median(cost))


def test_repo_layout_is_what_the_benchmark_measures(tmp_path: Path) -> None:
    """The benchmark's repository: one base, one commit per slowdown, units scaled."""
    repo, base, commits = make_repo(tmp_path)
    assert set(commits) == set(SLOWDOWNS)
    for slowdown, commit in commits.items():
        text = _git(repo, "show", f"{commit}:work.py")
        assert f"UNITS = {round(UNITS * (1 + slowdown))}" in text
        assert _git(repo, "rev-parse", f"{commit}^") == base
    assert textwrap.dedent(TEST).count("perf.run") == 1
