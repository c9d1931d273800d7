"""The router pyfunc `voltage-predictor` served by a real `mlflow models serve` (scoring protocol over HTTP)."""

from __future__ import annotations

import gzip
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
def li_cifs(snapshot_dir) -> list[str]:
    """Real CIFs of Li-containing structures from the snapshot, 10-40 sites."""
    with gzip.open(snapshot_dir / "mp_electrode_structures_cif.json.gz", "rt") as fh:
        cifs = json.load(fh)
    picked = []
    for mid in sorted(cifs):
        structure = Structure.from_str(cifs[mid], fmt="cif")
        if "Li" in structure.composition and 10 <= len(structure) <= 40:
            picked.append(cifs[mid])
        if len(picked) == 4:
            break
    return picked


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
def li_version(router_champion) -> str:
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
    assert [c.name for c in model.signature.inputs.inputs if c.required] == COLUMNS
    # Optional: universal-potential members answer in mode (a) when it is given.
    assert [c.name for c in model.signature.inputs.inputs if not c.required] == ["structure_charged"]
    assert "local_voltages" in [p.name for p in model.signature.params.params]
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
    cell = Structure(Lattice.cubic(3.0), ["Li"], [[0, 0, 0]]) * (8, 8, 8)  # 512 sites > MAX_SITES
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
