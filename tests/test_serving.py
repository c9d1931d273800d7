"""The router pyfunc `voltage-predictor` served by a real `mlflow models serve` (scoring protocol over HTTP)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from serving.processes import ServerError, ServerProcess, free_port

requests = pytest.importorskip("requests")

pytestmark = pytest.mark.integration

COLUMNS = ["structure", "working_ion"]


@pytest.fixture(scope="session")
def li_cifs(li_snapshot_structures) -> list[str]:
    """Real CIFs of Li-containing structures from the snapshot, 10-40 sites."""
    return [cif for _, cif, _ in li_snapshot_structures[:4]]


@pytest.fixture(scope="session")
def server(router_champion, tmp_path_factory):
    """`mlflow models serve -m models:/voltage-predictor@champion --env-manager local`, from a temp dir."""
    port = free_port()
    cwd = tmp_path_factory.mktemp("serve_cwd")  # not the repo: the model must carry its own code
    env = {**os.environ, "VOLTMODELS_TORCH_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", router_champion, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    process = ServerProcess(cmd, port, cwd, env, cwd / "server.log")
    try:
        yield process.start()
    except ServerError as exc:
        pytest.fail(str(exc))
    finally:
        process.stop()


def invoke(url: str, data: list, columns=COLUMNS, params: dict | None = None) -> requests.Response:
    body = {"dataframe_split": {"columns": list(columns), "data": data}}
    if params is not None:
        body["params"] = params
    return requests.post(f"{url}/invocations", json=body, timeout=120)


@pytest.fixture(scope="session")
def li_version(router_build) -> str:
    """The Li version the router froze as its member (the Li champion when the router was built)."""
    return router_build["li_version"]


@pytest.fixture
def li_champion_version(router_champion) -> str:
    """The Li champion now: what `models:/voltage-cgcnn-Li@champion` loads."""
    from mlflow.tracking import MlflowClient

    return str(MlflowClient().get_model_version_by_alias("voltage-cgcnn-Li", "champion").version)


def test_good_li_cif(server, li_cifs, li_version):
    response = invoke(server, [[li_cifs[0], "Li"]])
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert math.isfinite(row["voltage"])
    assert row["voltage_lower"] < row["voltage"] < row["voltage_upper"]
    assert row["model_name"] == "voltage-cgcnn-Li"
    assert row["model_version"] == li_version
    assert row["working_ion"] == "Li"
    from mlflow.tracking import MlflowClient

    assert row["model_id"] and MlflowClient().get_model_version("voltage-cgcnn-Li", li_version).source == f"models:/{row['model_id']}"


def test_a_model_served_alone_reports_its_registered_version(router_champion, li_cifs, li_champion_version):
    """The per-ion pyfunc's version is read from the registry at load time (matched by LoggedModel id)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    out = mlflow.pyfunc.load_model("models:/voltage-cgcnn-Li@champion").predict(pd.DataFrame({"structure": li_cifs[:1], "working_ion": "Li"}))
    version = MlflowClient().get_model_version("voltage-cgcnn-Li", li_champion_version)
    assert (out["model_name"].iloc[0], out["model_version"].iloc[0], f"models:/{out['model_id'].iloc[0]}") == ("voltage-cgcnn-Li", li_champion_version, version.source)


def test_batch_keeps_row_order(server, li_cifs):
    singles = [invoke(server, [[cif, "Li"]]).json()["predictions"][0]["voltage"] for cif in li_cifs]
    batch = invoke(server, [[cif, "Li"] for cif in reversed(li_cifs)])
    assert batch.status_code == 200, batch.text
    assert [r["voltage"] for r in batch.json()["predictions"]] == pytest.approx(singles[::-1], abs=1e-5)


