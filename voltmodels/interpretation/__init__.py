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

Modules: ``elements`` (periodic-table data), ``analysis`` (the numbers), ``figures``. Nothing here
knows about MLflow: ``pipelines/interpret.py`` loads models and logs.
"""

from voltmodels.interpretation.analysis import (
    DEFAULT_BOND_TOLERANCE,
    MIN_OXYGEN_NEIGHBOURS,
    OXYGEN,
    OXYGEN_ENVIRONMENT_DEFINITION,
    AtomEnvironments,
    ElementMap,
    atom_environments,
    bond_cutoffs,
    element_map,
    local_head_fidelity,
    median_local_voltages,
    oxygen_environment_mask,
    oxygen_neighbour_counts,
    pca_2d,
    pearson,
    tsne_2d,
)
from voltmodels.interpretation.elements import (
    covalent_radius,
    element_symbol,
    group_label,
    periodic_group,
    periodic_position,
)
from voltmodels.interpretation.figures import (
    VOLTAGE_CMAP,
    element_map_figure,
    environment_figure,
    importance_figure,
    periodic_table_figure,
)

__all__ = [
    "AtomEnvironments",
    "DEFAULT_BOND_TOLERANCE",
    "ElementMap",
    "MIN_OXYGEN_NEIGHBOURS",
    "OXYGEN",
    "OXYGEN_ENVIRONMENT_DEFINITION",
    "VOLTAGE_CMAP",
    "atom_environments",
    "bond_cutoffs",
    "covalent_radius",
    "element_map",
    "element_map_figure",
    "element_symbol",
    "environment_figure",
    "group_label",
    "importance_figure",
    "local_head_fidelity",
    "median_local_voltages",
    "oxygen_environment_mask",
    "oxygen_neighbour_counts",
    "pca_2d",
    "pearson",
    "periodic_group",
    "periodic_position",
    "periodic_table_figure",
    "tsne_2d",
]
