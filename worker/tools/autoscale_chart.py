"""The SVG of ``worker demo --autoscale``: replicas and the policy's wish over the fleet's rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

_W: Final = 760
_H: Final = 300
_LEFT: Final = 60
_TOP: Final = 40
_PLOT_W: Final = 640
_PLOT_H: Final = 200
_REPLICAS: Final = "#1f5fa8"
_WISH: Final = "#e07b00"
_LOAD: Final = "#cfe3f7"

#: (seconds, events/s, desired replicas, replicas)
Point = tuple[float, float, int, int]


class _Frame:
    """Where a value lands: time across, a value up, on a scale of its own."""

    def __init__(self, span: float) -> None:
        self.span = span or 1.0

    def x(self, at: float) -> float:
        return _LEFT + _PLOT_W * at / self.span

    @staticmethod
    def y(value: float, scale: float) -> float:
        return _TOP + _PLOT_H * (1 - value / scale)

    def steps(self, values: Sequence[tuple[float, float]], scale: float) -> str:
        """A step line: each value holds until the next one."""
        points: list[str] = []
        for n, (at, value) in enumerate(values):
            if n:
                points.append(f"{self.x(at):.1f},{self.y(values[n - 1][1], scale):.1f}")
            points.append(f"{self.x(at):.1f},{self.y(value, scale):.1f}")
        return " ".join(points)


def chart(points: Sequence[Point], most: int) -> str:
    """The whole SVG document."""
    frame = _Frame(max((p[0] for p in points), default=1.0))
    top_rate = max((p[1] for p in points), default=1.0) or 1.0
    scale = most + 0.5
    load = frame.steps([(p[0], p[1]) for p in points], top_rate)
    bottom = _TOP + _PLOT_H
    area = f"{frame.x(0):.1f},{bottom} {load} {frame.x(frame.span):.1f},{bottom}"
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        'font-family="sans-serif" font-size="12">',
        "<title>worker demo --autoscale: replicas over time</title>",
        f'<text x="{_LEFT}" y="20" font-size="14">Replicas over time (the fleet\'s rate shaded, '
        f"up to {top_rate:g} events/s)</text>",
    ]
    for n in range(most + 1):
        y = frame.y(n, scale)
        lines.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + _PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{n}</text>'
        )
    if points:
        wish = frame.steps([(p[0], p[2]) for p in points], scale)
        replicas = frame.steps([(p[0], p[3]) for p in points], scale)
        lines += [
            f'<polygon points="{area}" fill="{_LOAD}" stroke="none"/>',
            f'<polyline points="{wish}" fill="none" stroke="{_WISH}" stroke-width="1.5" '
            'stroke-dasharray="5,4"/>',
            f'<polyline points="{replicas}" fill="none" stroke="{_REPLICAS}" stroke-width="2.5"/>',
        ]
    lines += [
        f'<text x="{_LEFT}" y="{bottom + 20}">0 s</text>',
        f'<text x="{_LEFT + _PLOT_W}" y="{bottom + 20}" text-anchor="end">'
        f"{frame.span:.0f} s</text>",
        f'<text x="{_LEFT}" y="{_H - 15}" fill="{_REPLICAS}">— replicas</text>',
        f'<text x="{_LEFT + 110}" y="{_H - 15}" fill="{_WISH}">- - the policy\'s wish</text>',
        f'<text x="{_LEFT + 280}" y="{_H - 15}" fill="#5b8fc7">▮ events/s</text>',
        "</svg>",
    ]
    return "\n".join(lines) + "\n"