def test_local_voltages_param(server, li_cifs):
    response = invoke(server, [[li_cifs[0], "Li"]], params={"local_voltages": True})
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    local = json.loads(row["local_voltages"])
    assert len(local) == len(Structure.from_str(li_cifs[0], fmt="cif"))
    assert {"site", "element", "local_voltage"} <= set(local[0])
    assert all(math.isfinite(site["local_voltage"]) for site in local)
    plain = invoke(server, [[li_cifs[0], "Li"]]).json()["predictions"][0]
    assert "local_voltages" not in plain
    assert plain["voltage"] == pytest.approx(row["voltage"])


def test_serving_input_example_is_accepted(server, router_champion):
    """The logged signature's example (real CIFs) is a valid request as it stands."""
    from mlflow.models import Model
    from mlflow.artifacts import download_artifacts

    folder = Path(download_artifacts(router_champion))
    model = Model.load(str(folder / "MLmodel"))
    # structure or material_id per row; structure_charged: universal-potential members answer in mode (a).
    assert [c.name for c in model.signature.inputs.inputs if c.required] == ["working_ion"]
    assert [c.name for c in model.signature.inputs.inputs if not c.required] == ["structure", "structure_charged", "material_id"]
    assert {"local_voltages", "on_error"} <= {p.name for p in model.signature.params.params}
    assert model.flavors["python_function"]["config"]["limits"]["max_sites"] == 500
    assert "structure_index" in model.flavors["python_function"]["artifacts"]
    example = json.loads((folder / "serving_input_example.json").read_text())
    assert "_cell_length_a" in example["dataframe_split"]["data"][0][0]
    response = requests.post(f"{server}/invocations", json=example, timeout=60)
    assert response.status_code == 200, response.text
    # The router bundles its members and the package code; it needs neither the registry nor the checkout.
    assert {"voltmodels", "serving"} <= {p.name for p in (folder / "code").iterdir()}
    bundled = model.flavors["python_function"]["artifacts"]["model_Li"]["path"]
    assert (folder / bundled / "MLmodel").is_file() and (folder / bundled / "artifacts" / "checkpoint.pt").is_file()
    assert model.flavors["python_function"]["config"]["models"]["Li"]["name"] == "voltage-cgcnn-Li"


