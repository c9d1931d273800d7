"""The `main` chain reuses a finished step only for the same entry point, params and source version."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils import mlflow_tags

from pipelines.common import SOURCE_VERSION_TAG
from pipelines.main import find_finished


def make_run(entry_point: str, params: dict, commit: str, status: str = "FINISHED") -> str:
    client = MlflowClient()
    experiment = mlflow.set_experiment("main-reuse-test")
    run = client.create_run(experiment.experiment_id, tags={mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT: entry_point, SOURCE_VERSION_TAG: commit})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_find_finished_matches_entry_point_params_and_commit():
    done = make_run("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1")
    make_run("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1", status="FAILED")
    assert find_finished("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1").info.run_id == done
    assert find_finished("train_li", {"dataset": "abc", "profile": "paper", "seed": "0"}, "c1") is None
    assert find_finished("train_li", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c2") is None
    assert find_finished("transfer", {"dataset": "abc", "profile": "quick", "seed": "0"}, "c1") is None
    assert find_finished("train_li", {"dataset": "abc"}, None) is None  # not a git checkout: never reuse


def test_main_relaunches_everything_downstream_of_a_changed_step(monkeypatch):
    """The chain's reuse key: a profile change relaunches every step but curate; a relaunched train_li
    relaunches what consumed it (transfer, interpret, router) but not baselines or uip."""
    import pipelines.main as main_module

    commit = "c-chain-test"
    launched = []

    class Submitted:
        def __init__(self, run_id):
            self.run_id = run_id

    def fake_run(project, entry_point, parameters, env_manager, synchronous):
        launched.append(entry_point)
        return Submitted(make_run(entry_point, {k: str(v) for k, v in parameters.items()}, commit))

    monkeypatch.setattr(main_module, "_source_version", lambda: commit)
    monkeypatch.setattr(main_module.mlflow.projects, "run", fake_run)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    argv = ["--snapshot", "/data", "--interpret-ions", "Li", "--potential", "sevennet-0"]

    def run_main(profile, *extra):
        launched.clear()
        main_module.main([*argv, "--profile", profile, *extra])
        return list(launched)

    chain = ["curate", "train_li", "baselines", "transfer", "uip", "interpret", "router"]
    assert run_main("quick") == chain
    assert run_main("quick") == []  # everything reused
    assert run_main("paper") == chain[1:]  # curate's params hold no profile

    client = MlflowClient()
    train_li = find_finished("train_li", {"profile": "paper", "seed": "0"}, commit)
    client.delete_run(train_li.info.run_id)  # e.g. removed after a bad run: train_li must run again
    assert run_main("paper") == ["train_li", "transfer", "interpret", "router"]
    transfer = find_finished("transfer", {"profile": "paper"}, commit)
    assert transfer.data.params["upstream"] == find_finished("train_li", {"profile": "paper"}, commit).info.run_id
    # The fit steps register on one split; the repeated-split grid runs when asked, after the router,
    # keyed by the Li run it transfers from.
    assert transfer.data.params["n_repeats"] == "1" and transfer.data.params["split"] == "random"
    assert run_main("paper", "--evaluate", "true") == ["evaluate"]
    assert run_main("paper", "--evaluate", "true") == []
    client.delete_run(find_finished("train_li", {"profile": "paper"}, commit).info.run_id)
    assert run_main("paper", "--evaluate", "true") == ["train_li", "transfer", "interpret", "router", "evaluate"]


def test_source_version_follows_the_code_not_the_docs(tmp_path):
    import git

    from pipelines.common import source_version

    repo = git.Repo.init(tmp_path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "t").set_value("user", "email", "t@example.org")

    def commit(path: str, text: str) -> str | None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        repo.index.add([path])
        repo.index.commit(f"edit {path}")
        return source_version(tmp_path)

    first = commit("voltmodels/a.py", "x = 1\n")
    assert first is not None
    assert commit("docs/results.md", "numbers\n") == first  # docs: finished steps stay reusable
    assert commit("tests/test_a.py", "def test(): pass\n") == first
    changed = commit("voltmodels/a.py", "x = 2\n")
    assert changed != first
    assert commit("MLproject", "name: x\n") != changed
    assert source_version(tmp_path / "nowhere") is None  # not a git checkout: nothing is reused


def test_mlproject_commands_hand_each_parameter_to_its_pipeline_unchanged():
    """MLflow shell-quotes every parameter value itself, so a placeholder the MLproject also wraps in
    quotes reaches the pipeline with the quotes in it (an empty `methods` became the text ''). Build
    each entry point's command as `mlflow run` does and parse it with the pipeline's own arguments."""
    import importlib
    import shlex
    from pathlib import Path

    import yaml
    from mlflow.projects._project_spec import load_project

    root = Path(__file__).resolve().parent.parent
    project = load_project(str(root))
    given = {"evaluate": {"methods": "uip=uip,uip_delta; li=cgcnn", "master": "local[2]"}, "screen": {"master": "spark://host:7077"}}
    for name in yaml.safe_load((root / "MLproject").read_text())["entry_points"]:
        entry_point = project.get_entry_point(name)
        required = {key: f"a {key}.parquet" for key, parameter in entry_point.parameters.items() if parameter.default is None}
        given[name] = {**required, **given.get(name, {})}
        tokens = shlex.split(entry_point.compute_command(given[name], None))
        assert tokens[:2] == ["python", "-m"], name
        args = importlib.import_module(tokens[2]).parse_args(tokens[3:])
        for key, parameter in entry_point.parameters.items():
            expected = given[name].get(key, parameter.default)
            if parameter.type == "string" and hasattr(args, key):
                assert str(getattr(args, key)) == str(expected), (name, key, getattr(args, key))
