"""``python -m pytest_agentmem.history``: import reports, list change points, write trend pages.

::

    python -m pytest_agentmem.history import  --store TARGET [--commit SHA] [--branch B] REPORT.json ...
    python -m pytest_agentmem.history changes --store TARGET [--branch B | --any-branch] [--test T]
                                              [--metric M] [--max-pvalue P] [--min-magnitude F] [--json]
    python -m pytest_agentmem.history trends  --store TARGET --out DIR [--commit-url TEMPLATE] ...

``--store`` defaults to the ``AGENTMEM_HISTORY`` environment variable. Exit
status: 0, or 2 for a usage error or a store that cannot be read or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from ..config import env_value
from ..history_target import Target, parse_target
from ..presentation import format_number
from .changepoints import MAX_PVALUE
from .importer import import_report
from .series import Change, find_changes, load_series
from .store import HistoryError, open_store

DEFAULT_BRANCH = "main"


def _target(text: str | None) -> Target:
    if not text:
        try:
            found = env_value("AGENTMEM_HISTORY")  # parsed as --agentmem-history parses it
        except pytest.UsageError as exc:
            raise HistoryError(str(exc)) from None
        if found is not None:
            return found  # type: ignore[no-any-return]
        text = ""
    if not text.strip():
        raise HistoryError("no history store given: pass --store TARGET (a SQLite path or postgresql://...) "
                           "or set AGENTMEM_HISTORY")
    try:
        return parse_target(text)
    except pytest.UsageError as exc:
        raise HistoryError(str(exc).replace("--agentmem-history", "--store")) from None


def _branch(args: argparse.Namespace) -> str | None:
    return None if args.any_branch else args.branch


def cmd_import(args: argparse.Namespace) -> int:
    store = open_store(_target(args.store))
    for name in args.reports:
        stored, figures = import_report(
            store, Path(name), commit=args.commit, branch=args.branch)
        print(f"{name}: {'imported' if stored else 'already in the store'} ({figures} figures)")
    return 0


def _short(commit: str | None) -> str:
    return (commit or "?")[:10]


def changes_table(changes: Sequence[Change]) -> list[str]:
    """The change points as text lines (a header, then one line each)."""
    if not changes:
        return ["no change points found"]
    rows = [("series", "commits", "before", "after", "change", "confidence", "")]
    for c in changes:
        key = c.series.key
        kind = {True: "regression", False: "improvement", None: ""}[c.regression]
        rows.append((f"{key.test} {key.measurement}.{key.metric} @{key.machine_id[:8]}"
                     + (f" w{key.workload_id[:6]}" if key.workload_id else ""),
                     f"{_short(c.commit_before)}..{_short(c.commit)}", format_number(c.point.mean_before),
                     format_number(c.point.mean_after), f"{c.point.change:+.1%}",
                     f"{c.point.confidence:.4f}", kind))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths[:-1]))
    return lines


def cmd_changes(args: argparse.Namespace) -> int:
    store = open_store(_target(args.store), create=False)
    series = load_series(store, branch=_branch(args), test=args.test, metric=args.metric,
                         statistic=args.statistic)
    changes = find_changes(series, max_pvalue=args.max_pvalue, min_magnitude=args.min_magnitude,
                           test=args.significance)
    if args.json:
        print(json.dumps({"series": len(series), "changes": [c.to_dict() for c in changes]}, indent=2,
                         allow_nan=False, default=str))
    else:
        print(f"{len(series)} series, {len(changes)} change points "
              f"(E-divisive, {args.significance} p <= {args.max_pvalue:g}, newest first)")
        for line in changes_table(changes):
            print(line)
    return 0


def cmd_trends(args: argparse.Namespace) -> int:
    from .trends import write_trends

    store = open_store(_target(args.store), create=False)
    series = load_series(store, branch=_branch(args), test=args.test, metric=args.metric,
                         statistic=args.statistic)
    pages = write_trends(Path(args.out), series, commit_url=args.commit_url, max_pvalue=args.max_pvalue,
                         min_magnitude=args.min_magnitude, title=args.title, test_kind=args.significance)
    print(f"{len(pages)} pages written to {args.out} (open {Path(args.out) / 'index.html'})")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m pytest_agentmem.history",
                                  description="pytest-agentmem history: back-fill, change points, trend pages")
    sub = top.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", help="history store: a SQLite path, sqlite:///path or postgresql://... "
                                       "(default: $AGENTMEM_HISTORY)")

    def reading(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--branch", default=DEFAULT_BRANCH, help="runs of this branch only (default: main)")
        p.add_argument("--any-branch", action="store_true", help="runs of every branch")
        p.add_argument("--test", help="tests whose node id contains this text")
        p.add_argument("--metric", help="this metric only (e.g. p95_ms)")
        p.add_argument("--max-pvalue", type=float, default=MAX_PVALUE,
                       help=f"significance level of a change point (default {MAX_PVALUE}, as Otava)")
        p.add_argument("--min-magnitude", type=float, default=0.0,
                       help="smallest relative change reported, e.g. 0.02 (default 0)")
        p.add_argument("--statistic", choices=("value", "median", "best"), default="value",
                       help="each run's point: its headline value (default), the median of its rounds, or "
                            "its best round (a busy machine only makes a round worse)")
        p.add_argument("--significance", choices=("ttest", "ranks", "permutation"), default="ttest",
                       help="test of a split: Student's t (default, as Otava), ranks (Mann-Whitney: "
                            "one wild run sways it less) or permutations (Matteson and James)")

    p = sub.add_parser("import", help="append JSON reports (--agentmem-report) of earlier runs")
    common(p)
    p.add_argument("--commit", help="commit the reports measured (default: the report's own)")
    p.add_argument("--branch", help="branch the reports measured (default: the report's own)")
    p.add_argument("reports", nargs="+", help="JSON report files")
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("changes", help="change points of every series (table, or --json)")
    reading(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_changes)

    p = sub.add_parser("trends", help="write a static HTML page per test")
    reading(p)
    p.add_argument("--out", required=True, help="folder of the pages (index.html and one page a test)")
    p.add_argument("--commit-url", help="link of a commit, {commit} replaced by its sha, e.g. "
                                        "https://github.com/OWNER/REPO/commit/{commit}")
    p.add_argument("--title", default="pytest-agentmem trends", help="title of the pages")
    p.set_defaults(run=cmd_trends)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HistoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
