"""Entry point `screen`: predict the average voltage of many structures for one working ion.

Input: a folder of CIF / structure-JSON files (one structure per file, id = file name without suffix), a
JSON file {id: structure} (CIF text, structure JSON text or a structure dict), or a single CIF file.
Output: a CSV ranked by voltage (highest first) with the 90 % interval and the model that answered, and
next to it `<output>_failed.csv` listing every input that could not be read or predicted, with the
reason. Both are logged as run artifacts. A bad file never stops the screen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from pipelines.common import main_guard, step_run
from voltmodels import registry
from voltmodels.config import VoltmodelsError
from voltmodels.data.structures import parse_structure

DEFAULT_MODEL = f"models:/{registry.ROUTER_NAME}@{registry.CHAMPION}"
STRUCTURE_SUFFIXES = {".cif", ".json", ".mcif"}
RESULT_COLUMNS = ["rank", "id", "formula", "n_sites", "working_ion", "voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "source"]
FAILED_COLUMNS = ["id", "source", "stage", "reason"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder of .cif/.json files, a JSON file {id: structure}, or one CIF file")
    p.add_argument("--ion", default="Li", help="working ion (default Li)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model URI (default {DEFAULT_MODEL}, else models:/voltage-cgcnn-<ion>@champion)")
    p.add_argument("--output", default="outputs/screen.csv", help="ranked CSV to write")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def failed_path(output: Path) -> Path:
    return output.with_name(output.stem + "_failed.csv")


def read_inputs(path: str | Path) -> tuple[list[tuple[str, str, object]], list[dict]]:
    """(id, source, raw structure) for every input, and the inputs that could not even be read."""
    path = Path(path).expanduser()
    items, failed = [], []
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in STRUCTURE_SUFFIXES)
        if not files:
            raise VoltmodelsError(f"{path} holds no {', '.join(sorted(STRUCTURE_SUFFIXES))} files")
        for f in files:
            try:
                items.append((f.stem, str(f), f.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                failed.append({"id": f.stem, "source": str(f), "stage": "read", "reason": f"the file could not be read ({type(exc).__name__}: {exc})"})
    elif path.is_file() and path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VoltmodelsError(f"{path} is not a readable JSON file ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or not data:
            raise VoltmodelsError(f"{path} must hold a non-empty JSON object {{id: structure}}")
        if {"lattice", "sites"} <= data.keys() or {"lattice", "species", "frac_coords"} <= data.keys():
            items.append((path.stem, str(path), data))  # one structure, not a mapping
        else:
            items.extend((str(key), f"{path}#{key}", value) for key, value in data.items())
    elif path.is_file():
        try:
            items.append((path.stem, str(path), path.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise VoltmodelsError(f"{path} could not be read ({type(exc).__name__}: {exc})") from None
    else:
        raise VoltmodelsError(f"input {path} does not exist")
    return items, failed


def parse_inputs(items) -> tuple[list[dict], list[dict]]:
    """Parsed structures (id, source, structure) and the inputs that are not structures, with why."""
    parsed, failed = [], []
    for key, source, raw in items:
        try:
            parsed.append({"id": key, "source": source, "structure": parse_structure(raw)})
        except VoltmodelsError as exc:
            failed.append({"id": key, "source": source, "stage": "parse", "reason": str(exc)})
    return parsed, failed


def _supported_ions(model) -> list[str] | None:
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # not a custom pyfunc: cannot tell, let predict decide
        return None
    ions = getattr(python_model, "supported_ions", None)
    if ions is None and getattr(python_model, "ion", None):
        ions = [python_model.ion]
    return list(ions) if ions is not None else None


def load_model(uri: str, ion: str):
    """(uri, pyfunc) for the screen. The default router falls back to the ion's own champion when the
    router is not registered or does not cover the ion; an explicit --model is used as given."""
    candidates = [uri] + ([f"models:/{registry.cgcnn_name(ion)}@{registry.CHAMPION}"] if uri == DEFAULT_MODEL else [])
    reasons = []
    for candidate in candidates:
        try:
            registry.resolve_model_uri(candidate)
        except VoltmodelsError as exc:
            reasons.append(str(exc))
            continue
        model = mlflow.pyfunc.load_model(candidate)
        ions = _supported_ions(model)
        if ions is not None and ion not in ions:
            reasons.append(f"{candidate} does not cover {ion} (it covers {', '.join(sorted(ions))}).")
            continue
        return candidate, model
    raise VoltmodelsError(" ".join(reasons))


def _reason(exc: Exception) -> str:
    if not isinstance(exc, MlflowException):  # a model bug, not a user error: keep the type
        return f"prediction failed ({type(exc).__name__}: {exc})"
    message = exc.message.strip()
    for prefix in ("Invalid input: row 0: ", "Invalid input: "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message.rstrip(".")


def _frame(entries, ion: str) -> pd.DataFrame:
    return pd.DataFrame({"structure": [e["structure"].to_json() for e in entries], "working_ion": ion})


def predict_all(model, ion: str, parsed: list[dict], batch_size: int = 64) -> tuple[pd.DataFrame, list[dict]]:
    """Predictions for every parsed structure; a batch the model rejects is retried row by row so that
    one bad structure costs only its own row."""
    frames, failed = [], []
    for start in range(0, len(parsed), max(1, batch_size)):
        chunk = parsed[start : start + batch_size]
        try:
            out = model.predict(_frame(chunk, ion))
            kept = chunk
        except Exception:  # some row is bad: find which, keep the others
            rows, kept = [], []
            for entry in chunk:
                try:
                    rows.append(model.predict(_frame([entry], ion)))
                    kept.append(entry)
                except Exception as exc:
                    failed.append({"id": entry["id"], "source": entry["source"], "stage": "predict", "reason": _reason(exc)})
            if not rows:
                continue
            out = pd.concat(rows, ignore_index=True)
        out = out.reset_index(drop=True)
        out["id"] = [e["id"] for e in kept]
        out["source"] = [e["source"] for e in kept]
        out["formula"] = [e["structure"].composition.reduced_formula for e in kept]
        out["n_sites"] = [len(e["structure"]) for e in kept]
        out["working_ion"] = ion
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=RESULT_COLUMNS), failed
    results = pd.concat(frames, ignore_index=True).sort_values("voltage", ascending=False, kind="stable").reset_index(drop=True)
    results["rank"] = range(1, len(results) + 1)
    return results[RESULT_COLUMNS], failed


def screen(input_path: str, ion: str, model_uri: str = DEFAULT_MODEL, output: str = "outputs/screen.csv", batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Run the screen; returns (ranked results, failures, the model URI used) and writes both CSVs."""
    items, failed = read_inputs(input_path)
    parsed, parse_failed = parse_inputs(items)
    failed += parse_failed
    used_uri, model = load_model(model_uri, ion)
    results, predict_failed = predict_all(model, ion, parsed, batch_size)
    failures = pd.DataFrame(failed + predict_failed, columns=FAILED_COLUMNS)
    out = Path(output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(out, index=False, float_format="%.4f")
    failures.to_csv(failed_path(out), index=False)
    return results, failures, used_uri


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    with step_run("screen", {"input": args.input, "ion": args.ion, "model": args.model, "output": args.output}) as run:
        results, failures, used_uri = screen(args.input, args.ion, args.model, args.output, args.batch_size)
        mlflow.set_tag("model_uri_used", used_uri)
        mlflow.log_metrics({"n_inputs": len(results) + len(failures), "n_predicted": len(results), "n_failed": len(failures)})
        out = Path(args.output).expanduser()
        mlflow.log_artifact(str(out), "screen")
        mlflow.log_artifact(str(failed_path(out)), "screen")
        print(f"Screened {len(results) + len(failures)} structures for {args.ion} with {used_uri}: {len(results)} predicted, {len(failures)} failed")
        print(f"Ranked table: {out}; failures: {failed_path(out)}")
        if len(results):
            print(results.head(10)[["rank", "id", "formula", "voltage", "voltage_lower", "voltage_upper"]].to_string(index=False))
        for row in failures.itertuples():
            print(f"  failed {row.id} ({row.stage}): {row.reason}")
    return run.info.run_id


if __name__ == "__main__":
    main()
