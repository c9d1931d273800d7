"""Random-forest (Gini) importances of the baseline descriptors: per feature, per elemental property, as a figure."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from voltmodels.baselines.features import feature_blocks, feature_names


def gini_importances(model, names: Sequence[str] | None = None, top: int | None = 20) -> pd.DataFrame:
    """Mean-decrease-in-impurity importances of a fitted RFR pipeline, largest first (shares summing to 1)."""
    forest = model.named_steps["model"]
    names = list(names) if names is not None else feature_names()
    values = np.asarray(forest.feature_importances_, dtype=float)
    if len(values) != len(names):
        raise ValueError(f"{len(values)} importances for {len(names)} feature names")
    blocks = feature_blocks()
    table = pd.DataFrame({"feature": names, "block": [blocks.get(n, "") for n in names], "importance": values})
    table = table.sort_values("importance", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.head(top) if top else table


def importance_by_property(importances: pd.DataFrame) -> pd.DataFrame:
    """Importances summed per elemental property (Magpie statistics of one property grouped), largest first.

    The paper reports covalent radius as the top property (~20 % of the Gini importance).
    """
    def prop(feature: str) -> str:
        return feature.split(" ", 2)[2] if feature.startswith("MagpieData ") else feature

    grouped = importances.assign(property=importances["feature"].map(prop)).groupby("property", as_index=False)["importance"].sum()
    return grouped.sort_values("importance", ascending=False, ignore_index=True)


def importance_plot(importances: pd.DataFrame, title: str):
    """Horizontal bar chart of the (top) importances, largest on top."""
    from voltmodels import plots  # sets the headless backend

    table = importances.iloc[::-1]
    fig, ax = plots.plt.subplots(figsize=(7, 0.3 * len(table) + 1.2))
    ax.barh(table["feature"], table["importance"], color="#4C72B0")
    ax.set_xlabel("Gini importance (mean decrease in impurity)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig
