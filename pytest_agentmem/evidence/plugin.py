"""The evidence's own plugin object: keeps the baselines' evidence with the baselines.

With ``--update-baselines``, a perf test that passed has its measurements'
statements and profile stacks written beside its baseline (:mod:`.store`), so a
later run can say which statements and functions grew against it.
"""

from __future__ import annotations

import pytest

from ..measurement import measurements_of
from ..session import get_session
from .run import reference_of
from .store import baseline_folder, write_reference


class EvidencePlugin:
    """Registered as ``agentmem-evidence``."""

    NAME = "agentmem-evidence"

    @pytest.hookimpl(tryfirst=True)  # a firstresult hook: ours returns None and lets pytest's run
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        if call.when != "call" or call.excinfo is not None:
            return
        settings = get_session(item.config).settings
        if not settings.update_baselines or settings.ab_role == "base":
            return
        references = {m.name: reference_of(m) for m in measurements_of(item) if getattr(m, "evidence", None)}
        references = {name: ref for name, ref in references.items() if ref}
        if references:
            write_reference(baseline_folder(item, settings.baselines_dir), item.nodeid, references)
