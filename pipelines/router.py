"""Entry point `router`: bundle every ion's champion into the `voltage-predictor` pyfunc and register it.

For every ion, the better on validation of `voltage-cgcnn-<ion>@champion` and `voltage-uip-<ion>@champion`
(a universal-potential family); the winner's model folder is
downloaded and bundled inside the router, which is logged, registered as `voltage-predictor` and (by
default) made its champion: a router built from the current champions is the current best router.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines.common import main_guard, step_run
from voltmodels import registry, tracking
from voltmodels.config import SUPPORTED_IONS, VoltmodelsError, parse_ions

PREFIX = registry.cgcnn_name("")
PREFIXES = (PREFIX, registry.potential_name(""))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ions", default="all", help="comma-separated ions to include, or 'all' (every ion with a champion)")
    p.add_argument("--register", default="true", choices=["true", "false"])
    p.add_argument("--promote", default="true", choices=["true", "false"], help="move voltage-predictor@champion to the new version")
    p.add_argument("--upstream", default="", help="run ids of the steps that registered the members (recorded; main's reuse key)")
    p.add_argument("--families", default="cgcnn,uip", help="member kinds to choose from: cgcnn, uip or both (cgcnn alone: a fast router for large screens)")
    p.add_argument("--name", default=registry.ROUTER_NAME, help=f"registered model name (default {registry.ROUTER_NAME})")
    return p.parse_args(argv)


def _ion_order(ion: str) -> tuple:
    return (SUPPORTED_IONS.index(ion) if ion in SUPPORTED_IONS else len(SUPPORTED_IONS), ion)


def _registered(prefix: str) -> set[str]:
    client = MlflowClient()
    names, token = set(), None
    while True:
        page = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=200, page_token=token)
        names.update(m.name for m in page)
        token = page.token
        if not token:
            return names


def champion_members(ions: str = "all", prefixes=PREFIXES) -> dict:
    """{ion: champion ModelVersion}: per ion, the better (validation MAE) of `voltage-cgcnn-<ion>@champion`
    and `voltage-uip-<ion>@champion`; versions fitted on another dataset digest than the newest
    candidate's are not compared."""
    candidates: dict[str, list] = {}
    for prefix in prefixes:
        for name in _registered(prefix):
            version = tracking.champion_version(name)
            if version is not None:
                candidates.setdefault(name[len(prefix) :], []).append(version)
    wanted = parse_ions(ions, every=None)
    wanted = None if wanted is None else set(wanted)
    members = {}
    for ion, versions in candidates.items():
        if wanted is not None and ion not in wanted:
            continue
        newest = max(versions, key=lambda v: v.creation_timestamp)
        comparable = [v for v in versions if v.tags.get("dataset_digest") == newest.tags.get("dataset_digest")]
        members[ion] = min(comparable, key=lambda v: (_float_tag(v, "val_mae") if _float_tag(v, "val_mae") is not None else float("inf"), -v.creation_timestamp))
    if wanted is not None and (missing := sorted(wanted - set(members))):
        raise VoltmodelsError(f"No champion for ion(s) {', '.join(missing)}: register {', '.join(PREFIX + i for i in missing)} with a @{registry.CHAMPION} alias first.")
    if not members:
        raise VoltmodelsError(
            f"No {PREFIX}<ion>@{registry.CHAMPION} in the registry at {mlflow.get_tracking_uri()}; train one first (e.g. mlflow run . -e train_li)."
        )
    return {ion: members[ion] for ion in sorted(members, key=_ion_order)}


def _float_tag(version, key: str):
    try:
        return float(version.tags[key])
    except (KeyError, ValueError):
        return None


