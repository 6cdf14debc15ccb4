"""Chart primitives: small, dependency-free inline SVG generated in Python.

Every function returns one ``<svg>`` element as a string; all text passes through
:func:`html.escape`. Charts size themselves with a ``viewBox`` so they scale with
the page. The palette is shared with the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from ..presentation import compact_number

# --------------------------------------------------------------------------- palette

GREEN = "#1a7f37"
RED = "#cf222e"
BLUE = "#0969da"
AMBER = "#bf8700"
GREY = "#8c959f"
LIGHT = "#d0d7de"
INK = "#1f2328"
MUTED = "#59636e"
SERIES = ("#0969da", "#8250df", "#bc4c00", "#1a7f37", "#cf222e", "#57606a")

FONT = "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


@dataclass
class Series:
    """A named line of ``(x, y)`` points."""

    name: str
    points: list[tuple[float, float]]
    color: str = BLUE
    dashed: bool = False
    markers: bool = False


@dataclass
class Axis:
    """How one axis maps values: an optional transform and tick labels."""

    label: str = ""
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (value, text); empty: nice ticks
    minimum: float | None = None
    maximum: float | None = None


# --------------------------------------------------------------------------- numbers


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]`` (1, 2, 2.5, 5 x 10^n steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


#: Numbers on charts: the presentation vocabulary's compact form (``1.23k``, ``12.3``, ``0.0042``).
fmt_number = compact_number


# --------------------------------------------------------------------------- frame


class _Frame:
    """The plot rectangle inside an SVG and the value -> pixel maps."""

    def __init__(self, width: int, height: int, left: int = 56, right: int = 16,
                 top: int = 28, bottom: int = 38) -> None:
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y0 is the bottom edge
        self.xmin = self.xmax = self.ymin = self.ymax = 0.0

    def set_x(self, low: float, high: float) -> None:
        self.xmin, self.xmax = low, (high if high > low else low + 1)

    def set_y(self, low: float, high: float) -> None:
        self.ymin, self.ymax = low, (high if high > low else low + 1)

    def px(self, x: float) -> float:
        return self.x0 + (x - self.xmin) / (self.xmax - self.xmin) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        return self.y0 - (y - self.ymin) / (self.ymax - self.ymin) * (self.y0 - self.y1)


def _open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="{escape(title)}" style="{FONT};max-width:{width}px">',
            f"<title>{escape(title)}</title>"]


def _text(x: float, y: float, text: str, *, size: int = 11, anchor: str = "start",
          color: str = MUTED, weight: str = "normal", rotate: bool = False) -> str:
    transform = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}" '
            f'text-anchor="{anchor}" font-weight="{weight}"{transform}>{escape(text)}</text>')


def _legend(items: Sequence[tuple[str, str, bool]], x: float, y: float) -> list[str]:
    """A one-line legend: (name, colour, dashed) entries from (x, y) to the right."""
    out: list[str] = []
    for name, color, dashed in items:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 16:.1f}" y2="{y - 4:.1f}" '
                   f'stroke="{color}" stroke-width="2.5"{dash}/>')
        out.append(_text(x + 20, y, name, color=INK))
        x += 30 + 6.5 * len(name)
    return out


def _y_grid(frame: _Frame, ticks: Sequence[float], *, side: str = "left",
            grid: bool = True) -> list[str]:
    out: list[str] = []
    for tick in ticks:
        y = frame.py(tick)
        if grid:
            out.append(f'<line x1="{frame.x0}" y1="{y:.1f}" x2="{frame.x1}" y2="{y:.1f}" '
                       f'stroke="{LIGHT}" stroke-width="1"/>')
        if side == "left":
            out.append(_text(frame.x0 - 6, y + 4, fmt_number(tick), anchor="end"))
        else:
            out.append(_text(frame.x1 + 6, y + 4, fmt_number(tick), anchor="start"))
    return out


def _x_ticks(frame: _Frame, ticks: Sequence[tuple[float, str]]) -> list[str]:
    out = [f'<line x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x1}" y2="{frame.y0}" '
           f'stroke="{GREY}" stroke-width="1"/>']
    for value, label in ticks:
        x = frame.px(value)
        out.append(f'<line x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" y2="{frame.y0 + 4}" stroke="{GREY}"/>')
        out.append(_text(x, frame.y0 + 16, label, anchor="middle"))
    return out


def empty_chart(title: str, message: str, *, width: int = 560, height: int = 120) -> str:
    """A placeholder panel saying why there is no chart."""
    out = _open(width, height, title)
    out.append(f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="6" '
               f'fill="#f6f8fa" stroke="{LIGHT}"/>')
    out.append(_text(14, 22, title, size=13, color=INK, weight="600"))
    out.append(_text(width / 2, height / 2 + 10, message, anchor="middle"))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- charts


def line_chart(title: str, series: Sequence[Series], *, x_axis: Axis | None = None,
               y_axis: Axis | None = None, width: int = 560, height: int = 260) -> str:
    """Lines (optionally dashed, with point markers) on shared axes, with a legend."""
    x_axis = x_axis or Axis()
    y_axis = y_axis or Axis()
    points = [p for s in series for p in s.points if all(math.isfinite(v) for v in p)]
    if not points:
        return empty_chart(title, "no data", width=width)
    frame = _Frame(width, height)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    xlow = x_axis.minimum if x_axis.minimum is not None else min(xs)
    xhigh = x_axis.maximum if x_axis.maximum is not None else max(xs)
    frame.set_x(xlow, xhigh)
    yticks = nice_ticks(y_axis.minimum if y_axis.minimum is not None else min(0.0, min(ys)),
                        max(ys) * 1.05 if max(ys) > 0 else 1.0)
    frame.set_y(yticks[0], yticks[-1])
    out = _open(width, height, title)
    out.append(_text(frame.x0, 16, title, size=13, color=INK, weight="600"))
    out += _y_grid(frame, yticks)
    xticks = x_axis.ticks or [(t, fmt_number(t)) for t in nice_ticks(xlow, xhigh, 6)
                              if xlow <= t <= xhigh]
    out += _x_ticks(frame, xticks)
    if x_axis.label:
        out.append(_text((frame.x0 + frame.x1) / 2, height - 4, x_axis.label, anchor="middle"))
    if y_axis.label:
        out.append(_text(14, (frame.y0 + frame.y1) / 2, y_axis.label, anchor="middle", rotate=True))
    for s in series:
        pts = [p for p in s.points if all(math.isfinite(v) for v in p)]
        if not pts:
            continue
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        path = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in pts)
        if len(pts) > 1:
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" '
                       f'stroke-width="2" stroke-linejoin="round"{dash}/>')
        if s.markers or len(pts) == 1:
            for x, y in pts:
                out.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3.5" '
                           f'fill="#fff" stroke="{s.color}" stroke-width="2"/>')
    out += _legend([(s.name, s.color, s.dashed) for s in series if s.points],
                   max(frame.x1 - sum(30 + 6.5 * len(s.name) for s in series if s.points), frame.x0 + 160),
                   16)
    out.append("</svg>")
    return "".join(out)


def timeline_chart(title: str, t: Sequence[float], ops: Sequence[float], p95: Sequence[float | None],
                   errors: Sequence[float] = (), *, width: int = 560, height: int = 260) -> str:
    """Throughput per second as bars (left axis) and p95 as a line (right axis)."""
    if not t:
        return empty_chart(title, "no timeline recorded", width=width)
    frame = _Frame(width, height, right=56)
    step = (t[1] - t[0]) if len(t) > 1 else 1.0
    frame.set_x(min(t) - step / 2, max(t) + step / 2)
    left = nice_ticks(0, max(ops) * 1.05 if max(ops, default=0) > 0 else 1.0)
    frame.set_y(0, left[-1])
    out = _open(width, height, title)
    out.append(_text(frame.x0, 16, title, size=13, color=INK, weight="600"))
    out += _y_grid(frame, left)
    xticks = [(v, f"{fmt_number(v)} s") for v in nice_ticks(min(t), max(t), 6) if min(t) <= v <= max(t)]
    out += _x_ticks(frame, xticks)
    out.append(_text(14, (frame.y0 + frame.y1) / 2, "ops/s", anchor="middle", rotate=True, color=BLUE))
    bar_w = max(1.0, (frame.px(step) - frame.px(0)) * 0.7)
    for i, (x, n) in enumerate(zip(t, ops)):
        y = frame.py(n)
        out.append(f'<rect x="{frame.px(x) - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                   f'height="{max(frame.y0 - y, 0):.1f}" fill="{BLUE}" fill-opacity="0.35"/>')
        err = errors[i] if i < len(errors) else 0
        if err:
            ey = frame.py(min(err, left[-1]))
            out.append(f'<rect x="{frame.px(x) - bar_w / 2:.1f}" y="{ey:.1f}" width="{bar_w:.1f}" '
                       f'height="{max(frame.y0 - ey, 1.5):.1f}" fill="{RED}" fill-opacity="0.8"/>')
    valid = [(x, v) for x, v in zip(t, p95) if v is not None and math.isfinite(v)]
    legend = [("ops/s", BLUE, False)]
    if valid:
        right = nice_ticks(0, max(v for _, v in valid) * 1.1 or 1.0)
        rframe = _Frame(width, height, right=56)
        rframe.set_x(frame.xmin, frame.xmax)
        rframe.set_y(0, right[-1])
        out += _y_grid(rframe, right, side="right", grid=False)
        out.append(_text(width - 8, (frame.y0 + frame.y1) / 2, "p95 ms", anchor="middle",
                         rotate=True, color=AMBER))
        path = " ".join(f"{rframe.px(x):.1f},{rframe.py(v):.1f}" for x, v in valid)
        out.append(f'<polyline points="{path}" fill="none" stroke="{AMBER}" stroke-width="2.2" '
                   'stroke-linejoin="round"/>')
        if len(valid) == 1:
            x, v = valid[0]
            out.append(f'<circle cx="{rframe.px(x):.1f}" cy="{rframe.py(v):.1f}" r="3.5" fill="{AMBER}"/>')
        legend.append(("p95 ms", AMBER, False))
    if any(errors):
        legend.append(("errors/s", RED, False))
    out += _legend(legend, frame.x1 - sum(30 + 6.5 * len(n) for n, _, _ in legend), 16)
    out.append("</svg>")
    return "".join(out)


@dataclass
class BarPair:
    """One metric's baseline and current value, drawn on the metric's own scale."""

    label: str
    current: float
    baseline: float | None = None
    color: str = BLUE
    note: str = ""  # e.g. "+12% better"
    note_color: str | None = None  # default: ``color``


def paired_bars(title: str, rows: Sequence[BarPair], *, width: int = 560) -> str:
    """Baseline (grey) against current (coloured) per metric, each row on its own scale."""
    if not rows:
        return empty_chart(title, "no metrics", width=width)
    row_h, top, label_w, value_w = 40, 40, 120, 150
    height = top + row_h * len(rows) + 8
    x0, x1 = label_w, width - value_w
    out = _open(width, height, title)
    out.append(_text(8, 16, title, size=13, color=INK, weight="600"))
    out += _legend([("baseline", GREY, False), ("this run", BLUE, False)], width - 190, 16)
    for i, row in enumerate(rows):
        y = top + i * row_h
        scale = max(abs(row.current), abs(row.baseline or 0.0)) or 1.0
        out.append(_text(label_w - 8, y + 19, row.label, anchor="end", color=INK, weight="600"))
        if row.baseline is not None:
            bw = (x1 - x0) * abs(row.baseline) / scale
            out.append(f'<rect x="{x0}" y="{y + 4}" width="{max(bw, 1):.1f}" height="12" rx="2" fill="{GREY}" '
                       'fill-opacity="0.55"/>')
            out.append(_text(x0 + max(bw, 1) + 5, y + 14, fmt_number(row.baseline), size=10))
        cw = (x1 - x0) * abs(row.current) / scale
        out.append(f'<rect x="{x0}" y="{y + 18}" width="{max(cw, 1):.1f}" height="14" rx="2" fill="{row.color}"/>')
        out.append(_text(x0 + max(cw, 1) + 5, y + 29, fmt_number(row.current), size=11, color=INK,
                         weight="600"))
        if row.note:
            out.append(_text(width - 6, y + 23, row.note, anchor="end", color=row.note_color or row.color,
                             weight="600"))
    out.append("</svg>")
    return "".join(out)


def hbar_chart(title: str, items: Sequence[tuple[str, float]], *, color: str = RED,
               width: int = 560) -> str:
    """Horizontal bars of counts, largest first (e.g. errors by type)."""
    if not items:
        return empty_chart(title, "no errors", width=width, height=70)
    items = sorted(items, key=lambda kv: -kv[1])
    row_h, top, label_w = 24, 30, 200
    height = top + row_h * len(items) + 6
    largest = max(v for _, v in items) or 1.0
    out = _open(width, height, title)
    out.append(_text(8, 16, title, size=13, color=INK, weight="600"))
    for i, (label, value) in enumerate(items):
        y = top + i * row_h
        shown = label if len(label) <= 30 else label[:29] + "…"
        out.append(_text(label_w - 8, y + 14, shown, anchor="end", color=INK))
        bw = (width - label_w - 70) * value / largest
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(bw, 1):.1f}" height="15" rx="2" '
                   f'fill="{color}" fill-opacity="0.8"/>')
        out.append(_text(label_w + max(bw, 1) + 6, y + 15, fmt_number(value), color=INK))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- percentiles


def nines(percentile: float) -> float:
    """The x position of a percentile on a 'number of nines' axis (p90=1, p99=2 ...).

    The maximum (p100) sits half a step right of p99.99.
    """
    if percentile >= 100:
        return 4.5
    return -math.log10(max(1e-4, 1 - percentile / 100))


NINES_TICKS = [(nines(p), label) for p, label in
               ((50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p99.9"), (99.99, "p99.99"), (100, "max"))]


def percentile_chart(title: str, series: Sequence[Series], *, width: int = 560,
                     height: int = 260) -> str:
    """Latency against percentile on a nines axis; ``series`` points are (percentile, ms)."""
    mapped = [Series(s.name, [(nines(p), v) for p, v in s.points], s.color, s.dashed, s.markers)
              for s in series]
    top = max((x for s in mapped for x, _ in s.points), default=2.0)
    ticks = [(x, label) for x, label in NINES_TICKS if x <= top + 1e-9]
    return line_chart(title, mapped, x_axis=Axis("percentile", ticks, 0.0, max(top, 1.0)),
                      y_axis=Axis("latency ms", minimum=0.0), width=width, height=height)