def _isolated_atoms() -> str:
    return Structure(Lattice.cubic(30.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to_json()


def _disordered() -> str:
    return Structure(Lattice.cubic(4.2), [{"Li": 0.5, "Na": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to_json()


def _oganesson() -> str:
    return Structure(Lattice.cubic(4.0), ["Og", "O", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]).to_json()


def _huge() -> str:
    cell = Structure(Lattice.cubic(3.0), ["Li"], [[0, 0, 0]]) * (8, 8, 8)  # 512 sites > the default max_sites (500)
    return json.dumps({"lattice": cell.lattice.matrix.tolist(), "species": ["Li"] * len(cell), "frac_coords": cell.frac_coords.tolist()})


BAD_ROWS = {
    "invalid_cif": ("data_broken\n_cell_length_a 3\nloop_\n_atom_site_label\nnot a cif", "Li", ["row 0", "CIF"]),
    "empty_string": ("", "Li", ["row 0", "empty string"]),
    "unsupported_ion": (None, "Xx", ["row 0", "'Xx' is not supported", "supported: ", "Li"]),
    "isolated_atom": (_isolated_atoms(), "Li", ["row 0", "no neighbour within the 8 Angstrom cutoff"]),
    "partial_occupancy": (_disordered(), "Li", ["row 0", "partial occupancies"]),
    "element_outside_encoding": (_oganesson(), "Li", ["row 0", "Og", "not supported"]),
    "huge_cell": (_huge(), "Li", ["row 0", "512 sites", "limit of 500"]),
}


@pytest.fixture
def still_serving(server, li_cifs):
    """After the bad request: the server answers a good one (no crash, no 5xx)."""
    yield
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    assert invoke(server, [[li_cifs[0], "Li"]]).status_code == 200


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_a_400_naming_row_and_reason(server, li_cifs, still_serving, case):
    structure, ion, expected = BAD_ROWS[case]
    response = invoke(server, [[li_cifs[0] if structure is None else structure, ion]])
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_wrong_columns(server, li_cifs, still_serving):
    response = invoke(server, [[li_cifs[0], "Li"]], columns=["cif", "ion"])
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["message"]
    assert "structure" in message and "working_ion" in message and "missing" in message


def test_mixed_batch_names_only_the_bad_rows(server, li_cifs, still_serving):
    data = [[li_cifs[0], "Li"], ["not a structure", "Li"], [li_cifs[1], "Li"], [li_cifs[2], "Na?"]]
    response = invoke(server, data)
    assert response.status_code == 400, response.text
    message = response.json()["message"].split("Error: ", 1)[-1]
    problems = dict(part.split(": ", 1) for part in message.removeprefix("Invalid input: ").rstrip(".").split("; "))
    assert sorted(problems) == ["row 1", "row 3"]
    assert "CIF" in problems["row 1"]
    assert problems["row 3"].startswith("working_ion 'Na?' is not supported")


def test_featurization_errors_name_the_original_rows(server, li_cifs, still_serving):
    data = [[li_cifs[0], "Li"], [li_cifs[1], "Li"], [_isolated_atoms(), "Li"]]
    response = invoke(server, data)
    assert response.status_code == 400, response.text
    assert "row 2: atom 0 (Li) has no neighbour" in response.json()["message"]


def test_row_error_mode_answers_every_other_row(server, li_cifs, still_serving):
    """params.on_error="row" (what batch screening uses): bad rows get their reason, good rows their voltage."""
    data = [[li_cifs[0], "Li"], ["not a structure", "Li"], [_isolated_atoms(), "Li"], [li_cifs[1], "Li"]]
    response = invoke(server, data, params={"on_error": "row"})
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [r["error"] == "" for r in rows] == [True, False, False, True]
    assert "CIF" in rows[1]["error"] and "no neighbour" in rows[2]["error"]
    assert all(math.isfinite(rows[i]["voltage"]) for i in (0, 3))
    alone = invoke(server, [[li_cifs[1], "Li"]]).json()["predictions"][0]
    assert rows[3]["voltage"] == pytest.approx(alone["voltage"], abs=1e-5)
    response = invoke(server, data, params={"on_error": "skip"})
    assert response.status_code == 400 and "use one of raise, row" in response.json()["message"]


def _cif(structure, symprec=None) -> str:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure, symprec=symprec))


def _p1_supercell_cif(n: int = 32) -> str:
    """A P1 CIF of n^3 atoms (32,768 for n = 32): refused from its atom-site line count."""
    return _cif(Structure(Lattice.cubic(3.0), ["Li"], [[0, 0, 0]]) * (n, n, n))


def _symmetry_bomb_cif() -> str:
    """A 2.5 kB CIF whose 70 asymmetric sites expand with the 48 operations of Pm-3m to 3,360 sites."""
    import numpy as np

    rng = np.random.default_rng(0)
    points = rng.uniform(0.05, 0.45, (400, 3))
    general = points[(np.abs(points[:, [0, 0, 1]] - points[:, [1, 2, 2]]).min(axis=1) > 0.03)][:70]  # off the mirror planes
    rows = "\n".join(f"  Li Li{i} 1 {x:.5f} {y:.5f} {z:.5f} 1" for i, (x, y, z) in enumerate(general))
    cubic = Structure.from_spacegroup("Pm-3m", Lattice.cubic(20.0), ["Li"], [[0.11, 0.23, 0.37]])
    ops = _cif(cubic, symprec=0.01).split("_symmetry_equiv_pos_as_xyz", 1)[1].split("loop_", 1)[0]
    return (
        "data_bomb\n_symmetry_space_group_name_H-M 'P 1'\n_cell_length_a 20\n_cell_length_b 20\n_cell_length_c 20\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        f"loop_\n _symmetry_equiv_pos_site_id\n _symmetry_equiv_pos_as_xyz{ops}"
        "loop_\n _atom_site_type_symbol\n _atom_site_label\n _atom_site_symmetry_multiplicity\n"
        f" _atom_site_fract_x\n _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n{rows}\n"
    )


def test_symmetry_expansion_is_counted_from_the_text():
    from serving.limits import cif_site_count

    bomb = _symmetry_bomb_cif()
    assert len(bomb) < 5000 and cif_site_count(bomb, 10_000) == 70 * 48
    assert 500 < cif_site_count(bomb, 500) < 70 * 48  # stops counting once past the limit
    assert cif_site_count(_p1_supercell_cif(16), 500) == 16**3  # refused from the atom-site row count
    for structure in (Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]), Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.2, 5.2), ["Mg"], [[1 / 3, 2 / 3, 0.25]])):
        text = _cif(structure, symprec=0.01)
        assert cif_site_count(text, 10_000) == len(Structure.from_str(text, fmt="cif"))