def structure_index(champions: dict, ions):
    """The index of the curated dataset the members were fitted on (the newest one's digest), so
    rows can give a material_id; None (with a note) when that dataset is not in this tracking store."""
    from serving.structure_index import StructureIndex
    from voltmodels.data.dataset import load_dataset

    digests = {v.tags.get("dataset_digest", "").split("-max")[0] for v in champions.values()} - {""}
    try:
        dataset = load_dataset("latest")
    except VoltmodelsError as exc:
        print(f"Router without a material_id index: {exc}")
        return None
    if digests and dataset.digest not in digests:
        print(f"Router without a material_id index: the latest curated dataset {dataset.digest} is not the members' ({', '.join(sorted(digests))})")
        return None
    index = StructureIndex.from_dataset(dataset, ions)
    mlflow.log_metric("structure_index_size", len(index.structures))
    return index


@main_guard
def main(argv=None) -> str | None:
    from serving.identity import logged_model_id
    from serving.router import log_router_model

    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    kinds = {"cgcnn": PREFIX, "uip": registry.potential_name("")}
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not families or set(families) - set(kinds):
        raise VoltmodelsError(f"--families {args.families!r}: use cgcnn, uip or cgcnn,uip")
    name = args.name
    with step_run("router", {"ions": args.ions, "register": args.register, "promote": args.promote, "upstream": args.upstream, "families": ",".join(families), "name": name}) as run:
        champions = champion_members(args.ions, [kinds[f] for f in families])
        members = {}
        for ion, v in champions.items():
            info = {"name": v.name, "version": str(v.version), "run_id": v.run_id or "", "source": v.source}
            for key in ("val_mae", "test_mae", "test_interval_coverage", "method", "potential"):
                if key in v.tags:
                    info[key] = v.tags[key]
            members[ion] = info
        print("Router members: " + ", ".join(f"{ion}: {m['name']} v{m['version']}" for ion, m in members.items()))
        mlflow.set_tag("router_members", ",".join(f"{m['name']}:{m['version']}" for m in members.values()))
        mlflow.log_metric("n_ions", len(members))
        for ion, v in champions.items():
            for key in ("val_mae", "test_mae", "test_interval_coverage"):
                if (value := _float_tag(v, key)) is not None:
                    mlflow.log_metric(f"{key}_{ion}", value)
        register = args.register == "true"
        with tempfile.TemporaryDirectory() as tmp:
            folders = {}
            for ion, v in champions.items():
                folders[ion] = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{v.name}/{v.version}", dst_path=str(Path(tmp) / f"{v.name}-v{v.version}"))
            index = structure_index(champions, list(members))
            for ion, folder in folders.items():
                members[ion]["model_id"] = logged_model_id(folder)  # the member's LoggedModel, from its own MLmodel
            info = log_router_model(members, folders, name, index=index)
        if not register:
            print(f"Router logged as {info.model_uri} (not registered)")
            return run.info.run_id
        maes = [m for m in (_float_tag(v, "val_mae") for v in champions.values()) if m is not None]
        tags = {"ions": ",".join(members), **{f"member_{ion}": f"{m['name']}:{m['version']}" for ion, m in members.items()}, "run_id": run.info.run_id}
        for ion, m in members.items():
            if "test_interval_coverage" in m:
                tags[f"test_interval_coverage_{ion}"] = m["test_interval_coverage"]
        description = "Routes rows by working_ion to: " + ", ".join(f"{m['name']} v{m['version']}" for m in members.values())
        # val_mae: mean of the members' (informative; the router's quality is its members').
        version, promoted = tracking.register(info.model_uri, name, sum(maes) / len(maes) if maes else float("inf"), tags, description)
        if args.promote == "true" and not promoted:
            client = MlflowClient()
            client.set_registered_model_alias(name, registry.CHAMPION, version)
            client.set_model_version_tag(name, version, "champion_at_registration", "true")
            promoted = True
        mlflow.set_tags({"registered_model": name, "registered_version": version, "became_champion": str(promoted).lower()})
        print(f"Router registered as {name} version {version}" + (f" (@{registry.CHAMPION})" if promoted else ""))
    return run.info.run_id


if __name__ == "__main__":
    main()
