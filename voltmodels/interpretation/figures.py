"""Figures of the interpretation: element map, environment map, periodic table of local voltages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from voltmodels.graphs.encoding import MAX_ATOMIC_NUMBER
from voltmodels.interpretation.analysis import ElementMap
from voltmodels.interpretation.elements import element_symbol, group_label, periodic_group, periodic_position


def _plt():
    from voltmodels import plots  # sets the headless backend

    return plots.plt


VOLTAGE_CMAP = "viridis"
_BLOCK_MARKERS = {"s": "o", "p": "^", "d": "s", "f": "D"}


def _group_colours() -> dict[int, tuple]:
    """19 colours (f block + groups 1..18): tab20's dark shades first, so that neighbouring groups differ."""
    cmap = _plt().get_cmap("tab20")
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    return {g: cmap(order[i]) for i, g in enumerate([*range(1, 19), 0])}


def _block(z: int) -> str:
    group = periodic_group(z)
    if group == 0:
        return "f"
    if group <= 2 or z == 2:
        return "s"
    return "d" if group <= 12 else "p"


def _spread_labels(x: np.ndarray, y: np.ndarray, span_x: float, span_y: float, min_gap: float = 0.04) -> np.ndarray:
    """Label y positions (in the units of y), nudged upwards until no two labels overlap: closer than
    ``min_gap`` of the axis span (``span_y``) vertically and 1.5 x that of ``span_x`` horizontally.
    Labels are placed in the given order (the first ones stay where they are)."""
    span_x, span_y = max(span_x, 1e-9), max(span_y, 1e-9)
    placed: list[tuple[float, float]] = []
    out = np.array(y, dtype=float)
    for i in range(len(x)):
        fx, fy = x[i] / span_x, out[i] / span_y
        for _ in range(100):
            if all(abs(fx - px) > 1.5 * min_gap or abs(fy - py) > min_gap for px, py in placed):
                break
            fy += min_gap
        out[i] = fy * span_y
        placed.append((fx, fy))
    return out


def element_map_figure(emap: ElementMap, title: str):
    """Fig. 3a: PCA of the element vectors, coloured by periodic group (marker by block) and labelled;
    right: PC1 and PC2 against the covalent radius with their Pearson r."""
    plt = _plt()
    table = emap.table
    colours = _group_colours()
    fig, (ax, side) = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1.7, 1]})
    for group, sub in table.groupby("group"):
        for block, part in sub.groupby(sub["Z"].map(_block)):
            ax.scatter(part["pc1"], part["pc2"], s=65, marker=_BLOCK_MARKERS[block], color=colours[group], edgecolor="k", linewidth=0.5, zorder=2)
        ax.scatter([], [], s=45, marker=_BLOCK_MARKERS[_block(int(sub["Z"].iloc[0]))], color=colours[group], edgecolor="k", linewidth=0.5, label=group_label(group))
    # Elements with the same encoding have the same vector: one label "La/Ce" instead of a pile.
    keyed = table.assign(key=list(zip(table["pc1"].round(6), table["pc2"].round(6))))
    for _, same in keyed.groupby("key", sort=False):
        ax.annotate("/".join(same["element"]), (same["pc1"].iloc[0], same["pc2"].iloc[0]), xytext=(4, 4), textcoords="offset points", fontsize=8, zorder=3)
    ax.margins(0.07)
    ax.set_xlabel(f"Dimension 1 (PC1, {emap.explained_variance[0]:.0%} of variance)")
    ax.set_ylabel(f"Dimension 2 (PC2, {emap.explained_variance[1]:.0%} of variance)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="periodic group\n(o s, ^ p, [] d, <> f)", title_fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    r = emap.pc_radius_r
    for column, key, marker, colour in (("pc1", "pc1_covalent_radius_r", "o", "#4C72B0"), ("pc2", "pc2_covalent_radius_r", "s", "#C44E52")):
        side.scatter(table["covalent_radius"], table[column], s=25, marker=marker, color=colour, alpha=0.8, label=f"{column.upper()}  (Pearson r = {r[key]:+.2f})")
        if len(table) >= 3 and np.ptp(table["covalent_radius"]) > 0:
            slope, intercept = np.polyfit(table["covalent_radius"], table[column], 1)
            xs = np.linspace(table["covalent_radius"].min(), table["covalent_radius"].max(), 2)
            side.plot(xs, slope * xs + intercept, color=colour, lw=1, ls="--")
    side.set_xlabel("Covalent radius (Angstrom, Pyykkoe single-bond)")
    side.set_ylabel("Principal component")
    side.set_title("Principal components vs covalent radius", fontsize=10)
    side.legend(fontsize=9)
    side.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def environment_figure(
    coords: np.ndarray,
    voltages: np.ndarray,
    elements: Sequence[str],
    title: str,
    axis_labels: tuple[str, str] = ("Dimension 1", "Dimension 2"),
    n_labels: int = 14,
):
    """Fig. 3b / Suppl. Fig. 3: 2D map of local environments coloured by local voltage (colour range:
    2nd-98th percentile); the most common centre elements are labelled at their median position."""
    plt = _plt()
    coords = np.asarray(coords, float)
    voltages = np.asarray(voltages, float)
    fig, ax = plt.subplots(figsize=(8.5, 7))
    lo, hi = np.percentile(voltages, [2, 98]) if len(voltages) else (0.0, 1.0)
    order = np.argsort(voltages)  # high voltages drawn last, on top
    points = ax.scatter(coords[order, 0], coords[order, 1], c=voltages[order], s=4, cmap=VOLTAGE_CMAP, vmin=lo, vmax=hi, alpha=0.75, linewidth=0, rasterized=True)
    fig.colorbar(points, ax=ax, label="Local voltage (V)", extend="both", shrink=0.85)
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "element": list(elements)})
    common = frame["element"].value_counts().index[:n_labels]
    centres = frame[frame["element"].isin(common)].groupby("element")[["x", "y"]].median().loc[common]
    label_y = _spread_labels(centres["x"].to_numpy(), centres["y"].to_numpy(), np.ptp(coords[:, 0]), np.ptp(coords[:, 1]))
    for (element, centre), y in zip(centres.iterrows(), label_y):
        ax.annotate(
            element, (centre["x"], centre["y"]), xytext=(centre["x"], y), textcoords="data", fontsize=9, fontweight="bold", ha="center", va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.4", "alpha": 0.8},
            arrowprops={"arrowstyle": "-", "color": "0.3", "lw": 0.6} if abs(y - centre["y"]) > 1e-9 else None,
        )
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def periodic_table_figure(values: pd.DataFrame, title: str, value_label: str = "Median local voltage (V)"):
    """Fig. 3c: a periodic table coloured by ``values['median']`` (rows with Z, median, n; colour range
    5th-95th percentile of the medians, the printed numbers are exact); elements without a value are grey."""
    plt = _plt()
    from matplotlib import colors
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(15, 8.6))
    by_z = {int(row.Z): row for row in values.itertuples()}
    medians = values["median"].to_numpy(float) if len(values) else np.array([0.0, 1.0])
    lo, hi = (float(v) for v in np.nanpercentile(medians, [5, 95]))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    norm = colors.Normalize(lo, hi, clip=True)
    cmap = plt.get_cmap(VOLTAGE_CMAP)
    for z in range(1, MAX_ATOMIC_NUMBER + 1):
        row, col = periodic_position(z)
        x, y = col, -row
        hit = by_z.get(z)
        face = cmap(norm(hit.median)) if hit is not None else (0.94, 0.94, 0.94)
        ax.add_patch(Rectangle((x, y), 0.94, 0.94, facecolor=face, edgecolor="0.3" if hit is not None else "0.82", linewidth=0.8))
        text_colour = ("white" if norm(hit.median) < 0.6 else "black") if hit is not None else "0.6"
        ax.text(x + 0.47, y + 0.64, element_symbol(z), ha="center", va="center", fontsize=11, fontweight="bold", color=text_colour)
        if hit is not None:
            ax.text(x + 0.47, y + 0.35, f"{hit.median:.2f}", ha="center", va="center", fontsize=8.5, color=text_colour)
            ax.text(x + 0.47, y + 0.13, f"n={int(hit.n)}", ha="center", va="center", fontsize=6.5, color=text_colour)
    ax.set_xlim(-0.2, 18.1)
    ax.set_ylim(-9.2, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    colourbar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.04, pad=0.02, shrink=0.5, extend="both")
    colourbar.set_label(value_label)
    ax.set_title(title, fontsize=13)
    fig.tight_layout()
    return fig


def importance_figure(importances: pd.DataFrame, title: str):
    """The random-forest Gini importance bar chart, as the baselines step draws it."""
    from voltmodels.baselines.importances import importance_plot

    return importance_plot(importances, title)
