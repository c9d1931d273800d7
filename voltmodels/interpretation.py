"""Interpretation of a trained CGCNN: element maps, local-environment maps, local voltages.

Zhang et al. (2022), Fig. 3 and Methods ("Element representations", "Local environment
representations", Eq. 2):

* **Element representations** -- the 64-dim vectors after the embedding layer
  (:meth:`CGCNN.element_vectors`) of every element present, projected on their first two principal
  components (Fig. 3a). The paper finds a linear relation between covalent radius and one principal
  component; :func:`element_map` reports the Pearson r of PC1 and PC2 with the covalent radius
  (Pyykkoe & Atsumi single-bond radii, the table the input encoding bins). The sign of a principal
  component is arbitrary, so only |r| is meaningful.
* **Local-environment representations** -- the vectors after the last convolution
  (:meth:`CGCNN.atom_vectors`) of atoms in an *oxygen-coordination environment*, projected by PCA
  (Fig. 3b) and t-SNE (Suppl. Fig. 3).
* **Local voltages** (Eq. 2) -- per-atom voltages from the model's own ``local_head``
  (:meth:`CGCNN.local_voltages`, the head the serving pyfunc returns with
  ``params={"local_voltages": True}``); their median per element over the oxygen environments is
  drawn on a periodic table (Fig. 3c). The head is fitted so that the crystal mean of the local
  voltages approximates the crystal prediction; :func:`local_head_fidelity` measures how closely.

Oxygen-coordination environment
-------------------------------
The paper keeps atoms with "at least two oxygen atoms as neighbours". Among the crystal graph's
neighbours (the 12 nearest within 8 Angstrom) nearly every atom of an oxide has two oxygens, so the
graph alone does not single out a coordination shell. Here an oxygen *neighbour* of atom i is a graph
edge i -> O whose length is at most ``bond_tolerance`` x (r_cov(i) + r_cov(O)) (covalent radii as
above; tolerance 1.3 gives e.g. Li-O 2.55, Na-O 2.83, K-O 3.37, Mg-O 2.63, Fe-O 2.33, Co-O 2.26,
P-O 2.26 Angstrom: the first coordination shell of cations of any size, while O-O contacts
(1.64 Angstrom) only count for peroxides). Periodic images count separately, as they do in the
graph. An atom with at least ``min_oxygen`` (2) oxygen neighbours is an oxygen environment.
``bond_tolerance=None`` counts every graph neighbour instead (the loose reading), for comparison.

Nothing here knows about MLflow: ``pipelines/interpret.py`` loads models and logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from voltmodels.config import VoltmodelsError
from voltmodels.graphs.batch import collate
from voltmodels.graphs.encoding import COVALENT_RADII_PYYKKO, MAX_ATOMIC_NUMBER, element_feature_table
from voltmodels.graphs.graph import CrystalGraph, GraphSettings

OXYGEN = 8
DEFAULT_BOND_TOLERANCE = 1.3
MIN_OXYGEN_NEIGHBOURS = 2

OXYGEN_ENVIRONMENT_DEFINITION = (
    "atom with >= {min_oxygen} oxygen neighbours, an oxygen neighbour being a crystal-graph edge (12 nearest "
    "neighbours within the cutoff) to an O atom no longer than {tolerance} x (r_cov(centre) + r_cov(O)), "
    "Pyykkoe single-bond covalent radii"
)


# --------------------------------------------------------------------------------------------------
# periodic-table facts


_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)


def _period_and_offset(z: int) -> tuple[int, int]:
    if not 1 <= z <= MAX_ATOMIC_NUMBER:
        raise VoltmodelsError(f"atomic number {z} is outside 1..{MAX_ATOMIC_NUMBER}")
    start = 1
    for period, end in enumerate(_PERIOD_ENDS, start=1):
        if z <= end:
            return period, z - start
        start = end + 1
    raise AssertionError(z)


def periodic_group(z: int) -> int:
    """Group 1..18; 0 for the f block (La-Yb, Ac-No), as in the input encoding (Lu, Lr: group 3)."""
    period, offset = _period_and_offset(z)
    if period == 1:
        return 1 if z == 1 else 18
    if period in (2, 3):
        return offset + 1 if offset < 2 else offset + 11
    if period in (4, 5):
        return offset + 1
    # periods 6 and 7: s pair, 14 f elements (La..Yb / Ac..No), then Lu/Lr in group 3 onwards
    if offset < 2:
        return offset + 1
    if offset < 16:
        return 0
    return offset - 13


def periodic_position(z: int) -> tuple[int, int]:
    """(row, column), 0-based, in an 18-column table; the f block sits below in rows 8 (La-Yb) and
    9 (Ac-No), columns 2-15, leaving row 7 empty as a gap."""
    period, offset = _period_and_offset(z)
    group = periodic_group(z)
    if group == 0:
        return period + 2, offset  # La (offset 2) -> column 2
    return period - 1, group - 1


@lru_cache(maxsize=None)
def element_symbol(z: int) -> str:
    from pymatgen.core.periodic_table import Element

    return Element.from_Z(int(z)).symbol


def covalent_radius(z: int) -> float:
    """Single-bond covalent radius in Angstrom (Pyykkoe & Atsumi 2009), the radius the encoding bins."""
    _period_and_offset(z)
    return float(COVALENT_RADII_PYYKKO[z - 1])


def group_label(group: int) -> str:
    return "f block" if group == 0 else f"group {group}"


# --------------------------------------------------------------------------------------------------
# projections and statistics


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; NaN when either side is constant or there are fewer than 3 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def pca_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates on the first two principal components (n, 2) and their explained-variance ratios (2,).

    Components are signed deterministically (sklearn's svd_flip); a degenerate input (fewer than two
    points or dimensions with variance) gives zero columns for the missing components.
    """
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise VoltmodelsError(f"PCA needs at least two vectors, got {len(vectors)}")
    n_components = min(2, vectors.shape[0], vectors.shape[1])
    pca = PCA(n_components=n_components, random_state=seed)
    coords = pca.fit_transform(vectors)
    ratio = np.nan_to_num(pca.explained_variance_ratio_)
    if n_components < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - n_components))])
        ratio = np.concatenate([ratio, np.zeros(2 - n_components)])
    return coords, ratio


