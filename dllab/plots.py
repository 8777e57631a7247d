"""Plots saved as PNG artifacts of a run (matplotlib's Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def line_plot(ctx, name: str, curves: dict[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str, xlabel: str, ylabel: str, references: dict[str, float] | None = None) -> Path:
    """Curves {label: (x, y)} and horizontal reference lines {label: y}, saved as `name`.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for label, (x, y) in curves.items():
        axis.plot(x, y, label=label)
    for index, (label, value) in enumerate((references or {}).items()):
        axis.axhline(value, linestyle="--", color=f"C{index + len(curves)}", label=f"{label} ({value:.3g})")
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return ctx.save_figure(figure, name)
