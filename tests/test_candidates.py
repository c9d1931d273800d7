"""Candidates by working-ion substitution (voltmodels/candidates.py) and their screen on Spark vs pandas."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from voltmodels.candidates import host_variants, substitute
from voltmodels.potentials.voltage import ion_valence
from voltmodels.config import VoltmodelsError


def layered(n_li: int) -> Structure:
    """A toy LiCoO2-like cell with n_li Li along c, each with a Co and two O."""
    species, coords = [], []
    for k in range(n_li):
        z = k / n_li
        species += ["Li", "Co", "O", "O"]
        coords += [[0, 0, z], [0, 0, z + 0.5 / n_li], [1 / 3, 2 / 3, z + 0.25 / n_li], [2 / 3, 1 / 3, z + 0.75 / n_li]]
    return Structure(Lattice.hexagonal(2.8, 4.7 * n_li), species, coords)


def ion_charge(structure: Structure, ion: str) -> int:
    return int(structure.composition[ion]) * ion_valence(ion)


def test_substitution_keeps_the_ionic_charge():
    four = layered(4)
    (mg,) = substitute(four, "Li", "Mg")
    assert mg.supercell == 1 and mg.structure.composition["Mg"] == 2 and "Li" not in mg.structure.composition
    assert ion_charge(mg.structure, "Mg") == ion_charge(four, "Li")
    # The two Mg sit as far apart as the four sites allow: half the c axis.
    mg_sites = [s for s in mg.structure if s.specie.symbol == "Mg"]
    assert mg_sites[0].distance(mg_sites[1]) == pytest.approx(four.lattice.c / 2)
    # Host atoms untouched.
    assert mg.structure.composition["Co"] == 4 and mg.structure.composition["O"] == 8


def test_supercell_when_the_count_is_not_whole():
    one = layered(1)  # 1 Li -> 1/2 Mg: the cell is doubled along its shortest axis (a, 2.8 A)
    (mg,) = substitute(one, "Li", "Mg")
    assert mg.supercell == 2 and mg.structure.composition["Mg"] == 1 and mg.structure.composition["Co"] == 2
    assert mg.structure.lattice.abc[0] == pytest.approx(2 * 2.8)
    (al,) = substitute(layered(2), "Li", "Al")  # 2 Li -> 2/3 Al: tripled, 2 Al on 6 sites
    assert al.supercell == 3 and al.structure.composition["Al"] == 2 and ion_charge(al.structure, "Al") == 3 * ion_charge(layered(2), "Li")


def test_same_valence_keeps_every_site_and_impossible_targets_say_why():
    (na,) = substitute(layered(3), "Li", "Na")
    assert na.structure.composition["Na"] == 3 and np.allclose(na.structure.frac_coords, layered(3).frac_coords)
    with pytest.raises(VoltmodelsError, match="needs 4 ions on 2 Mg sites"):
        substitute(substitute(layered(4), "Li", "Mg")[0].structure, "Mg", "Li")
    with pytest.raises(VoltmodelsError, match="above the limit of 10"):
        substitute(layered(4), "Li", "Mg", max_sites=10)
    host = Structure(Lattice.cubic(4.0), ["Co", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert substitute(host, "Li", "Mg")[0].structure == host  # a charged host without ions stays as it is


def test_orderings_keep_only_new_arrangements():
    # On a chain of 6 sites, every farthest-point start gives every other site: one arrangement.
    assert len(substitute(layered(6), "Li", "Mg", orderings=5)) == 1
    # 4 sites on a square (a = b), 2 Mg: the diagonal pair from every start, again one arrangement.
    square = Structure(Lattice.tetragonal(6.0, 3.0), ["Li"] * 4 + ["O"], [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0], [0.25, 0.25, 0.5]])
    (pair,) = substitute(square, "Li", "Mg", orderings=4)
    mg = [s for s in pair.structure if s.specie.symbol == "Mg"]
    assert mg[0].distance(mg[1]) == pytest.approx(6.0 / 2**0.5)


def test_host_variants_swap_each_listed_metal_in_both_end_members():
    discharged = layered(2)
    charged = Structure.from_sites([s for s in discharged if s.specie.symbol != "Li"])
    variants = host_variants(discharged, charged, ("Mn", "Co", "Ni"))
    assert [swap for swap, _, _ in variants] == ["", "Co>Mn", "Co>Ni"]
    _, d, c = variants[2]
    assert d.composition.reduced_formula == "LiNiO2" and c.composition.reduced_formula == "NiO2"
    assert host_variants(discharged, charged, ()) == [("", discharged, charged)]


@pytest.fixture(scope="module")
def na_to_li(li_champion, isolated_tracking, tmp_path_factory):
    """Candidates Na -> Li from the session's curated dataset (covered by the session's Li models),
    small cells only, and one row that is not a structure."""
    from tests.conftest import run_entry_point

    folder = tmp_path_factory.mktemp("candidates")
    out = folder / "na_li.parquet"
    stdout = run_entry_point("pipelines.candidates", "--source-ion", "Na", "--target-ion", "Li", "--output", str(out), cwd=isolated_tracking)
    assert "candidates from Na electrodes" in stdout
    table = pd.read_parquet(out)
    skipped = pd.read_csv(folder / "na_li_skipped.csv")
    assert len(table) > 100 and (table["working_ion"] == "Li").all() and (table["source_ion"] == "Na").all()
    assert skipped["reason"].str.contains("already a Li electrode").any()
    assert not set(table["formula_discharge"]) & set(skipped.loc[skipped["reason"].str.contains("already"), "reason"].str.split().str[0])
    small = table[table["n_sites"] <= 20].head(24).copy()
    broken = small.head(1).assign(candidate_id="broken", structure="{not json")
    # Parses, but no atom has a neighbour: the model rejects it at prediction, inside a Spark partition.
    lonely = small.head(1).assign(candidate_id="lonely", structure=Structure(Lattice.cubic(30.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to_json())
    subset = folder / "subset.parquet"
    pd.concat([small.iloc[:12], broken, small.iloc[12:], lonely], ignore_index=True).to_parquet(subset, index=False)
    return subset


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime (openjdk-17-jre-headless)")
def test_spark_screen_matches_pandas_row_for_row(router_champion, na_to_li, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipelines.screen import main, screen

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    pandas_result = screen(str(na_to_li), None, router_champion, str(tmp_path / "pandas.csv"), engine="pandas")
    run_id = main(["--input", str(na_to_li), "--engine", "spark", "--master", "local[2]", "--output", str(tmp_path / "spark.csv"), "--batch-size", "8"])
    spark_ranked = pd.read_parquet(tmp_path / "spark.parquet")
    spark_failed = pd.read_csv(tmp_path / "spark_failed.csv")

    assert len(pandas_result.ranked) == 24 and len(spark_ranked) == 24
    keys = ["rank", "id", "formula", "n_sites", "working_ion", "model_name", "model_version", "mode", "relaxation"]
    pd.testing.assert_frame_equal(spark_ranked[keys].astype(str), pandas_result.ranked[keys].astype(str))
    for column in ("voltage", "voltage_lower", "voltage_upper"):
        np.testing.assert_allclose(spark_ranked[column], pandas_result.ranked[column], atol=1e-5)
    expected = {("broken", "parse"), ("lonely", "predict")}
    assert set(map(tuple, spark_failed[["id", "stage"]].values)) == expected == set(map(tuple, pandas_result.failed[["id", "stage"]].values))
    reasons = spark_failed.set_index("id")["reason"]
    assert "JSON" in reasons["broken"] and "neighbour" in reasons["lonely"]
    assert spark_failed.sort_values("id").reset_index(drop=True).equals(pandas_result.failed.sort_values("id").reset_index(drop=True))

    run = MlflowClient().get_run(run_id)
    assert run.data.params["engine"] == "spark" and run.data.metrics["n_failed"] == 2 and run.data.metrics["structures_per_second"] > 0

    # A rerun with the same input and model writes the same rows.
    again = screen(str(na_to_li), None, router_champion, str(tmp_path / "again.csv"), engine="spark", batch_size=5)
    pd.testing.assert_frame_equal(again.ranked.drop(columns="source"), spark_ranked.drop(columns="source"), check_dtype=False)