def tsne_2d(vectors: np.ndarray, max_points: int = 3000, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """t-SNE (sklearn, PCA initialisation) of at most ``max_points`` rows picked at random.

    Returns (coordinates (m, 2), the picked row indices, sorted). About 30 s for 3,000 points on one core.
    """
    from sklearn.manifold import TSNE

    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) < 5:
        raise VoltmodelsError(f"t-SNE needs at least five vectors, got {len(vectors)}")
    rng = np.random.default_rng(seed)
    index = np.arange(len(vectors)) if len(vectors) <= max_points else np.sort(rng.choice(len(vectors), max_points, replace=False))
    picked = vectors[index]
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(picked) - 1) / 3), init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(picked), index


# --------------------------------------------------------------------------------------------------
# element representations (Fig. 3a)


@dataclass
class ElementMap:
    """PCA of the element representations; ``table`` has one row per element, by atomic number."""

    table: pd.DataFrame  # element, Z, group, covalent_radius, pc1, pc2
    vectors: np.ndarray  # (n_elements, atom_fea_len), rows in table order
    explained_variance: np.ndarray  # (2,)

    @property
    def pc_radius_r(self) -> dict[str, float]:
        return {
            "pc1_covalent_radius_r": pearson(self.table["pc1"], self.table["covalent_radius"]),
            "pc2_covalent_radius_r": pearson(self.table["pc2"], self.table["covalent_radius"]),
        }


@torch.no_grad()
def element_map(model, atomic_numbers: Sequence[int], seed: int = 0) -> ElementMap:
    """Element vectors after the embedding (``model.element_vectors``) of the distinct elements, PCA to 2D."""
    zs = sorted({int(z) for z in atomic_numbers})
    if len(zs) < 2:
        raise VoltmodelsError(f"An element map needs at least two elements, got {len(zs)}.")
    model.eval()
    vectors = model.element_vectors(torch.from_numpy(np.array(element_feature_table()[zs]))).numpy()
    coords, ratio = pca_2d(vectors, seed)
    table = pd.DataFrame(
        {
            "element": [element_symbol(z) for z in zs],
            "Z": zs,
            "group": [periodic_group(z) for z in zs],
            "covalent_radius": [covalent_radius(z) for z in zs],
            "pc1": coords[:, 0],
            "pc2": coords[:, 1],
        }
    )
    return ElementMap(table=table, vectors=vectors, explained_variance=ratio)


# --------------------------------------------------------------------------------------------------
# local environments and local voltages (Fig. 3b, 3c; Eq. 2)


def bond_cutoffs(tolerance: float) -> np.ndarray:
    """(MAX_ATOMIC_NUMBER + 1,) maximum centre-O bond length per centre atomic number (index 0 unused)."""
    radii = np.array([0.0, *COVALENT_RADII_PYYKKO], dtype=np.float64)
    return tolerance * (radii + radii[OXYGEN])


def oxygen_neighbour_counts(graph: CrystalGraph, bond_tolerance: float | None = DEFAULT_BOND_TOLERANCE) -> np.ndarray:
    """Number of oxygen neighbours of every atom (see the module docstring), shape (n_atoms,)."""
    z = np.asarray(graph.atomic_numbers, dtype=np.int64)
    src = np.asarray(graph.edge_src, dtype=np.int64)
    dst = np.asarray(graph.edge_dst, dtype=np.int64)
    is_oxygen = z[dst] == OXYGEN
    if bond_tolerance is not None:
        is_oxygen &= np.asarray(graph.edge_dist, dtype=np.float64) <= bond_cutoffs(bond_tolerance)[z[src]]
    return np.bincount(src[is_oxygen], minlength=len(z))


