"""When a ``perf.run`` is profiled, where the flame graphs go, and what grew.

:class:`RunProfile` wraps one :class:`~.profile.Profiler` for one ``perf.run``:
with ``--agentmem-profile`` it covers the measured rounds; without it, a run whose
gate asks for re-measurement is profiled during those rounds only (if py-spy is
installed). :func:`profile_figures` turns the recording into the evidence's
``profile`` entry and writes the flame graph (and, given a reference, the
differential one) next to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .flame import functions_grown, read_folded, render_diff, render_flame, top_functions
from .profile import Profiler, py_spy_path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Frames of the plugin's own work between two rounds (the calibration probe): their stacks are
#: left out of the profile, which is of the measured rounds.
BETWEEN_ROUNDS = ("probe_after_round (",)


def _with(stem: Path, suffix: str) -> Path:
    return stem.parent / (stem.name + suffix)


def profile_stem(directory: Path, nodeid: str, name: str) -> Path:
    """``<directory>/<safe node id>--<safe run name>`` (no suffix)."""
    safe = _UNSAFE.sub("_", nodeid.replace("::", "__")).strip("._")[:120] or "test"
    run = _UNSAFE.sub("_", name).strip("._")[:60] or "run"
    return Path(directory) / f"{safe}--{run}"


class RunProfile:
    """The profile of one ``perf.run`` (at most one recording)."""

    def __init__(self, stem: Path, scope: str) -> None:
        self.stem = stem
        self.scope = scope  # "measured rounds" or "re-measurement rounds"
        self.profiler = Profiler(_with(stem, ".folded"))
        self.running = False

    @staticmethod
    def available() -> bool:
        """True if py-spy is installed."""
        return py_spy_path() is not None

    def start(self) -> bool:
        """Start recording (False: see :attr:`problem`)."""
        self.running = self.profiler.start()
        return self.running

    def stop(self) -> None:
        """Stop recording (if it runs)."""
        if self.running:
            self.profiler.stop()
            self.running = False

    @property
    def problem(self) -> str:
        return self.profiler.problem


def profile_figures(run: RunProfile, title: str, reference: dict[str, int] | None = None,
                    reference_label: str = "") -> dict[str, Any]:
    """The evidence's ``profile`` entry; writes ``<stem>.svg`` (and ``<stem>.diff.svg``)."""
    out: dict[str, Any] = {"scope": run.scope, "tool": "py-spy", "rate_hz": run.profiler.rate}
    folded_path = run.profiler.output
    folded = read_folded(folded_path) if folded_path.exists() else {}
    folded = {stack: n for stack, n in folded.items() if not any(f in stack for f in BETWEEN_ROUNDS)}
    if not folded:
        out["problem"] = run.problem or "py-spy recorded no samples (the rounds were too short?)"
        return out
    svg = _with(run.stem, ".svg")
    svg.write_text(render_flame(folded, f"{title} ({run.scope})"))
    out.update(folded=str(folded_path), svg=str(svg), samples=sum(folded.values()),
               errors=run.profiler.errors, top=top_functions(folded, 10))
    if reference:
        diff = _with(run.stem, ".diff.svg")
        diff.write_text(render_diff(folded, reference, f"{title}: against {reference_label}"))
        out.update(diff_svg=str(diff), reference=reference_label,
                   grown=functions_grown(folded, reference, 10))
        ref_svg = _with(run.stem, ".reference.svg")
        ref_svg.write_text(render_flame(reference, f"{title}: {reference_label}"))
        out["reference_svg"] = str(ref_svg)
    return out
