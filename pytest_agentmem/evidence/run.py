"""The evidence of one ``perf.run``: what the ``perf`` fixture calls around its rounds.

:class:`RunEvidence` ties together the round collector (:mod:`.collector`), the
profile (:mod:`.profiling`) and the references (the stored baseline's evidence,
:mod:`.store`, or in A/B mode the base side's, handed over with its summary), and
files the result as ``Measurement.evidence``::

    {"statements": [...], "db_ms_per_op": ..., "pool": {...}, "pool_timeline": [...],
     "io": {...}, "io_timeline": [...], "redis": [...],
     "reference": "baseline" | "base", "statements_grown": [...],
     "profile": {"svg": ..., "diff_svg": ..., "top": [...], "grown": [...]}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from ..session import get_session
from .collector import RoundCollector, merge_rounds
from .flame import read_folded
from .profiling import BETWEEN_ROUNDS, RunProfile, profile_figures, profile_stem
from .sources import sources_of
from .statements import statements_grown
from .store import baseline_folder, load_reference

#: Key of the base side's evidence in ``Measurement.info`` while the A/B pacer hands it over.
AB_BASE_EVIDENCE = "ab_base_evidence"


def profile_dir(config: pytest.Config) -> Path:
    """Where flame graphs go: --agentmem-profile-dir, else ``agentmem-profiles`` in the rootdir."""
    settings = get_session(config).settings
    return Path(settings.profile_dir) if settings.profile_dir else Path(config.rootpath) / "agentmem-profiles"


class RunEvidence:
    """Evidence of one ``perf.run`` named ``name`` of ``item``."""

    def __init__(self, item: pytest.Item, name: str,
                 service_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self.item = item
        self.name = name
        self.settings = get_session(item.config).settings
        self.collector = RoundCollector(sources_of(item), self.settings.evidence, service_pids)
        self.rounds: list[dict[str, Any]] = []
        self.profile: RunProfile | None = None
        self.profile_problem = ""

    @property
    def active(self) -> bool:
        """True if the rounds collect anything (then warm-up runs apart from the measured phase)."""
        return self.collector.active

    @property
    def profiles_measured_rounds(self) -> bool:
        """True with --agentmem-profile: the measured rounds are profiled."""
        return self.settings.profile is True

    @staticmethod
    def profile_on_regression(item: pytest.Item) -> bool:
        """True if a suspect's re-measurement is profiled: py-spy is installed and profiling is
        not switched off (``AGENTMEM_PROFILE=0``; with --agentmem-profile the profile runs already)."""
        return RunProfile.available() and get_session(item.config).settings.profile_on_regression

    async def before_round(self) -> None:
        if self.collector.active:
            await self.collector.before()

    async def after_round(self, ops: int) -> None:
        if self.collector.active:
            self.rounds.append(await self.collector.after(ops))

    def start_profile(self, scope: str) -> None:
        """Start the profile (``scope``: what it covers) unless one runs or ran."""
        if self.profile is not None:
            return
        stem = profile_stem(profile_dir(self.item.config), self.item.nodeid, self.name)
        self.profile = RunProfile(stem, scope)
        if not self.profile.start():
            self.profile_problem = self.profile.problem

    def stop_profile(self) -> None:
        if self.profile is not None:
            self.profile.stop()

    def attach(self, measurement: Any) -> None:
        """File the merged evidence (and the profile) as ``measurement.evidence``."""
        evidence = merge_rounds(self.rounds)
        if self.profile is not None:
            if self.profile_problem:
                evidence["profile"] = {"scope": self.profile.scope, "problem": self.profile_problem}
            else:
                stacks = read_folded(self.profile.profiler.output)
                evidence["profile"] = {"scope": self.profile.scope, "folded_stacks": {
                    s: n for s, n in stacks.items() if not any(f in s for f in BETWEEN_ROUNDS)}}
        measurement.evidence = evidence

    def compare(self, measurement: Any) -> None:
        """Add what grew against the reference (the A/B base, else the stored baseline's evidence)."""
        evidence: dict[str, Any] = measurement.evidence
        base = measurement.info.pop(AB_BASE_EVIDENCE, None)
        if self.settings.ab_role == "base":
            return  # the candidate compares
        reference: dict[str, Any] = {}
        label = ""
        if isinstance(base, dict) and base:
            reference, label = base, "base"
        elif not self.settings.update_baselines:
            stored = load_reference(baseline_folder(self.item, self.settings.baselines_dir),
                                    self.item.nodeid).get(self.name)
            if isinstance(stored, dict):
                reference, label = stored, "baseline"
        if label:
            evidence["reference"] = label
        if "statements" in evidence and reference.get("statements") is not None:
            evidence["statements_grown"] = statements_grown(evidence["statements"], reference["statements"])
            if "db_ms_per_op" in reference:
                evidence["ref_db_ms_per_op"] = reference["db_ms_per_op"]
        profile = evidence.get("profile")
        if isinstance(profile, dict) and "folded_stacks" in profile and self.profile is not None:
            folded_ref = reference.get("folded_stacks") if isinstance(reference.get("folded_stacks"), dict) else None
            figures = profile_figures(self.profile, f"{self.item.nodeid} [{self.name}]", folded_ref,
                                      "the base (A/B)" if label == "base" else "the baseline's profile")
            if label and not folded_ref:
                figures["note"] = (f"no profile of the {label} to compare with" +
                                   (": refresh the baseline with --update-baselines --agentmem-profile"
                                    if label == "baseline" else ""))
            evidence["profile"] = figures
            evidence["_folded_stacks"] = profile.get("folded_stacks")


def reference_of(measurement: Any) -> dict[str, Any]:
    """What a later run compares with: this measurement's statements and profile stacks."""
    evidence = getattr(measurement, "evidence", None) or {}
    out: dict[str, Any] = {}
    if "statements" in evidence:
        out["statements"] = evidence["statements"]
    if "db_ms_per_op" in evidence:
        out["db_ms_per_op"] = evidence["db_ms_per_op"]
    stacks = evidence.get("_folded_stacks") or (evidence.get("profile") or {}).get("folded_stacks")
    if stacks:
        out["folded_stacks"] = stacks
    return out


def public_evidence(measurement: Any) -> dict[str, Any]:
    """``measurement.evidence`` for the reports (without the raw stacks)."""
    evidence = getattr(measurement, "evidence", None) or {}
    out = {k: v for k, v in evidence.items() if not k.startswith("_")}
    profile = out.get("profile")
    if isinstance(profile, dict) and "folded_stacks" in profile:
        out["profile"] = {k: v for k, v in profile.items() if k != "folded_stacks"}
    return out