@pytest.mark.parametrize(
    "case, rows, expected",
    [
        ("32k_atom_cif", lambda: [[_p1_supercell_cif(), "Li"]], ["row 0", "above the limit of"]),
        ("symmetry_expansion", lambda: [[_symmetry_bomb_cif(), "Li"]], ["row 0", "atom sites expand to at least", "limit of 500"]),
        ("too_many_rows", lambda: [["x", "Li"]] * 1001, ["1001 rows", "limit of 1000 rows per request"]),
    ],
)
def test_limits_answer_400_within_a_second_while_others_are_served(server, li_cifs, case, rows, expected):
    """The oversized request is refused from its text, and a second client meanwhile gets its voltage."""
    from concurrent.futures import ThreadPoolExecutor
    import time

    data = rows()
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        big = pool.submit(lambda: (invoke(server, data), time.perf_counter() - started))
        good = pool.submit(invoke, server, [[li_cifs[0], "Li"]])
        (response, seconds), other = big.result(), good.result()
    assert response.status_code == 400, response.text[:500]
    assert seconds < 1.0, f"{case}: answered in {seconds:.2f} s"
    for fragment in expected:
        assert fragment in response.json()["message"], response.json()["message"][:500]
    assert other.status_code == 200 and math.isfinite(other.json()["predictions"][0]["voltage"])


def test_limits_come_from_model_config(router_champion, li_cifs):
    import mlflow

    strict = mlflow.pyfunc.load_model(router_champion, model_config={"limits": {"max_sites": 8, "chunk_rows": 2}})
    small = [c for c in li_cifs if len(Structure.from_str(c, fmt="cif")) > 8][:1]
    with pytest.raises(Exception, match="above the limit of 8"):
        strict.predict(pd.DataFrame({"structure": small, "working_ion": "Li"}))
    chunked = mlflow.pyfunc.load_model(router_champion, model_config={"limits": {"chunk_rows": 2}})
    frame = pd.DataFrame({"structure": li_cifs[:5], "working_ion": "Li"})
    whole = mlflow.pyfunc.load_model(router_champion).predict(frame)
    assert chunked.predict(frame)["voltage"].tolist() == pytest.approx(whole["voltage"].tolist(), abs=1e-5)


@pytest.fixture(scope="session")
def li_material(router_champion):
    """(material id, CIF) of a Li electrode's discharged structure in the session's curated dataset."""
    from voltmodels.data.dataset import load_dataset

    dataset = load_dataset("latest")
    rows = dataset.rows("Li")
    mid = next(m for m in rows["id_discharge"] if len(dataset.compact_structures[m]["species"]) <= 30)
    return mid, dataset.structures[mid].to(fmt="cif")


