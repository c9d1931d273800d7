"""The production stack end to end: MLflow tracking server on PostgreSQL with artifacts in S3 (moto),
the quick pipeline run against it through its URL, distributed Optuna on PostgreSQL, the registry
surviving a server restart.

Needs the services of scripts/services.sh (scripts/test.sh and .ci/run start them):
VOLTMODELS_TEST_PG_URL (a role that may CREATE DATABASE) and VOLTMODELS_TEST_S3_ENDPOINT. Without
them the module is skipped; with them every failure is a failure.

Artifact mode (VOLTMODELS_TEST_ARTIFACT_MODE): `direct` (default) - `--default-artifact-root s3://...`,
clients write to S3 themselves; `proxy` - `--serve-artifacts --artifacts-destination s3://...`,
clients go through the server (mlflow-artifacts:/ URIs; needs curate to turn that URI into an
http(s) dataset source and MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false, see docs/production.md,
"Artifacts").
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serving.processes import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
LI_MODEL = "voltage-cgcnn-Li"
N_TRIALS = 2
N_WORKERS = 2
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# --------------------------------------------------------------------------------------------------
# Services and a tracking server


def libpq_url(sqlalchemy_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what psycopg.connect takes)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return "postgresql://" + rest


def with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="module")
def services() -> dict:
    pg, s3 = os.environ.get("VOLTMODELS_TEST_PG_URL"), os.environ.get("VOLTMODELS_TEST_S3_ENDPOINT")
    if not pg or not s3:
        pytest.skip(
            "production-stack services not configured: VOLTMODELS_TEST_PG_URL / VOLTMODELS_TEST_S3_ENDPOINT are unset "
            "(scripts/test.sh sets them; or: eval \"$(bash scripts/services.sh start)\")"
        )
    return {"pg": pg, "s3": s3}


@dataclass
class TrackingServer:
    """`mlflow server` on a PostgreSQL database with an S3 artifact root; restartable."""

    backend_uri: str
    bucket: str
    s3_endpoint: str
    workdir: Path
    mode: str = "direct"
    port: int = 0
    proc: subprocess.Popen | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = {**os.environ, **FAKE_AWS, "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint}
        if self.mode == "proxy":
            # MLflow 3.17 fetches proxied S3 artifacts through presigned URLs with `requests`, which
            # undoes the Content-Encoding: gzip that the S3 repository sets on *.gz uploads: the
            # dataset's structures.json.gz would arrive decompressed. Stream through the server instead.
            env["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
            env.pop(key, None)
        return env

    def start(self, timeout: float = 180) -> None:
        self.port = free_port()
        self.starts += 1
        log = self.workdir / f"mlflow-server-{self.starts}.log"
        self.logs.append(log)
        artifacts = f"s3://{self.bucket}/mlflow"
        if self.mode == "proxy":
            storage = ["--serve-artifacts", "--artifacts-destination", artifacts]
        else:
            storage = ["--no-serve-artifacts", "--default-artifact-root", artifacts]
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri, *storage,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 4000) -> str:
        return self.logs[-1].read_text(errors="replace")[-n:] if self.logs else ""


@pytest.fixture(scope="module")
def stack(services, tmp_path_factory):
    """Fresh databases (MLflow, Optuna) and bucket for this run; a tracking server on them."""
    import boto3
    import psycopg

    tag = uuid.uuid4().hex[:10]
    mlflow_db, optuna_db, bucket = f"vm_mlflow_{tag}", f"vm_optuna_{tag}", f"voltmodels-test-{tag}"
    admin = libpq_url(services["pg"])
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{mlflow_db}"')
            conn.execute(f'CREATE DATABASE "{optuna_db}"')
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at VOLTMODELS_TEST_PG_URL is not usable ({exc}); is scripts/services.sh running?")
    s3 = boto3.client("s3", endpoint_url=services["s3"], region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
                      aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=bucket)
    mode = os.environ.get("VOLTMODELS_TEST_ARTIFACT_MODE", "direct")
    assert mode in ("direct", "proxy"), f"VOLTMODELS_TEST_ARTIFACT_MODE must be direct or proxy, not {mode!r}"
    server = TrackingServer(with_database(services["pg"], mlflow_db), bucket, services["s3"], tmp_path_factory.mktemp("prod-stack"), mode=mode)
    server.start()
    server.optuna_url = with_database(services["pg"], optuna_db)
    server.s3 = s3
    yield server
    server.stop()
    with contextlib.suppress(Exception):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
    with contextlib.suppress(Exception):
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            for db in (mlflow_db, optuna_db):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@contextlib.contextmanager
def client_of(server: TrackingServer):
    """This process pointed at the server (tracking + registry URIs, S3 credentials); restored after."""
    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL", *FAKE_AWS)
    old_env = {k: os.environ.get(k) for k in keys}
    old_tracking = mlflow.get_tracking_uri()
    # The registry URI follows MLFLOW_REGISTRY_URI (else the tracking URI); no global set_registry_uri to undo.
    os.environ.update({**FAKE_AWS, "MLFLOW_S3_ENDPOINT_URL": server.s3_endpoint, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_REGISTRY_URI": server.url})
    mlflow.set_tracking_uri(server.url)
    try:
        yield mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(old_tracking)


def run_module(server: TrackingServer, module: str, *args: str, timeout: float = 900) -> str:
    env = {**server.env(), "MLFLOW_TRACKING_URI": server.url, "VOLTMODELS_TORCH_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    for key in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        env.pop(key, None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"python -m {module}: {time.perf_counter() - started:.0f} s")
    if proc.returncode != 0:
        pytest.fail(
            f"python -m {module} {' '.join(args)} exited {proc.returncode} against {server.url}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            f"\n--- server log ---\n{server.log_tail(2000)}"
        )
    return proc.stdout


@dataclass
class PipelineResult:
    curate_run_id: str
    parent_run_id: str
    experiment_id: str
    study_name: str
    champion_version: str


@pytest.fixture(scope="module")
def pipeline(stack, snapshot_dir) -> PipelineResult:
    """curate + train_li (quick, N_TRIALS trials, N_WORKERS processes on a PostgreSQL study) via the server URL."""
    run_module(stack, "pipelines.curate", "--snapshot", str(snapshot_dir))
    run_module(stack, "pipelines.train_li", "--profile", "quick", "--n-trials", str(N_TRIALS), "--epochs", "2",
               "--n-workers", str(N_WORKERS), "--storage", stack.optuna_url)
    with client_of(stack) as client:
        experiment = client.get_experiment_by_name("voltmodels")
        assert experiment is not None, "the pipeline did not create the voltmodels experiment on the server"
        runs = {
            step: client.search_runs([experiment.experiment_id], f"tags.`voltmodels.step` = '{step}' and attributes.status = 'FINISHED'")
            for step in ("curate", "train_li")
        }
        assert len(runs["curate"]) == 1 and len(runs["train_li"]) == 1, {k: [r.info.run_id for r in v] for k, v in runs.items()}
        parent = runs["train_li"][0]
        champion = client.get_model_version_by_alias(LI_MODEL, "champion")
    return PipelineResult(runs["curate"][0].info.run_id, parent.info.run_id, experiment.experiment_id, parent.data.params["study_name"], champion.version)


def s3_keys(stack, prefix: str) -> list[str]:
    keys = []
    for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def s3_prefix(stack, uri: str) -> str:
    """The bucket prefix behind an artifact URI of this server (s3://bucket/... or mlflow-artifacts:/...)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        assert bucket == stack.bucket, f"artifacts went to bucket {bucket!r}, not {stack.bucket!r}"
        return key
    assert uri.startswith("mlflow-artifacts:"), f"unexpected artifact URI {uri}"
    return "mlflow/" + uri.split(":", 1)[1].lstrip("/")


# --------------------------------------------------------------------------------------------------
# Tests (module order: the restart test comes last)


def test_server_uses_postgres_and_s3(stack):
    import psycopg

    with psycopg.connect(libpq_url(stack.backend_uri), connect_timeout=10) as conn:
        tables = {row[0] for row in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert {"experiments", "runs", "registered_models", "model_versions", "registered_model_aliases"} <= tables, sorted(tables)
    with client_of(stack) as client:
        default = client.get_experiment("0")
    assert default.artifact_location.startswith(("s3://", "mlflow-artifacts:")), default.artifact_location


def test_distributed_optuna_on_postgres(stack, pipeline):
    import optuna

    study = optuna.load_study(study_name=pipeline.study_name, storage=stack.optuna_url)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    states = [t.state.name for t in trials]
    assert len(trials) == N_TRIALS, f"study has {len(trials)} trials, {N_TRIALS} requested (numbers {numbers}, states {states})"
    assert sorted(numbers) == list(range(N_TRIALS)), f"duplicated or missing trial numbers: {numbers}"
    assert all(s in ("COMPLETE", "PRUNED") for s in states), states
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), f"workers evaluated the same hyperparameters twice: {[t.params for t in trials]}"

    with client_of(stack) as client:
        parent = client.get_run(pipeline.parent_run_id)
        children = client.search_runs([pipeline.experiment_id], f"tags.`mlflow.parentRunId` = '{pipeline.parent_run_id}'")
    assert parent.data.params["n_workers"] == str(N_WORKERS)
    assert parent.data.metrics["n_trials_total"] == N_TRIALS
    assert len(children) == N_TRIALS, f"{len(children)} nested trial runs under the parent run, {N_TRIALS} expected"
    child_trials = sorted(int(r.data.tags["optuna_trial"]) for r in children)
    assert child_trials == sorted(numbers), f"nested runs are tagged with trials {child_trials}, study has {numbers}"
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert all(r.data.tags.get("optuna_study") == pipeline.study_name for r in children)


def test_artifacts_land_in_s3(stack, pipeline):
    with client_of(stack) as client:
        version = client.get_model_version(LI_MODEL, pipeline.champion_version)
        assert version.source.startswith("models:/m-"), version.source
        logged = client.get_logged_model(version.source[len("models:/") :])
        curate = client.get_run(pipeline.curate_run_id)
        children = client.search_runs([pipeline.experiment_id], f"tags.`mlflow.parentRunId` = '{pipeline.parent_run_id}'")

    model_keys = s3_keys(stack, s3_prefix(stack, logged.artifact_location))
    names = {Path(k).name for k in model_keys}
    # Models from code: the pyfunc is the logged code file (cgcnn.py), never a pickled python_model.pkl.
    assert {"MLmodel", "checkpoint.pt"} <= names and "python_model.pkl" not in names, f"registered model files in s3://{stack.bucket}: {sorted(model_keys)}"
    assert any(k.endswith("/artifacts/cgcnn.py") for k in model_keys), sorted(model_keys)
    dataset_keys = s3_keys(stack, s3_prefix(stack, curate.info.artifact_uri))
    assert any(k.endswith("electrodes.csv") for k in dataset_keys), dataset_keys
    for run in children:
        assert any(k.endswith("checkpoint.pt") for k in s3_keys(stack, s3_prefix(stack, run.info.artifact_uri))), f"trial {run.info.run_id} checkpoint not in S3"
    assert all(k.startswith("mlflow/") for k in s3_keys(stack, "")), "artifacts outside s3://<bucket>/mlflow"


def test_champion_resolves_and_predicts(stack, pipeline, tmp_path):
    import mlflow
    from mlflow.models import Model

    with client_of(stack) as client:
        champion = client.get_model_version_by_alias(LI_MODEL, "champion")
        assert champion.version == pipeline.champion_version
        assert float(champion.tags["val_mae"]) > 0 and "test_mae" in champion.tags
        local = mlflow.artifacts.download_artifacts(f"models:/{LI_MODEL}@champion", dst_path=str(tmp_path))
        example = Model.load(local).load_input_example(local)
        prediction = mlflow.pyfunc.load_model(local).predict(example)
    assert len(prediction) == len(example) > 0
    assert prediction["voltage"].between(-5, 10).all(), prediction
    assert set(prediction["model_name"]) == {LI_MODEL}


def test_registry_survives_server_restart(stack, pipeline, tmp_path):
    import mlflow

    def snapshot(client):
        models = {m.name: dict(m.aliases) for m in client.search_registered_models()}
        versions = {(v.name, v.version): (v.source, v.run_id, v.tags.get("val_mae"), v.status) for v in client.search_model_versions(f"name = '{LI_MODEL}'")}
        return models, versions

    with client_of(stack) as client:
        before = snapshot(client)
    assert before[0].get(LI_MODEL) == {"champion": pipeline.champion_version}, before[0]

    stack.stop()
    stack.start()

    with client_of(stack) as client:
        after = snapshot(client)
        assert after == before, f"registry changed across a server restart:\nbefore {before}\nafter  {after}"
        assert client.get_model_version_by_alias(LI_MODEL, "champion").version == pipeline.champion_version
        assert client.get_run(pipeline.parent_run_id).info.status == "FINISHED"
        local = mlflow.artifacts.download_artifacts(f"models:/{LI_MODEL}@champion", dst_path=str(tmp_path))
    assert (Path(local) / "MLmodel").is_file() and (Path(local) / "artifacts" / "checkpoint.pt").is_file()
