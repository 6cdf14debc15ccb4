"""The reliability table of docs/figures.md: figures the reliability tests file, and their rendering.

Each fault scenario (tests/test_faults.py), the property tests
(tests/test_properties.py) and the soak (tests/quality/test_soak.py) call
:func:`tally` with what they measured; with ``AGENTMEM_RELIABILITY_LOG=PATH`` set
each call appends one JSON line to PATH (otherwise nothing is written).
``python tests/reliability.py PATH`` prints the table of one run::

    AGENTMEM_RELIABILITY_LOG=/tmp/rel.jsonl python -m pytest -p no:cacheprovider --agentmem-perf \
        tests/test_faults.py tests/test_properties.py tests/quality/test_soak.py
    python tests/reliability.py /tmp/rel.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

ENV = "AGENTMEM_RELIABILITY_LOG"


def tally(kind: str, name: str, **figures: Any) -> None:
    """File one test's figures (``kind``: fault, inputs or soak) when the log is on."""
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": kind, "name": name, **figures}, sort_keys=True) + "\n")


def render(rows: list[dict[str, Any]]) -> str:
    """The markdown table of one run's tallies."""
    faults = [r for r in rows if r["kind"] == "fault"]
    inputs = [r for r in rows if r["kind"] == "inputs"]
    soaks = [r for r in rows if r["kind"] == "soak"]
    total = lambda key, items: sum(int(r.get(key) or 0) for r in items)  # noqa: E731
    lines = ["| measure | result | goal |", "|---|---|---|"]
    lines.append(f"| faults injected (scenarios) | {total('injected', faults)} ({len(faults)}: "
                 + ", ".join(r["name"] for r in faults) + ") | |")
    lines.append(f"| faults survived (server answered again, workload continued) | "
                 f"{total('survived', faults)} | all |")
    lines.append(f"| operations failed during faults / operations run | {total('ops_failed', faults)} / "
                 f"{total('ops', faults)} | counted, none hung |")
    lines.append(f"| acknowledged writes checked / lost | {total('acknowledged', faults)} / "
                 f"{total('lost', faults)} | 0 lost |")
    lines.append(f"| in-flight writes (in doubt) / of them stored | {total('in_doubt', faults)} / "
                 f"{total('in_doubt_stored', faults)} | reported, not lost |")
    lines.append(f"| stale reads (deleted memory served, cache != database, graph drift) | "
                 f"{total('stale', faults)} of {total('queries', faults)} audit queries | 0 |")
    lines.append(f"| bad inputs tried / rejected cleanly (InvalidMemoryError) / stored and read back "
                 f"identically | {total('tried', inputs)} / {total('rejected', inputs)} / "
                 f"{total('stored', inputs)} | every one of the two |")
    for soak in soaks:
        lines.append(f"| soak RSS growth ({soak['duration_s']:.0f} s, {soak['ops']} ops) | "
                     f"{soak['rss_growth_mb']:+.1f} MB ({soak['rss_first_mb']:.0f} -> {soak['rss_last_mb']:.0f} MB); "
                     f"p95 first/last window {soak['p95_first_ms']:.1f} / {soak['p95_last_ms']:.1f} ms | bounded |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} LOG.jsonl", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