def test_query_by_material_id_from_the_bundled_index(server, li_material, still_serving):
    mid, cif = li_material
    by_id = invoke(server, [[mid, "Li"]], columns=["material_id", "working_ion"])
    assert by_id.status_code == 200, by_id.text
    by_structure = invoke(server, [[cif, "Li"]]).json()["predictions"][0]
    assert by_id.json()["predictions"][0]["voltage"] == pytest.approx(by_structure["voltage"], abs=1e-3)
    unknown = invoke(server, [[mid, "Li"], ["mp-0000000", "Li"]], columns=["material_id", "working_ion"])
    assert unknown.status_code == 400
    message = unknown.json()["message"]
    assert "row 1: material_id 'mp-0000000' is not among the" in message and "MP_API_KEY" in message and "row 0" not in message


def test_material_id_outside_the_index_comes_from_the_mp_api(router_champion, li_material, monkeypatch):
    """With MP_API_KEY set, an id the index lacks is fetched through mp-api (a fake client here)."""
    import mlflow

    import serving.structure_index as structure_index

    mid, cif = li_material
    asked = []

    class FakeMPRester:
        def get_structure_by_material_id(self, material_id):
            asked.append(material_id)
            if material_id != "mp-990001":
                raise KeyError(f"{material_id} not found")
            return Structure.from_str(cif, fmt="cif")

    monkeypatch.setattr(structure_index, "mp_client", lambda: FakeMPRester())
    router = mlflow.pyfunc.load_model(router_champion)
    out = router.predict(pd.DataFrame({"material_id": ["mp-990001", mid], "working_ion": "Li"}))
    assert out["voltage"].iloc[0] == pytest.approx(out["voltage"].iloc[1], abs=1e-3)
    assert asked == ["mp-990001"]  # the index answered the other id
    with pytest.raises(Exception, match=r"row 0: material_id 'mp-404' is not in the model's index and the MP API did not return it"):
        router.predict(pd.DataFrame({"material_id": ["mp-404"], "working_ion": "Li"}))


def test_router_dispatches_by_ion_in_row_order(router_champion, li_cifs):
    """In process, with a second (fake) ion: each row goes to its ion's model and keeps its place."""
    import mlflow

    from serving.cgcnn_model import CGCNNPredictor
    from serving.router import VoltageRouter

    routed = mlflow.pyfunc.load_model(router_champion).unwrap_python_model().router
    li = routed.predictors["Li"]
    fake = CGCNNPredictor.__new__(CGCNNPredictor)
    fake.__dict__.update(li.__dict__, ion="Na", model_name="voltage-cgcnn-Na", model_version="7", halfwidth=0.25)
    router = VoltageRouter({"Li": li, "Na": fake})
    frame = pd.DataFrame({"structure": li_cifs[:3], "working_ion": ["Na", "Li", "Na"]})
    out = router.predict(frame)
    assert list(out["model_name"]) == ["voltage-cgcnn-Na", "voltage-cgcnn-Li", "voltage-cgcnn-Na"]
    assert list(out["model_version"]) == ["7", li.model_version, "7"]
    assert list(out["working_ion"]) == ["Na", "Li", "Na"]
    single = li.predict(pd.DataFrame({"structure": li_cifs[:3], "working_ion": "Li"}))
    assert list(out["voltage"]) == pytest.approx(list(single["voltage"]), abs=1e-5)
    assert list(out["voltage_upper"] - out["voltage"]) == pytest.approx([0.25, li.halfwidth, 0.25])
    with pytest.raises(Exception, match=r"row 1: working_ion 'Mg' is not supported \(supported: Li, Na\)"):
        router.predict(pd.DataFrame({"structure": li_cifs[:2], "working_ion": ["Li", "Mg"]}))


def test_router_registration(router_champion, li_version):
    from mlflow.tracking import MlflowClient

    version = MlflowClient().get_model_version_by_alias("voltage-predictor", "champion")
    assert version.tags["member_Li"] == f"voltage-cgcnn-Li:{li_version}"
    assert version.tags["ions"].split(",")[0] == "Li"
