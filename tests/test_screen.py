"""Entry point `screen`: a folder (or JSON file) of structures -> CSV ranked by voltage, failures listed."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pymatgen.core import Lattice, Structure

pytestmark = pytest.mark.integration

N_GOOD = 6


@pytest.fixture(scope="module")
def snapshot_cifs(snapshot_dir) -> dict[str, str]:
    """Real CIFs of Li-containing structures from the snapshot (small cells, for speed)."""
    with gzip.open(snapshot_dir / "mp_electrode_structures_cif.json.gz", "rt") as fh:
        cifs = json.load(fh)
    picked = {}
    for mid in sorted(cifs):
        structure = Structure.from_str(cifs[mid], fmt="cif")
        if "Li" in structure.composition and len(structure) <= 40:
            picked[mid] = cifs[mid]
        if len(picked) == N_GOOD:
            return picked
    pytest.skip("not enough Li structures in the snapshot")


def isolated_atoms_json() -> str:
    return Structure(Lattice.cubic(30.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to_json()


@pytest.fixture
def structure_folder(tmp_path, snapshot_cifs):
    folder = tmp_path / "structures"
    folder.mkdir()
    for mid, cif in snapshot_cifs.items():
        (folder / f"{mid}.cif").write_text(cif)
    (folder / "corrupt.cif").write_text("data_corrupt\n_cell_length_a 5.0\nloop_\n_atom_site_label\n garbage ???\n")
    (folder / "lonely.json").write_text(isolated_atoms_json())  # parses, but cannot be featurized
    (folder / "notes.txt").write_text("ignored: not a structure file suffix")
    return folder


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("VOLTMODELS_TORCH_THREADS", "1")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_screen_folder_ranks_and_lists_failures(router_champion, structure_folder, snapshot_cifs, tmp_path):
    from pipelines.screen import main

    output = tmp_path / "out" / "ranked.csv"
    run_id = main(["--input", str(structure_folder), "--ion", "Li", "--output", str(output)])

    ranked = pd.read_csv(output)
    assert sorted(ranked["id"]) == sorted(snapshot_cifs)
    assert list(ranked["rank"]) == list(range(1, N_GOOD + 1))
    assert ranked["voltage"].is_monotonic_decreasing
    assert (ranked["voltage_lower"] < ranked["voltage"]).all() and (ranked["voltage"] < ranked["voltage_upper"]).all()
    assert set(ranked["model_name"]) == {"voltage-cgcnn-Li"} and set(ranked["working_ion"]) == {"Li"}
    assert ranked["n_sites"].between(1, 40).all()

    failed = pd.read_csv(tmp_path / "out" / "ranked_failed.csv").set_index("id")
    assert set(failed.index) == {"corrupt", "lonely"}
    assert failed.loc["corrupt", "stage"] == "parse" and "CIF" in failed.loc["corrupt", "reason"]
    assert failed.loc["lonely", "stage"] == "predict" and "no neighbour" in failed.loc["lonely", "reason"]

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.metrics["n_predicted"] == N_GOOD and run.data.metrics["n_failed"] == 2
    assert run.data.tags["model_uri_used"] == router_champion
    assert {a.path for a in client.list_artifacts(run_id, "screen")} == {"screen/ranked.csv", "screen/ranked.parquet", "screen/ranked_failed.csv", "screen/failure_reasons.json"}
    assert pd.read_parquet(tmp_path / "out" / "ranked.parquet")["id"].tolist() == ranked["id"].tolist()


def test_screen_json_mapping_and_explicit_model(li_champion, snapshot_cifs, tmp_path):
    from pipelines.screen import screen

    mapping = dict(snapshot_cifs)
    mapping["as_dict"] = json.loads(Structure.from_str(next(iter(snapshot_cifs.values())), fmt="cif").to_json())
    mapping["broken"] = "{not json"
    source = tmp_path / "structures.json"
    source.write_text(json.dumps(mapping))
    result = screen(str(source), "Li", li_champion, str(tmp_path / "s.csv"))
    ranked, failed = result.ranked, result.failed
    assert result.model_uri == li_champion
    assert set(ranked["id"]) == set(snapshot_cifs) | {"as_dict"}
    assert list(failed["id"]) == ["broken"] and "JSON" in failed["reason"].iloc[0]
    # The same structure as CIF and as a dict gets the same voltage.
    first = next(iter(snapshot_cifs))
    by_id = ranked.set_index("id")["voltage"]
    assert by_id["as_dict"] == pytest.approx(by_id[first], abs=1e-4)


def test_default_model_falls_back_to_the_ion_champion(li_champion, monkeypatch):
    import pipelines.screen as screen_module

    missing = "models:/no-such-router@champion"
    monkeypatch.setattr(screen_module, "DEFAULT_MODEL", missing)
    used, model = screen_module.load_model(missing, "Li")
    assert used == li_champion


def test_screen_errors_are_one_sentence(router_champion, tmp_path, capsys):
    from pipelines.screen import main

    with pytest.raises(SystemExit) as exc:
        main(["--input", str(tmp_path / "missing"), "--ion", "Li", "--output", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "one.cif").write_text("data_x\n")
    with pytest.raises(SystemExit):  # no Cs model in any test: the router and the fallback are both named
        main(["--input", str(tmp_path / "one.cif"), "--ion", "Cs", "--output", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert "voltage-predictor" in err and "voltage-cgcnn-Cs" in err
