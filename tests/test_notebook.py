"""notebooks/walkthrough.ipynb runs top to bottom (quick profile) against the session's isolated store,
and is stored without outputs."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"
CELL_TIME_LIMIT_S = 600  # nbclient's limit is per cell
TOTAL_TIME_LIMIT_S = 900  # the notebook takes 4-4.5 min on 2 cores shared with other jobs (load 6-11)

pytestmark = pytest.mark.integration


def test_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "clear the notebook's outputs before committing"


def test_walkthrough_runs(snapshot_dir, isolated_tracking, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        **os.environ,  # MLFLOW_TRACKING_URI and VOLTMODELS_CACHE from the isolated_tracking fixture
        "VOLTMODELS_SNAPSHOT": str(snapshot_dir),
        "VOLTMODELS_TORCH_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    assert env["MLFLOW_TRACKING_URI"].startswith("sqlite:///") and str(isolated_tracking) in env["MLFLOW_TRACKING_URI"]
    client = NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIME_LIMIT_S, resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    started = time.perf_counter()
    client.execute(env=env)
    elapsed = time.perf_counter() - started
    print(f"walkthrough executed in {elapsed:.0f} s")
    nbformat.write(nb, tmp_path / "walkthrough.executed.ipynb")  # for a look when it misbehaves

    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert elapsed < TOTAL_TIME_LIMIT_S, f"the walkthrough took {elapsed:.0f} s"
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "stream"
    )
    assert "tracking store: " + env["MLFLOW_TRACKING_URI"] in text  # the kernel used the isolated store
    assert "server stopped: True" in text
    assert "local_head_fidelity_mae" in text

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert MlflowClient().get_model_version_by_alias("voltage-cgcnn-Mg", "champion") is not None
    steps = set(mlflow.search_runs(search_all_experiments=True)["tags.voltmodels.step"].dropna())
    assert {"curate", "train_li", "transfer", "interpret"} <= steps
