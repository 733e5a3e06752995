"""Server-rendered SVG charts for the console (pure): a series of counts in, an inline ``<svg>`` out.

No script and nothing fetched: the console's pages embed the text as it is (its Content-Security-Policy allows no
inline script or style, and the charts need neither: colours are SVG presentation attributes). Each chart has a
``<title>`` and an ``aria-label`` saying what it shows, a y axis from 0 to a round maximum with three labelled
ticks (the middle one when it is a whole number), x labels at the first, middle and last points, and a legend per series; the numbers themselves are in the
table beside each chart on its page. Coordinates are written with one decimal, so a chart's text is a function of
its input alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 24, 28
COLOURS = ("#0b5cad", "#1a7f37", "#b3261e", "#7d4e00")


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]


def nice_max(value: float) -> int:
    """The smallest of 1, 2, 5 times a power of ten at or above ``value`` (1 for nothing above 0)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover (10 always is)


def _n(value: float) -> str:
    return f"{value:.1f}"


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _frame(title: str, labels: Sequence[str], series: Sequence[Series], top: int, kind: str) -> list[str]:
    bottom_y = HEIGHT - BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>",
           f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom_y}" stroke="#57606a"/>',
           f'<line class="axis" x1="{LEFT}" y1="{bottom_y}" x2="{WIDTH - RIGHT}" y2="{bottom_y}" stroke="#57606a"/>']
    for value in (0, top / 2, top) if top % 2 == 0 else (0, top):
        y = bottom_y - (bottom_y - TOP) * value / top
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{_n(y + 4)}" text-anchor="end" font-size="11">'
                   f"{_count(value)}</text>")
    for i, s in enumerate(series):
        x = LEFT + 8 + i * 150
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>'
                   f'<text class="legend" x="{x + 14}" y="15" font-size="11">{escape(s.name)}</text>')
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    shown = sorted({0, len(labels) // 2, len(labels) - 1}) if labels else []
    anchors = {0: "start", len(labels) - 1: "end"} if len(labels) > 1 else {}
    return [f'<text class="label" x="{_n(xs[i])}" y="{HEIGHT - 8}" text-anchor="{anchors.get(i, "middle")}" '
            f'font-size="11">{escape(labels[i])}</text>' for i in shown]


def _empty(title: str, kind: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}: no data">'
            f"<title>{escape(title)}: no data</title>"
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" font-size="13">no data yet</text></svg>')


def _check(labels: Sequence[str], series: Sequence[Series]) -> None:
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(labels)} labels: give one "
                             "value per label")
        if any(v < 0 for v in s.values):
            raise ValueError(f"series {s.name!r} has a negative value: the charts show counts")


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    """One polyline per series over ``labels`` (one value per label, counts), with a dot per point."""
    _check(labels, series)
    if not labels:
        return _empty(title, "line")
    top = nice_max(max((v for s in series for v in s.values), default=0))
    bottom_y = HEIGHT - BOTTOM
    span = WIDTH - RIGHT - LEFT - 16
    xs = [LEFT + 8 + (span * i / (len(labels) - 1) if len(labels) > 1 else span / 2) for i in range(len(labels))]
    out = _frame(title, labels, series, top, "line")
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = [(xs[j], bottom_y - (bottom_y - TOP) * v / top) for j, v in enumerate(s.values)]
        out.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{_n(x)},{_n(y)}" for x, y in points) + '"/>')
        out += [f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3" fill="{colour}"><title>{escape(s.name)} '
                f"{escape(labels[j])}: {_count(s.values[j])}</title></circle>" for j, (x, y) in enumerate(points)]
    return "\n".join(out + _x_labels(labels, xs) + ["</svg>"])


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    """Bars per label, the series side by side within each label's band (counts)."""
    _check(labels, series)
    if not labels or not series:
        return _empty(title, "bar")
    top = nice_max(max(v for s in series for v in s.values))
    bottom_y = HEIGHT - BOTTOM
    band = (WIDTH - RIGHT - LEFT - 8) / len(labels)
    bar = band * 0.8 / len(series)
    xs = [LEFT + 4 + band * (j + 0.5) for j in range(len(labels))]
    out = _frame(title, labels, series, top, "bar")
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for j, v in enumerate(s.values):
            h = (bottom_y - TOP) * v / top
            x = LEFT + 4 + band * j + band * 0.1 + bar * i
            out.append(f'<rect class="bar" x="{_n(x)}" y="{_n(bottom_y - h)}" width="{_n(bar)}" height="{_n(h)}" '
                       f'fill="{colour}"><title>{escape(s.name)} {escape(labels[j])}: {_count(v)}</title></rect>')
    return "\n".join(out + _x_labels(labels, xs) + ["</svg>"])


MAX_HOURS = 336
"""The most hours a per-hour chart draws (the latest); the page's table has the rest."""


def hour_series(counts: dict[str, float], max_hours: int = MAX_HOURS) -> tuple[list[str], tuple[float, ...]]:
    """Per-hour counts keyed by an hour written ``YYYY-MM-DDTHH`` (anything after is ignored, so ISO times such as
    ``2024-03-09T07:00:00Z`` do) as the labels (``MM-DD HHh``) and values of a chart: every hour from the first to
    the last, those without a count at 0, the latest ``max_hours`` of them."""
    import calendar
    import time
    by_ms: dict[int, float] = {}
    for hour, n in counts.items():
        t = calendar.timegm(time.strptime(hour[:13], "%Y-%m-%dT%H")) * 1000
        by_ms[t] = by_ms.get(t, 0) + n
    if not by_ms:
        return [], ()
    last = max(by_ms)
    first = max(min(by_ms), last - (max_hours - 1) * 3_600_000)
    hours = range(first, last + 1, 3_600_000)
    return ([time.strftime("%m-%d %Hh", time.gmtime(t // 1000)) for t in hours],
            tuple(by_ms.get(t, 0) for t in hours))
