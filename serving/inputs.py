"""Validation of prediction requests, shared by every served model.

A request is a DataFrame with `structure` (CIF text or pymatgen Structure JSON) and `working_ion`
(and, for the universal-potential models, an optional `structure_charged`).
Every bad row is reported in one message that names the row and the reason; MLflow's scoring server
turns the INVALID_PARAMETER_VALUE error into HTTP 400 and keeps serving.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from pymatgen.core import Structure

from serving.limits import DEFAULT_LIMITS, Limits, check_request, check_structure_text
from voltmodels.config import VoltmodelsError
from voltmodels.graphs.convert import parse_structure

REQUIRED_COLUMNS = ("structure", "working_ion")


def invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def check_columns(frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise invalid(f"Input must be a table with columns {', '.join(REQUIRED_COLUMNS)}.")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise invalid(
            f"Input lacks column(s) {', '.join(missing)}; expected columns {', '.join(REQUIRED_COLUMNS)}, got {', '.join(map(str, frame.columns)) or 'none'}."
        )
    if frame.empty:
        raise invalid("Input has no rows.")


def parse_structure_bounded(raw, limits: Limits = DEFAULT_LIMITS) -> Structure:
    """parse_structure, after the text-only size checks of serving/limits.py."""
    check_structure_text(raw, limits)
    structure = parse_structure(raw)
    if len(structure) > limits.max_sites:
        raise VoltmodelsError(f"the cell has {len(structure)} sites, above the limit of {limits.max_sites}")
    return structure


def parse_rows(frame: pd.DataFrame, supported_ions: Iterable[str], limits: Limits = DEFAULT_LIMITS) -> list[tuple[Structure, str]]:
    """Structures and ions for every row, or one error naming every bad row and why."""
    check_columns(frame)
    try:
        check_request(len(frame), frame["structure"], limits)
    except VoltmodelsError as exc:
        raise invalid(f"Invalid input: {exc}.") from None
    supported = sorted(set(supported_ions))
    parsed, problems = [], []
    # Rows are named by the frame's index: a router passing a member a slice of the request names the user's rows.
    for row, raw, ion in zip(frame.index, frame["structure"], frame["working_ion"]):
        try:
            ion = str(ion).strip()
            if ion not in supported:
                raise VoltmodelsError(f"working_ion {ion!r} is not supported (supported: {', '.join(supported)})")
            structure = parse_structure_bounded(raw, limits)
            if not structure.is_ordered:
                raise VoltmodelsError("the structure has partial occupancies; give an ordered structure")
            parsed.append((structure, ion))
        except VoltmodelsError as exc:
            problems.append(f"row {row}: {exc}")
    if problems:
        raise invalid("Invalid input: " + "; ".join(problems) + ".")
    return parsed


#: The `on_error` predict param of every voltmodels pyfunc: "raise" answers a request with a bad row
#: with one 400 naming every bad row (REST); "row" answers every row, a bad one with empty outputs and
#: its reason in an `error` column (batch screening: one bad structure must not fail a partition).
ON_ERROR_MODES = ("raise", "row")


def on_error_mode(params: dict | None) -> str:
    mode = str((params or {}).get("on_error") or "raise")
    if mode not in ON_ERROR_MODES:
        raise invalid(f"params.on_error is {mode!r}; use one of {', '.join(ON_ERROR_MODES)}.")
    return mode


def row_error_message(exc: Exception) -> str:
    """The reason a single row failed, without the request-level prefixes."""
    if not isinstance(exc, MlflowException):  # a model bug, not a user error: keep the type
        return f"prediction failed ({type(exc).__name__}: {exc})"
    message = exc.message.strip()
    for prefix in ("Invalid input: row 0: ", "Invalid input: "):
        message = message.removeprefix(prefix)
    return message.rstrip(".")


def predict_rows(predict, frame: pd.DataFrame, params: dict | None, columns) -> pd.DataFrame:
    """`predict(frame)` under the request's `on_error` mode.

    "row": the request is tried whole (the fast path); if it fails, every row is tried alone, and a row
    that still fails gets NaN / empty outputs in `columns` and its reason in `error` ("" for answered
    rows, not None: Spark's string conversion in `spark_udf` would turn None into "None").
    """
    frame = frame.reset_index(drop=True)
    if on_error_mode(params) == "raise":
        return predict(frame)
    try:
        out = predict(frame).reset_index(drop=True)
        out["error"] = ""
        return out
    except Exception:  # some row is bad: find which, answer the others
        pass
    parts = []
    for i in range(len(frame)):
        try:
            part = predict(frame.iloc[[i]].reset_index(drop=True))
            part["error"] = ""
        except Exception as exc:
            ion = frame["working_ion"].iloc[i] if "working_ion" in frame.columns else None
            part = pd.DataFrame({"working_ion": [ion], "error": [row_error_message(exc)]})
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    extra = [c for c in out.columns if c not in columns and c != "error"]
    return out.reindex(columns=[*columns, *extra, "error"])
