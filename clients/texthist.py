"""A 1-D histogram drawn as text: ``#`` bars, one line per bin, for any terminal or log.

Shared by the job's :class:`~clients.job.Histogram` module and the demo's live monitor.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["text_histogram"]


def text_histogram(h: Any, *, width: int = 50, title: str | None = None, stats: tuple | None = None) -> str:
    """A 1-D ``hist.Hist`` drawn with ``#`` bars, one line per bin, for any terminal or log.

    Args:
        h (hist.Hist): a one-dimensional histogram.
        width (int): characters of the longest bar; default 50.
        title (str): first line; default the axis label.
        stats (tuple): ``(entries, mean, std)`` to show instead of what the bins say.
    """
    axis = h.axes[0]
    counts = h.values()
    flow = h.values(flow=True)
    under, over = float(flow[0]), float(flow[-1])
    edges = axis.edges
    if stats is None:
        total = float(counts.sum())
        centers = axis.centers
        mean = float((counts * centers).sum() / total) if total else math.nan
        std = float(math.sqrt(max(0.0, (counts * (centers - mean) ** 2).sum() / total))) if total else math.nan
        stats = (int(total + under + over), mean, std)
    entries, mean, std = stats
    head = title or axis.label or axis.name or "histogram"
    lines = [f"{head}: {entries} entries, mean {mean:.4g}, std dev {std:.4g}"
             f" (underflow {under:g}, overflow {over:g})"]
    top = float(counts.max()) if len(counts) else 0.0
    label = max(len(f"{e:g}") for e in edges)
    digits = max(1, len(f"{top:g}"))
    for lo, hi, c in zip(edges[:-1], edges[1:], counts):
        bar = "#" * (round(width * c / top) if top else 0)
        if c and not bar:
            bar = "."
        lines.append(f"{lo:>{label}g} - {hi:<{label}g} |{bar:<{width}}| {c:>{digits}g}")
    return "\n".join(lines)
