"""Change-point quality of the history: a real series over 30 commits, stepped and flat.

A temporary git repository holds a real CPU-bound operation (JSON-encode and
SHA-256 of the stdlib's own ``json`` sources, as the gate-quality benchmarks do)
in ``work.py`` and a perf test measuring it with ``perf.run`` (3 rounds, 1.5 s).
Two histories of 30 commits each:

- **stepped**: flat, then the operation does 10 % more of the same work from
  commit 12 and a further 5 % (of that) from commit 22 (a real CPU regression, no sleep);
- **flat**: every commit changes a comment only.

Each "CI run" checks the commit out as ``main`` and runs the real thing in a
fresh process: ``pytest --agentmem-perf --agentmem-history <store>``, which
appends every figure (commit, branch, machine...) to a SQLite history; each
history is kept twice: **quiet**, and **noisy**, where a spinning neighbour (one
process per core, tests/neighbours.py) runs during runs 5-8, 17-18 and 25-27.
Runs are interleaved (commit by commit, both conditions) so the machine's drift
hits every series alike.

Change points are then found per series (test, metric, machine, workload) by
:func:`pytest_agentmem.history.changepoints.detect` (E-divisive with a t-test,
as Otava), and, for comparison, with a rank test (Mann-Whitney) in its place, by the
permutation-test variant and by
``ruptures`` (PELT, l2 cost, a BIC-like penalty from the series' own noise) when
it is installed. Expected: 12 and 22 (plus or minus one) on the stepped series,
nothing on the flat one.

Run: ``pytest --agentmem-perf -p no:cacheprovider -o timeout=0 -s tests/quality/test_history_quality.py``
(10-40 minutes with the machine's load; ``HISTORY_BENCH_KEEP=DIR`` keeps the four SQLite
histories there, e.g. for ``python -m pytest_agentmem.history trends``, and with
``HISTORY_BENCH_REUSE=1`` as well re-analyses the histories kept there without measuring again).
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_agentmem.history.changepoints import detect, relative_noise
from pytest_agentmem.history.series import point_value
from pytest_agentmem.history.store import open_store
from pytest_agentmem.history_target import parse_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neighbours import Neighbour  # noqa: E402

COMMITS = 30
STEPS = {12: 0.10, 22: 0.05}  # commit (1-based) -> further slowdown from there on
UNITS = 100
ROUNDS = int(os.environ.get("HISTORY_BENCH_ROUNDS", "5"))  # rounds of each run's perf.run (1.5 s in all)
NOISY_RUNS = {5, 6, 7, 8, 17, 18, 25, 26, 27}
METRICS = ("cpu_ms_per_op", "qps", "p50_ms")
CONDITIONS = ("quiet", "noisy")
STATISTICS = ("value", "best")
TOLERANCE_COMMITS = 1

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
# commit {commit}
'''

TEST = '''
import pytest

import work


@pytest.mark.agentmem_perf(reference=False, rounds=ROUNDS)
async def test_op(perf):
    async def one(i):
        work.op(i)

    await perf.run(one, duration=1.5, warmup=30, name="op")
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def units_at(commit: int, stepped: bool) -> int:
    factor = 1.0
    for at, step in STEPS.items():
        if stepped and commit >= at:
            factor *= 1 + step
    return round(UNITS * factor)


def make_repo(root: Path, stepped: bool) -> tuple[Path, list[str]]:
    """A repository of COMMITS commits; returns it and their shas (commit 1 first)."""
    repo = root / ("stepped" if stepped else "flat")
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "bench@example.invalid")
    _git(repo, "config", "user.name", "bench")
    (repo / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (repo / "test_op.py").write_text(TEST.replace("ROUNDS", str(ROUNDS)))
    shas = []
    for commit in range(1, COMMITS + 1):
        (repo / "work.py").write_text(WORK.format(units=units_at(commit, stepped), commit=commit))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"commit {commit}")
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return repo, shas


def ci_run(repo: Path, sha: str, store: Path) -> None:
    """One CI run of ``sha`` on main, appending to ``store``, in a fresh process."""
    _git(repo, "checkout", "-q", "-B", "main", sha)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "CI_COMMIT", "GIT_"))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--agentmem-perf",
                           f"--agentmem-history={store}", "test_op.py"],
                          cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0 or "appended to" not in done.stdout:
        raise AssertionError(f"pytest exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")


def series(store: Path, metric: str, statistic: str = "value") -> list[tuple[str, float]]:
    """(commit, point) of each run: its headline value, or its ``best`` round."""
    rows = open_store(parse_target(str(store)), create=False).series_rows(
        "f.measurement = ? AND f.metric = ?", ("op", metric))
    return [(r["commit_sha"], float(point_value(r, statistic) or math.nan)) for r in rows]


def ruptures_points(values: list[float]) -> list[int] | None:
    """PELT (l2) with penalty 3 log(n) sigma^2, sigma from successive differences; None without ruptures."""
    try:
        import numpy as np
        import ruptures
    except ImportError:
        return None
    x = np.asarray(values, dtype=float)
    sigma = 1.4826 * float(np.median(np.abs(np.diff(x)))) / math.sqrt(2)
    algo = ruptures.Pelt(model="l2", min_size=3, jump=1).fit(x.reshape(-1, 1))
    return [i for i in algo.predict(pen=3 * math.log(len(x)) * max(sigma, 1e-12) ** 2) if i < len(x)]


def score(points: list[int], stepped: bool) -> tuple[int, int]:
    """(expected steps found within +-1 commit, false change points); points are 1-based commits."""
    expected = list(STEPS) if stepped else []
    found, used = 0, set()
    for at in expected:
        hit = next((p for p in points if abs(p - at) <= TOLERANCE_COMMITS and p not in used), None)
        if hit is not None:
            found += 1
            used.add(hit)
    return found, len([p for p in points if p not in used])


def collect(tmp_path: Path, out: Path) -> dict[tuple[str, str], Path]:
    """Run the 120 CI runs (30 commits x stepped/flat x quiet/noisy); the four histories."""
    repos = {name: make_repo(tmp_path, name == "stepped") for name in ("stepped", "flat")}
    stores = {(name, cond): out / f"{name}-{cond}.db" for name in repos for cond in CONDITIONS}
    for store in stores.values():
        store.unlink(missing_ok=True)
    for commit in range(1, COMMITS + 1):
        for name, (repo, shas) in repos.items():
            order = CONDITIONS if commit % 2 else CONDITIONS[::-1]
            for cond in order:
                if cond == "noisy" and commit in NOISY_RUNS:
                    with Neighbour():
                        ci_run(repo, shas[commit - 1], stores[(name, cond)])
                else:
                    ci_run(repo, shas[commit - 1], stores[(name, cond)])
    for (name, _), store in stores.items():
        assert [sha for sha, _ in series(store, "qps")] == repos[name][1], "every run appended once, in order"
    return stores


DETECTORS = ("ttest", "ranks", "permutation", "ruptures")


def points_of(detector: str, values: list[float]) -> list[tuple[int, float]] | None:
    """(1-based commit, relative change) of each change point; None when ruptures is missing."""
    if detector == "ruptures":
        found = ruptures_points(values)
        if found is None:
            return None
        bounds = [0, *found, len(values)]
        return [(i + 1, statistics.fmean(values[i:bounds[k + 2]]) / statistics.fmean(values[bounds[k]:i]) - 1)
                for k, i in enumerate(found)]
    return [(c.index + 1, c.change) for c in detect(values, test=detector)]  # type: ignore[arg-type]


@pytest.mark.timeout(0)  # 120 CI runs: 10-40 minutes, with the machine's load
@pytest.mark.agentmem_perf(reference=False)
def test_history_change_points(perf, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = os.environ.get("HISTORY_BENCH_KEEP")
    out = Path(keep) if keep else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    reuse = bool(keep and os.environ.get("HISTORY_BENCH_REUSE"))
    if reuse:  # analyse the histories a previous run kept (the figures of that run)
        stores = {(name, cond): out / f"{name}-{cond}.db" for name in ("stepped", "flat") for cond in CONDITIONS}
    else:
        stores = collect(tmp_path, out)
    lines = [f"history change points: {COMMITS} commits, steps {', '.join(f'+{s:.0%} at {c}' for c, s in STEPS.items())}"
             f" (stepped) or none (flat); neighbour during runs {sorted(NOISY_RUNS)} (noisy); "
             "E-divisive p<=0.001 (Otava's defaults, min 3 runs a side) with a t-test, a rank test or "
             "permutations; ruptures PELT (l2, penalty 3 log(n) sigma^2)",
             f"  (each run's point: its headline value, or its best of {ROUNDS} rounds (when measured); noise: median successive "
             "difference / median)",
             "  series          metric, point        noise   " + "  ".join(f"{d:28s}" for d in DETECTORS)]
    figures: dict[str, float] = {}
    for (name, cond), store in stores.items():
        for metric, statistic in ((m, s) for m in METRICS for s in STATISTICS):
            values = [v for _, v in series(store, metric, statistic)]
            assert len(values) == COMMITS
            cells = []
            for detector in DETECTORS:
                found = points_of(detector, values)
                if found is None:
                    cells.append("n/a")
                    continue
                hits, false = score([c for c, _ in found], name == "stepped")
                figures[f"{name}_{cond}_{metric}_{statistic}_{detector}_found"] = hits
                figures[f"{name}_{cond}_{metric}_{statistic}_{detector}_false"] = false
                cells.append(", ".join(f"{c}:{ch:+.0%}" for c, ch in found) or "none")
            lines.append(f"  {name + '/' + cond:14s}  {metric + ' ' + statistic:19s}  {relative_noise(values):5.1%}   "
                         + "  ".join(f"{c:28s}" for c in cells))
    figures["elapsed_s"] = time.perf_counter() - started
    lines.append(f"  load average (1 min): {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
                 f"elapsed {figures['elapsed_s']:.0f} s" + (f"; histories in {out}" if keep else "")
                 + (" (re-analysed, not re-measured)" if reuse else ""))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    perf.record("history_change_points", **{k: float(v) for k, v in figures.items()})
    # issue 20's goal, on each run's best round of its CPU cost and median latency with the default
    # detector (E-divisive, t-test): both steps at their commit +-1, nothing on the flat series
    if ROUNDS > 1:
        for cond in CONDITIONS:
            for metric in ("cpu_ms_per_op", "p50_ms"):
                assert figures[f"stepped_{cond}_{metric}_best_ttest_found"] == 2, lines
                assert figures[f"stepped_{cond}_{metric}_best_ttest_false"] == 0, lines
                assert figures[f"flat_{cond}_{metric}_best_ttest_false"] == 0, lines
