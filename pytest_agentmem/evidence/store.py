"""The evidence a stored baseline was measured with: its statements and its profile.

Written beside the baseline (``<folder>/evidence/<test>.json``, where ``<folder>`` holds
the test's baseline file: the baselines folder, or a machine's own set in its
``machines/<key>/``) by ``--update-baselines`` for the tests that passed, read by later
runs to say which statements and functions grew against the baseline. The gate says
which folder that is (:data:`BASELINE_FOLDER_KEY`), so each machine's set keeps the
evidence it was recorded with. A baseline refreshed without ``--agentmem-profile``
keeps no profile: a later profile is then shown alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: The folder holding an item's baseline file (set by the gate: the one it compares with,
#: then the one ``--update-baselines`` wrote); absent: the baselines folder itself.
BASELINE_FOLDER_KEY = pytest.StashKey[Path]()


def baseline_folder(item: pytest.Item, baselines_dir: Path) -> Path:
    """Where ``item``'s baseline, and so its evidence, lives (:data:`BASELINE_FOLDER_KEY`)."""
    return item.stash.get(BASELINE_FOLDER_KEY, Path(baselines_dir))


def evidence_path(baselines_dir: Path, nodeid: str) -> Path:
    """``<baselines_dir>/evidence/<safe node id>-<10 hex of sha256(node id)>.json`` (the
    baseline file's name, as gate.baseline.baseline_path spells it)."""
    safe = _UNSAFE.sub("_", nodeid.replace("::", "__")).strip("._")[:100] or "test"
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:10]
    return Path(baselines_dir) / "evidence" / f"{safe}-{digest}.json"


def load_reference(baselines_dir: Path, nodeid: str) -> dict[str, Any]:
    """``{measurement name: {"statements": [...], "folded": {...}}}`` (empty if none or unreadable)."""
    path = evidence_path(baselines_dir, nodeid)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    measurements = data.get("measurements")
    return measurements if isinstance(measurements, dict) else {}


def write_reference(baselines_dir: Path, nodeid: str, measurements: dict[str, Any]) -> Path:
    """Write the reference evidence of ``nodeid`` atomically (key-sorted JSON)."""
    path = evidence_path(baselines_dir, nodeid)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": VERSION, "nodeid": nodeid, "measurements": measurements},
                      sort_keys=True, indent=1)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".evidence-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
    return path
