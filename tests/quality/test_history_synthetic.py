"""Calibration of the change-point detectors on synthetic series (seeded, so every run agrees).

30 values a series: two steps (+10 % at index 11, a further +5 % at 21) under 1 %
Gaussian noise; the same with one value 2.5x too high at a random place (a run on a
busy machine); and flat series under 2 % noise. For each detector: in how many of
``SERIES`` both steps were found within one index, and in how many flat series any
change point was found. Run with ``--agentmem-perf -s``; takes under a minute.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_agentmem.history.changepoints import detect

SERIES = 200


def stepped(seed: int, noise: float = 0.01) -> list[float]:
    rng = np.random.default_rng(seed)
    level = [100.0] * 11 + [110.0] * 10 + [115.5] * 9
    return [v * (1 + rng.normal(0, noise)) for v in level]


def both_found(points: list[int]) -> bool:
    return len(points) == 2 and abs(points[0] - 11) <= 1 and abs(points[1] - 21) <= 1


@pytest.mark.agentmem_perf(reference=False)
def test_history_detector_calibration(perf, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [f"change-point detectors on {SERIES} synthetic series of 30 values each (p <= 0.001):",
             "  detector      steps found (1% noise)  with one wild run  flat with a false change (2% noise)"]
    figures = {}
    for test in ("ttest", "ranks"):
        clean = wild = false = 0
        for seed in range(SERIES):
            clean += both_found([c.index for c in detect(stepped(seed), test=test)])
            values = stepped(seed)
            values[int(np.random.default_rng(seed).integers(0, 30))] *= 2.5
            wild += both_found([c.index for c in detect(values, test=test)])
            flat = list(100 * (1 + np.random.default_rng(1000 + seed).normal(0, 0.02, 30)))
            false += bool(detect(flat, test=test))
        figures.update({f"{test}_found": clean, f"{test}_wild_found": wild, f"{test}_flat_false": false})
        lines.append(f"  {test:12s}  {clean:3d}/{SERIES}                 {wild:3d}/{SERIES}            "
                     f"{false:3d}/{SERIES}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    perf.record("history_detector_calibration", **{k: float(v) for k, v in figures.items()})
    assert figures["ttest_found"] >= 0.95 * SERIES and figures["ttest_flat_false"] <= 0.05 * SERIES
