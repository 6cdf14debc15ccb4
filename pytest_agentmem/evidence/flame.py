"""Folded stacks (py-spy ``raw``): flame graphs as SVG, and what grew between two profiles.

A profile is ``{stack: samples}`` with ``stack`` the frames root first, joined
by ``;`` (py-spy writes ``func (file)`` frames). :func:`render_flame` draws one
as a self-contained SVG (hover a frame for its samples and share);
:func:`render_diff` draws the candidate's with each frame coloured by how its
share of the samples changed against a reference (red: grew, blue: shrank);
:func:`functions_grown` ranks functions by the growth of their *self* share
(samples where the function itself was running), the one that points at the
code that got slower rather than at every caller above it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Folded = dict[str, int]

WIDTH = 1200
ROW = 16
MIN_WIDTH_PX = 0.5


def read_folded(path: str | Path) -> Folded:
    """The stacks of a py-spy ``raw`` file (missing or empty file: ``{}``)."""
    out: Folded = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out[stack] = out.get(stack, 0) + int(count)
    return out


def _function(frame: str) -> str:
    return frame.strip()


def shares(folded: Mapping[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """``(self_share, total_share)`` of every function: the fraction of samples it was the
    leaf of, and the fraction it was anywhere on the stack of (counted once per stack)."""
    total = sum(folded.values()) or 1
    own: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    for stack, count in folded.items():
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0.0) + count / total
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0.0) + count / total
    return own, inclusive


def top_functions(folded: Mapping[str, int], n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` functions with the largest self share."""
    own, inclusive = shares(folded)
    rows: list[dict[str, Any]] = [{"function": f, "self_share": s, "total_share": inclusive.get(f, 0.0)}
                                  for f, s in own.items()]
    rows.sort(key=lambda r: -float(r["self_share"]))
    return rows[:n]


def functions_grown(now: Mapping[str, int], reference: Mapping[str, int], n: int = 10) -> list[dict[str, Any]]:
    """Functions by the growth of their self share from ``reference`` to ``now`` (largest first)."""
    own_now, inc_now = shares(now)
    own_ref, inc_ref = shares(reference)
    rows: list[dict[str, Any]] = []
    for f in set(own_now) | set(own_ref):
        rows.append({"function": f, "self_share": own_now.get(f, 0.0), "ref_self_share": own_ref.get(f, 0.0),
                     "grew": own_now.get(f, 0.0) - own_ref.get(f, 0.0),
                     "total_share": inc_now.get(f, 0.0), "ref_total_share": inc_ref.get(f, 0.0)})
    rows.sort(key=lambda r: -float(r["grew"]))
    return rows[:n]


# --------------------------------------------------------------------------- drawing


def _tree(folded: Mapping[str, int]) -> dict[str, Any]:
    root: dict[str, Any] = {"name": "all", "value": 0, "children": {}}
    for stack, count in folded.items():
        node = root
        node["value"] += count
        for frame in (f for f in stack.split(";") if f):
            node = node["children"].setdefault(frame, {"name": frame, "value": 0, "children": {}})
            node["value"] += count
    return root


def _path_shares(folded: Mapping[str, int]) -> dict[tuple[str, ...], float]:
    total = sum(folded.values()) or 1
    out: dict[tuple[str, ...], float] = {}
    for stack, count in folded.items():
        frames = tuple(f for f in stack.split(";") if f)
        for depth in range(1, len(frames) + 1):
            out[frames[:depth]] = out.get(frames[:depth], 0.0) + count / total
    return out


def _warm(name: str) -> str:
    h = sum(ord(c) for c in name)
    return f"rgb({205 + h % 50},{90 + h % 110},{40 + h % 30})"


def _diff_colour(delta: float) -> str:
    strength = min(1.0, abs(delta) / 0.10)  # 10 points of share: full colour
    if delta >= 0:
        return f"rgb(255,{int(230 - 180 * strength)},{int(230 - 180 * strength)})"
    return f"rgb({int(230 - 180 * strength)},{int(230 - 180 * strength)},255)"


def _render(folded: Mapping[str, int], title: str, colour: Any, note: str = "") -> str:
    tree = _tree(folded)
    total = tree["value"] or 1

    rects: list[str] = []
    max_depth = 0

    def walk(node: dict[str, Any], x: float, depth: int, path: tuple[str, ...]) -> None:
        nonlocal max_depth
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            w = WIDTH * child["value"] / total
            if w >= MIN_WIDTH_PX:
                here = (*path, child["name"])
                max_depth = max(max_depth, depth + 1)
                rects.append(_rect(child, x, depth + 1, w, total, colour(here, child["name"])))
                walk(child, x, depth + 1, here)
            x += w

    rects.append(_rect(tree, 0.0, 0, WIDTH, total, "rgb(220,220,220)"))
    walk(tree, 0.0, 0, ())
    height = (max_depth + 1) * ROW + 40
    # flame graph: root at the bottom
    body = "".join(r.replace("__Y__", "") for r in rects)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="11">',
           f'<text x="4" y="14" font-size="13">{html.escape(title)}</text>',
           f'<text x="4" y="30" fill="#555">{html.escape(note or f"{total} samples")}</text>',
           f'<g transform="translate(0,{height - ROW}) scale(1,-1)">{body}</g></svg>']
    return "".join(out)


def _rect(node: dict[str, Any], x: float, depth: int, w: float, total: int, fill: str) -> str:
    share = 100.0 * node["value"] / total
    label = html.escape(node["name"])
    tip = f'{label} — {node["value"]} samples ({share:.1f} %)'
    y = depth * ROW
    text = ""
    if w > 40:
        chars = int((w - 6) / 6.6)
        shown = label if len(node["name"]) <= chars else html.escape(node["name"][:max(0, chars - 1)]) + "…"
        text = (f'<text x="{x + 3:.1f}" y="{-(y + 4)}" transform="scale(1,-1)">{shown}</text>')
    return (f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{max(w - 0.5, 0.1):.1f}" '
            f'height="{ROW - 1}" fill="{fill}"/>{text}</g>')


def render_flame(folded: Mapping[str, int], title: str) -> str:
    """A flame graph of ``folded`` as an SVG document."""
    return _render(folded, title, lambda path, name: _warm(name))


def render_diff(now: Mapping[str, int], reference: Mapping[str, int], title: str) -> str:
    """``now``'s flame graph, each frame red by how much its share grew against ``reference``
    (blue: shrank; white: unchanged)."""
    mine = _path_shares(now)
    theirs = _path_shares(reference)
    note = (f"{sum(now.values())} samples against {sum(reference.values())}; red: share of samples "
            "grew, blue: shrank (full colour: 10 points)")
    return _render(now, title, lambda path, name: _diff_colour(mine.get(path, 0.0) - theirs.get(path, 0.0)),
                   note)
