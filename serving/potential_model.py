"""The universal-potential families (voltmodels.potentials.families) as an MLflow pyfunc.

Request: `structure` (the discharged, ion-containing structure: CIF, POSCAR or Structure JSON) and
`working_ion`, plus an optional `structure_charged`. With it, the voltage comes from static energies
of both end members (mode a); without it, the charged host is the structure without its working-ion
atoms and both are relaxed with the potential first (mode b, seconds per row). Every output row says
which model, family, potential and mode answered, with the 90 % conformal interval, and in mode (b)
whether both relaxations converged within the step cap (`relaxation`).

Artifacts: `family` (JSON: the family's parameters, the potential's identity, the metal references,
interval half-widths) and, for the trained families, `regressor` (a skops file, no arbitrary pickle, whose SHA-256 is in
the JSON and checked before it is loaded).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from serving.inputs import invalid, parse_rows, parse_structure_bounded, predict_rows
from serving.limits import DEFAULT_LIMITS, Limits
from serving.model_code import model_code
from voltmodels.config import VoltmodelsError

FAMILY_ARTIFACT = "family"
REGRESSOR_ARTIFACT = "regressor"
FORMAT_VERSION = 2  # 2: regressor in skops format (was joblib)
OUTPUT_COLUMNS = ("voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "model_id", "working_ion", "family", "potential", "mode", "relaxation")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PotentialPredictor:
    """One fitted family as plain Python (shared by the pyfunc and the router)."""

    def __init__(self, family_json: str | Path, regressor_path: str | Path | None = None, model_name: str | None = None, model_version: str = "", model_id: str = ""):
        from voltmodels.potentials.calculators import potential_key
        from voltmodels.potentials.compute import RelaxSettings
        from voltmodels.potentials.families import FamilyModel

        meta = json.loads(Path(family_json).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise VoltmodelsError(f"{family_json} has format version {meta.get('format_version')}, this code reads {FORMAT_VERSION}; re-log the model")
        regressor = None
        if meta.get("regressor_sha256"):
            if regressor_path is None or _sha256(Path(regressor_path)) != meta["regressor_sha256"]:
                raise VoltmodelsError(f"the regressor of {meta['registered_name']} does not match the SHA-256 recorded when it was logged; refusing to load it")
            from serving.packaging import load_estimator

            regressor = load_estimator(regressor_path)
        if potential_key(meta["potential"]) != meta["potential_key"]:
            # A different package release or weights file would give other energies than the model learned from.
            raise VoltmodelsError(f"{meta['registered_name']} was fitted with {meta['potential_key']}, but this environment has {potential_key(meta['potential'])}")
        self.meta = meta
        # A model logged before mode (b) intervals were scaled has no `mode_b_scale`: its intervals as they were.
        # One logged before the Delta model read the representation's change per charge moved reads without it.
        self.model = FamilyModel(
            meta["family"], {k: tuple(v) for k, v in meta["recal"].items()}, regressor, meta["fallback"], meta["half_width"], meta.get("mode_b_scale", 1.0), meta.get("delta_transfer", False)
        )
        self.supported_ions = list(meta["ions"])
        self.relax_settings = RelaxSettings(**meta["relax_settings"])
        self.model_name = model_name or meta["registered_name"]
        self.model_version = str(model_version or "")
        self.model_id = model_id
        self.limits = DEFAULT_LIMITS

    def warm_up(self) -> None:
        """Pay at server start what the first request would: the energy and voltage modules (pymatgen's
        compatibility tables), matminer's data tables of the Delta model's features, the potential's weights.
        Cold, they added about 15 s to a served model's first request even when its energies were cached."""
        from voltmodels.potentials import electrodes  # noqa: F401
        from voltmodels.potentials.calculators import load_potential

        if self.model.family == "uip_delta":
            from voltmodels.baselines import feature_names

            feature_names()  # builds the featurizers once per process
        for name in self.meta["potential"].split("+"):  # a combined model ("a+b") computes with each
            load_potential(name)

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from voltmodels.baselines import featurize_structures
        from voltmodels.potentials.electrodes import Electrode, electrode_inputs

        parsed = parse_rows(frame, self.supported_ions, self.limits)
        charged_column = frame["structure_charged"] if "structure_charged" in frame.columns else [None] * len(frame)
        electrodes, problems = [], []
        for row, (structure, ion), charged in zip(frame.index, parsed, charged_column):
            if charged is not None and not (isinstance(charged, float) and np.isnan(charged)) and str(charged).strip():
                try:
                    charged = parse_structure_bounded(charged, self.limits)
                except VoltmodelsError as exc:
                    problems.append(f"row {row}: structure_charged: {exc}")
                    continue
            else:
                charged = None
            electrodes.append(Electrode(ion, structure, charged))
        if problems:
            raise invalid("Invalid input: " + "; ".join(problems) + ".")
        ions = [e.ion for e in electrodes]
        inputs = electrode_inputs(electrodes, self.meta["potential"], self.relax_settings, embedding_dims=self.meta.get("embedding_dims"))
        # A served row needs the potential's voltage (the median fallback is for evaluation tables only).
        failed = [f"row {row}: {error or 'no voltage'}" for row, error, v in zip(frame.index, inputs.errors, inputs.v_uip) if not np.isfinite(v)]
        if failed:
            raise invalid(f"{self.meta['potential']} gave no voltage: " + "; ".join(failed) + ".")
        features = featurize_structures([e.discharged for e in electrodes]) if self.model.family == "uip_delta" else np.zeros((len(electrodes), 0))
        voltage = self.model.predict(inputs, features, ions)
        half = self.model.interval(ions, mode_b=[e.charged is None for e in electrodes])
        return pd.DataFrame(
            {
                "voltage": voltage,
                "voltage_lower": voltage - half,
                "voltage_upper": voltage + half,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "model_id": self.model_id,
                "working_ion": ions,
                "family": self.model.family,
                "potential": self.meta["potential"],
                "mode": ["a" if e.charged is not None else "b" for e in electrodes],
                # Mode (b): whether both relaxations converged within the step cap ("" in mode a).
                "relaxation": inputs.relaxation or [""] * len(electrodes),
            },
            index=frame.index,
        )


class PotentialVoltageModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from serving.identity import served_identity
        from voltmodels.config import set_torch_threads

        set_torch_threads()
        self.predictor = PotentialPredictor(context.artifacts[FAMILY_ARTIFACT], context.artifacts.get(REGRESSOR_ARTIFACT), *served_identity(context, FAMILY_ARTIFACT))
        self.predictor.limits = Limits.from_config(context.model_config)
        self.predictor.warm_up()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_rows(lambda frame: self.predictor.predict(frame, params), model_input, params, OUTPUT_COLUMNS)


def pip_requirements() -> list[str]:
    from serving.cgcnn_model import pip_requirements as base
    from serving.packaging import installed, pinned
    from voltmodels.potentials.calculators import BUILTIN, FROM_FILE

    return [*base(), *pinned(["matminer", "ase", "skops", *installed(sorted({*BUILTIN.values(), *FROM_FILE.values()}))])]


def family_metadata(model, *, potential: str, registered_name: str, ions, relax_settings, embedding_dims: dict, metrics: dict) -> dict:
    from dataclasses import asdict

    from voltmodels.baselines import feature_set_key
    from voltmodels.potentials.calculators import potential_key

    return {
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "registered_name": registered_name,
        "potential": potential,
        "potential_key": potential_key(potential),
        "ions": sorted(ions),
        "recal": {k: list(v) for k, v in model.recal.items()},
        "fallback": model.fallback,
        "half_width": model.half_width,
        "mode_b_scale": model.mode_b_scale,
        "delta_transfer": model.delta_transfer,
        "relax_settings": asdict(relax_settings),
        "embedding_dims": embedding_dims,
        "feature_set_key": feature_set_key(),
        "metrics": metrics,
    }


def log_potential_model(model, meta: dict, input_example: pd.DataFrame, name: str):
    """Log a fitted FamilyModel as a pyfunc in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    from serving.cgcnn_model import PACKAGE_DIRS

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        if model.regressor is not None:
            from serving.packaging import save_estimator

            path = save_estimator(model.regressor, Path(tmp) / "regressor.skops")
            meta = {**meta, "regressor_sha256": _sha256(path)}
            artifacts[REGRESSOR_ARTIFACT] = str(path)
        family_path = Path(tmp) / "family.json"
        family_path.write_text(json.dumps(meta, indent=2))
        artifacts[FAMILY_ARTIFACT] = str(family_path)
        output = PotentialPredictor(family_path, artifacts.get(REGRESSOR_ARTIFACT)).predict(input_example)
        signature = infer_signature(input_example, output, params={"on_error": "raise"})
        # structure_charged is optional: without it a row is answered in mode (b).
        signature.inputs = Schema([ColSpec(DataType.string, "structure"), ColSpec(DataType.string, "working_ion"), ColSpec(DataType.string, "structure_charged", required=False)])
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=model_code("potential"),
            artifacts=artifacts,
            code_paths=PACKAGE_DIRS,
            pip_requirements=pip_requirements(),
            signature=signature,
            input_example=input_example,
            model_config={"model_name": meta["registered_name"]},
        )
