"""The library's one MLflow adapter: run lookups in the tracking store, the curated dataset of a curate run,
registry rules (the `champion` alias), `models:/` URIs and the CGCNN behind one.

Everything else in voltmodels is MLflow-free; the entry points in pipelines/ and the pyfuncs in serving/
call this module. Registered-model names are in :mod:`voltmodels.registry`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from voltmodels.config import VoltmodelsError, cache_dir
from voltmodels.registry import CHAMPION

# --------------------------------------------------------------------------------------------------
# runs and the curated dataset


def finished_runs(filter_string: str, max_results: int | None = None) -> list:
    """Finished runs of every experiment matching `filter_string`, newest first."""
    kwargs = {"max_results": max_results} if max_results else {}
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"{filter_string} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
        **kwargs,
    )


def latest_curate_run_id() -> str:
    from voltmodels.data.dataset import CURATE_STEP

    runs = finished_runs(f"tags.`voltmodels.step` = '{CURATE_STEP}'", max_results=1)
    if not runs:
        raise VoltmodelsError("No finished curate run in the tracking store; run `mlflow run . -e curate` first or pass -P dataset=PATH.")
    return runs[0].info.run_id


def curate_run_dataset_folder(reference: str | None) -> Path:
    """The local dataset folder of a curate run (its id, or None/'latest' for the latest finished one)."""
    from voltmodels.data.dataset import ARTIFACT_PATH, MANIFEST

    run_id = reference if reference and reference != "latest" else latest_curate_run_id()
    # Runs are immutable once finished, so a downloaded copy is reused by every later step.
    local_copy = cache_dir() / "datasets" / run_id / ARTIFACT_PATH
    if (local_copy / MANIFEST).is_file():
        return local_copy
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT_PATH, dst_path=str(local_copy.parent))
    except Exception as exc:  # MLflow raises different types per store for unknown runs
        raise VoltmodelsError(f"Dataset {reference!r} is neither a dataset folder nor a curate run with a dataset artifact ({exc}).") from exc
    return Path(local)


# --------------------------------------------------------------------------------------------------
# models:/ URIs


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, None) of `models:/name@alias`, (name, None, version) of `models:/name/version`,
    None for any other URI (a run or file URI, a LoggedModel `models:/m-<id>`)."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/") :]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, None, version
    return None


def registered_version(uri: str):
    """The ModelVersion a registered-model URI points to, or None (another URI form, or none such)."""
    parsed = parse_model_uri(uri)
    if parsed is None:
        return None
    name, alias, version = parsed
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias is not None else client.get_model_version(name, version)
    except MlflowException:
        return None


def resolve_model_uri(uri: str) -> str:
    """Check that a `models:/name@alias` URI exists; raise one clear sentence otherwise."""
    parsed = parse_model_uri(uri)
    if parsed is not None and parsed[1] is not None and registered_version(uri) is None:
        raise VoltmodelsError(f"Model {uri} does not exist in the registry at {mlflow.get_tracking_uri()}; train it first (e.g. mlflow run . -e train_li).")
    return uri


def model_identity(uri: str) -> str:
    """What a model URI points to now, unique across stores: a registry alias or version becomes the
    version's LoggedModel id (or run id); other URIs (`models:/m-...`, `runs:/<id>/...`) already are.
    Caches and study keys use it, so a moved `@champion` is never mistaken for the model it replaced."""
    version = registered_version(uri)
    if version is None:
        return resolve_model_uri(uri)  # raises for a registry URI that points nowhere
    return f"{version.name}/{version.version}/{getattr(version, 'model_id', None) or version.run_id}"


def trial_params(uri: str) -> dict:
    """A registered CGCNN's tuned hyperparameters (its `trial_params` version tag); {} when the URI
    is not a tuned registered version (e.g. a LoggedModel URI): the defaults then apply."""
    import json

    version = registered_version(uri)
    if version is None:
        return {}
    try:
        return json.loads(version.tags.get("trial_params", "{}"))
    except ValueError:  # a tag that is not JSON: the defaults apply
        return {}


#: The experiment of the results-table runs (one per benchmark or study table printed).
RESULTS_EXPERIMENT = "voltmodels-results"


def log_table_run(name: str, tables: dict, machine: str, dataset_digest: str = "", params: dict | None = None, command: str = "") -> str:
    """One MLflow run per printed results table: each table (a DataFrame or text) as an artifact,
    with the dataset digest, the machine line and the command that printed it."""
    import tempfile

    import pandas as pd

    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags({"voltmodels.step": "results_table", "table": name, "machine": machine[:5000], "dataset_digest": dataset_digest, "command": command[:5000]})
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        with tempfile.TemporaryDirectory() as tmp:
            for table_name, table in tables.items():
                if isinstance(table, pd.DataFrame):
                    table.to_csv(Path(tmp) / f"{table_name}.csv", index=False)
                    table = table.to_markdown(index=False)
                (Path(tmp) / f"{table_name}.md").write_text(f"{table}\n")
            mlflow.log_artifacts(tmp, "tables")
        return run.info.run_id


@contextlib.contextmanager
def results_run(name: str):
    """Around a benchmark: what it prints (its machine line first, then its tables) is also logged
    as a results-table run, tagged with the dataset digest it names, the machine and the command."""
    import io
    import re
    import sys

    from voltmodels.config import default_tracking_uri
    from voltmodels.machine import machine_line

    captured, stdout = io.StringIO(), sys.stdout

    class Tee(io.TextIOBase):
        def write(self, text):
            captured.write(text)
            return stdout.write(text)

        def flush(self):
            stdout.flush()

    sys.stdout = Tee()
    try:
        yield
    finally:
        sys.stdout = stdout
    text = captured.getvalue()
    machine = next((line for line in text.splitlines() if line.startswith("machine: ")), machine_line())
    digest = re.search(r"dataset (?:digest )?([0-9a-f]{16})", text)
    mlflow.set_tracking_uri(default_tracking_uri())
    if mlflow.active_run() is None:
        mlflow.set_experiment(RESULTS_EXPERIMENT)
    run_id = log_table_run(name, {"report": text}, machine, digest.group(1) if digest else "", command=" ".join(["python", *sys.argv]))
    print(f"results run {run_id} ({RESULTS_EXPERIMENT})")


def load_cgcnn(uri: str):
    """(CGCNN, GraphSettings) of a logged voltmodels CGCNN pyfunc; one clear sentence when there is none."""
    resolve_model_uri(uri)
    try:
        wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as exc:  # the registry/artifact store raise many types
        raise VoltmodelsError(f"Base model {uri} could not be loaded ({type(exc).__name__}: {exc}).") from exc
    if not hasattr(wrapper, "model") or not hasattr(wrapper, "settings"):
        raise VoltmodelsError(f"Base model {uri} is not a voltmodels CGCNN model.")
    return wrapper.model, wrapper.settings


# --------------------------------------------------------------------------------------------------
# registry rules


def champion_version(name: str):
    """The version behind `name@champion`, or None when the model or alias does not exist yet."""
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


#: The `selection_rule` tag of a version whose val_mae is that of one split (repeat 0 of the random split).
DEFAULT_SELECTION_RULE = "val_mae of random split repeat 0"


def register(model_uri: str, name: str, val_mae: float, tags: dict, description: str = "") -> tuple[str, bool]:
    """Register a version; move `@champion` to it only if its validation MAE beats the champion's.

    Returns (version, became_champion). Metrics go into version tags so the registry UI lists them.
    """
    client = MlflowClient()
    current = champion_version(name)
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        client.update_model_version(name, version.version, description=description)
    client.set_model_version_tag(name, version.version, "val_mae", f"{val_mae:.6f}")
    current_mae = float(current.tags.get("val_mae", "inf")) if current is not None else float("inf")
    # Validation MAEs are comparable only on the same curated data and under the same selection rule
    # (one split's MAE vs a mean over k splits): a champion of another digest or rule is replaced.
    comparable = current is None or (
        current.tags.get("dataset_digest") == str(tags.get("dataset_digest", current.tags.get("dataset_digest")))
        and current.tags.get("selection_rule", DEFAULT_SELECTION_RULE) == str(tags.get("selection_rule", DEFAULT_SELECTION_RULE))
    )
    promote = val_mae < current_mae or not comparable
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_model_version_tag(name, version.version, "champion_at_registration", str(promote).lower())
    return version.version, promote
