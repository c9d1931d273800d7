"""Element maps, oxygen-environment maps and local voltages of a trained CGCNN (the numbers; figures are
in :mod:`voltmodels.interpretation.figures`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from voltmodels.config import VoltmodelsError
from voltmodels.graphs.batch import collate
from voltmodels.graphs.encoding import COVALENT_RADII_PYYKKO, element_feature_table
from voltmodels.graphs.graph import CrystalGraph, GraphSettings
from voltmodels.interpretation.elements import covalent_radius, element_symbol, periodic_group

OXYGEN = 8
DEFAULT_BOND_TOLERANCE = 1.3
MIN_OXYGEN_NEIGHBOURS = 2

OXYGEN_ENVIRONMENT_DEFINITION = (
    "atom with >= {min_oxygen} oxygen neighbours, an oxygen neighbour being a crystal-graph edge (12 nearest "
    "neighbours within the cutoff) to an O atom no longer than {tolerance} x (r_cov(centre) + r_cov(O)), "
    "Pyykkoe single-bond covalent radii"
)


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