def oxygen_environment_mask(
    graph: CrystalGraph, bond_tolerance: float | None = DEFAULT_BOND_TOLERANCE, min_oxygen: int = MIN_OXYGEN_NEIGHBOURS
) -> np.ndarray:
    """True for the atoms of ``graph`` in an oxygen-coordination environment."""
    return oxygen_neighbour_counts(graph, bond_tolerance) >= min_oxygen


@dataclass
class AtomEnvironments:
    """Per-atom results over many crystals.

    ``atoms``: one row per atom (structure id, site, Z, element, n_oxygen, oxygen_environment,
    local_voltage); ``vectors``: the last-convolution vectors of the oxygen-environment atoms, in the
    order of ``atoms[atoms.oxygen_environment]``; ``crystals``: per structure the model's prediction
    and the mean of its local voltages.
    """

    atoms: pd.DataFrame
    vectors: np.ndarray
    crystals: pd.DataFrame
    bond_tolerance: float | None = DEFAULT_BOND_TOLERANCE
    min_oxygen: int = MIN_OXYGEN_NEIGHBOURS
    extra: dict = field(default_factory=dict)

    @property
    def oxygen_atoms(self) -> pd.DataFrame:
        return self.atoms[self.atoms["oxygen_environment"]].reset_index(drop=True)

    @property
    def n_oxygen_environments(self) -> int:
        return int(self.atoms["oxygen_environment"].sum())


@torch.no_grad()
def atom_environments(
    model,
    graphs: Mapping[str, CrystalGraph],
    settings: GraphSettings,
    bond_tolerance: float | None = DEFAULT_BOND_TOLERANCE,
    min_oxygen: int = MIN_OXYGEN_NEIGHBOURS,
    batch_size: int = 128,
) -> AtomEnvironments:
    """Local-environment vectors, local voltages (``model.local_voltages``) and crystal predictions."""
    if not graphs:
        raise VoltmodelsError("No crystal graphs to interpret.")
    model.eval()
    ids = list(graphs)
    atom_parts, vector_parts, crystal_parts = [], [], []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        chunk_graphs = [graphs[i] for i in chunk]
        batch = collate(chunk_graphs, settings)
        vectors = model.atom_vectors(batch).numpy()
        local = model.local_voltages(batch).numpy().astype(np.float64)
        predicted = model.predict_volts(batch).numpy().astype(np.float64)
        n_oxygen = np.concatenate([oxygen_neighbour_counts(g, bond_tolerance) for g in chunk_graphs])
        crystal = batch.crystal_index.numpy()
        n_atoms = np.array([g.n_atoms for g in chunk_graphs])
        z = batch.atomic_numbers.numpy()
        keep = n_oxygen >= min_oxygen
        atom_parts.append(
            pd.DataFrame(
                {
                    "structure": np.repeat(np.array(chunk, dtype=object), n_atoms),
                    "site": np.concatenate([np.arange(n) for n in n_atoms]),
                    "Z": z,
                    "n_oxygen": n_oxygen,
                    "oxygen_environment": keep,
                    "local_voltage": local,
                }
            )
        )
        vector_parts.append(vectors[keep])
        local_mean = np.bincount(crystal, weights=local, minlength=len(chunk)) / n_atoms
        crystal_parts.append(pd.DataFrame({"structure": chunk, "n_atoms": n_atoms, "predicted": predicted, "local_mean": local_mean}))
    atoms = pd.concat(atom_parts, ignore_index=True)
    atoms.insert(3, "element", atoms["Z"].map(element_symbol))
    return AtomEnvironments(
        atoms=atoms,
        vectors=np.concatenate(vector_parts),
        crystals=pd.concat(crystal_parts, ignore_index=True),
        bond_tolerance=bond_tolerance,
        min_oxygen=min_oxygen,
    )


def local_head_fidelity(crystals: pd.DataFrame) -> float:
    """MAE (V) between the crystal mean of the local voltages (Eq. 2) and the model's crystal prediction."""
    return float(np.mean(np.abs(crystals["local_mean"] - crystals["predicted"])))


def median_local_voltages(atoms: pd.DataFrame) -> pd.DataFrame:
    """Local-voltage statistics per element (rows in atomic-number order): n, median, mean, std, quartiles."""
    if atoms.empty:
        return pd.DataFrame(columns=["element", "Z", "n", "median", "mean", "std", "q25", "q75"])
    grouped = atoms.groupby("Z")["local_voltage"]
    table = pd.DataFrame(
        {
            "n": grouped.size(),
            "median": grouped.median(),
            "mean": grouped.mean(),
            "std": grouped.std(ddof=0),
            "q25": grouped.quantile(0.25),
            "q75": grouped.quantile(0.75),
        }
    ).reset_index()
    table.insert(0, "element", table["Z"].map(element_symbol))
    return table


# --------------------------------------------------------------------------------------------------
# figures


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
    from voltmodels.baselines import importance_plot

    return importance_plot(importances, title)
