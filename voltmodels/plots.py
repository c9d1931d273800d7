"""Figures logged by the entry points (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SPLIT_COLOURS = {"train": "#4C72B0", "val": "#55A868", "test": "#C44E52"}


def parity_plot(parts: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
    """Predicted vs DFT voltage with y = x and marginal histograms (paper Fig. 2a).

    `parts` maps a label (train/val/test or a method name) to (dft, predicted).
    """
    fig = plt.figure(figsize=(6, 6))
    grid = fig.add_gridspec(4, 4, hspace=0.05, wspace=0.05)
    ax = fig.add_subplot(grid[1:, :3])
    top = fig.add_subplot(grid[0, :3], sharex=ax)
    right = fig.add_subplot(grid[1:, 3], sharey=ax)
    values = np.concatenate([np.concatenate([t, p]) for t, p in parts.values()])
    lo, hi = float(values.min()) - 0.3, float(values.max()) + 0.3
    bins = np.linspace(lo, hi, 40)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, (true, pred)) in enumerate(parts.items()):
        colour = SPLIT_COLOURS.get(label, palette[i % len(palette)])
        mae = float(np.mean(np.abs(np.asarray(pred) - np.asarray(true)))) if len(true) else float("nan")
        ax.scatter(true, pred, s=8, alpha=0.6, color=colour, label=f"{label} (n={len(true)}, MAE {mae:.2f} V)")
        top.hist(true, bins=bins, color=colour, alpha=0.5)
        right.hist(pred, bins=bins, color=colour, alpha=0.5, orientation="horizontal")
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("DFT average voltage (V)")
    ax.set_ylabel("Predicted voltage (V)")
    ax.legend(loc="upper left", fontsize=8)
    top.axis("off")
    right.axis("off")
    top.set_title(title)
    return fig


def close(fig) -> None:
    plt.close(fig)
