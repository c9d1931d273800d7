"""Batch screening: a table of structures -> voltages ranked highest first, on pandas or on Spark.

Both engines score with the same registered pyfunc and its `on_error="row"` mode (serving/inputs.py):
pandas calls `model.predict` batch by batch in this process; Spark wraps the model with
`mlflow.pyfunc.spark_udf`, so each executor's Python worker loads it once and scores its partitions in
Arrow batches. A structure that cannot be read or predicted becomes a failed row with its stage and
reason; it never fails the job. Ranking is by voltage, then id, so a rerun writes the same rows.

Inputs: a Parquet file or folder, a JSON-lines file (one structure table row per line: `structure`,
optional `id` / `candidate_id`, `working_ion`, `structure_charged`), a folder of CIF / POSCAR /
structure-JSON files (id = file name), a JSON file {id: structure}, or one structure file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voltmodels.config import VoltmodelsError
from voltmodels.spark import spark_session

STRUCTURE_SUFFIXES = {".cif", ".json", ".mcif", ".vasp", ".poscar"}
TABLE_SUFFIXES = {".parquet", ".jsonl"}
PREDICTION_COLUMNS = ["voltage", "voltage_lower", "voltage_upper", "model_name", "model_version", "mode", "relaxation"]
RESULT_COLUMNS = ["rank", "id", "formula", "n_sites", "working_ion", *PREDICTION_COLUMNS, "source"]
FAILED_COLUMNS = ["id", "source", "stage", "reason"]
ENGINES = ("pandas", "spark")


@dataclass
class ScreenResult:
    ranked: pd.DataFrame
    failed: pd.DataFrame
    model_uri: str
    engine: str
    seconds: float  # reading, scoring and ranking; not the driver's model load (Spark's executors' loads count)

    @property
    def throughput(self) -> float:
        return (len(self.ranked) + len(self.failed)) / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------------
# inputs


def _as_text(raw) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw)


def _table(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "structure" not in frame.columns:
        raise VoltmodelsError(f"{source} has no `structure` column (columns: {', '.join(map(str, frame.columns)) or 'none'})")
    ids = frame["id"] if "id" in frame.columns else frame["candidate_id"] if "candidate_id" in frame.columns else pd.Series(range(len(frame)))
    ids = ids.astype(str).to_numpy()
    out = pd.DataFrame({"id": ids, "source": [f"{source}#{i}" for i in ids], "structure": frame["structure"].map(_as_text).to_numpy()})
    for column in ("working_ion", "structure_charged"):
        if column in frame.columns:
            out[column] = frame[column].to_numpy()
    return out


def read_inputs(path: str | Path) -> tuple[pd.DataFrame, list[dict]]:
    """A structure table (id, source, structure text, optional working_ion / structure_charged) and
    the inputs that could not even be read, with why."""
    path = Path(path).expanduser()
    failed: list[dict] = []
    if not path.exists():
        raise VoltmodelsError(f"input {path} does not exist")
    if path.suffix.lower() == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return _table(pd.read_parquet(path), str(path)), failed
    if path.suffix.lower() == ".jsonl":
        try:
            return _table(pd.read_json(path, lines=True, dtype=False), str(path)), failed
        except ValueError as exc:
            raise VoltmodelsError(f"{path} is not a JSON-lines table ({exc})") from None
    items = []
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in STRUCTURE_SUFFIXES)
        if not files:
            raise VoltmodelsError(f"{path} holds no {', '.join(sorted(STRUCTURE_SUFFIXES | TABLE_SUFFIXES))} files")
        for f in files:
            try:
                items.append((f.stem, str(f), f.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                failed.append({"id": f.stem, "source": str(f), "stage": "read", "reason": f"the file could not be read ({type(exc).__name__}: {exc})"})
    elif path.suffix.lower() == ".json":
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
    else:
        try:
            items.append((path.stem, str(path), path.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise VoltmodelsError(f"{path} could not be read ({type(exc).__name__}: {exc})") from None
    table = pd.DataFrame({"id": [i for i, _, _ in items], "source": [s for _, s, _ in items], "structure": [_as_text(r) for _, _, r in items]})
    return table, failed


def describe(structures: pd.Series) -> pd.DataFrame:
    """formula, n_sites and parse_error (None if it parsed) of structure texts: the parse stage, under
    the served models' limits (an oversized cell is refused from its text, not parsed)."""
    from serving.inputs import parse_structure_bounded

    formula, n_sites, errors = [], [], []
    for raw in structures:
        try:
            s = parse_structure_bounded(raw)
            formula.append(s.composition.reduced_formula), n_sites.append(len(s)), errors.append(None)
        except VoltmodelsError as exc:
            formula.append(None), n_sites.append(-1), errors.append(str(exc))
    return pd.DataFrame({"formula": formula, "n_sites": n_sites, "parse_error": errors})


def with_ion(table: pd.DataFrame, ion: str | None) -> pd.DataFrame:
    """The table's own `working_ion` where it has one; `ion` for the other rows."""
    column = table["working_ion"] if "working_ion" in table.columns else pd.Series([None] * len(table), index=table.index)
    filled = column.where(column.notna() & (column.astype(str).str.strip() != ""), ion)
    if filled.isna().any():
        raise VoltmodelsError("the input has rows without a working_ion and no --ion was given")
    table = table.assign(working_ion=filled.astype(str).str.strip())
    if "structure_charged" not in table.columns:
        table["structure_charged"] = None
    return table


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    charged = frame["structure_charged"].where(frame["structure_charged"].notna(), None)
    return pd.DataFrame({"structure": frame["structure"].to_numpy(), "working_ion": frame["working_ion"].to_numpy(), "structure_charged": charged.to_numpy()})


def split_results(table: pd.DataFrame, predictions: pd.DataFrame, failed: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ranked predictions and the failures (read, parse, predict) of a described, scored table."""
    table = table.reset_index(drop=True)
    predictions = predictions.reset_index(drop=True)
    parse_failed = table["parse_error"].notna()
    predict_failed = ~parse_failed & (predictions["error"].fillna("").astype(str) != "")
    failures = [
        *failed,
        *({"id": r.id, "source": r.source, "stage": "parse", "reason": r.parse_error} for r in table[parse_failed].itertuples()),
        *({"id": i, "source": s, "stage": "predict", "reason": e} for i, s, e in zip(table.loc[predict_failed, "id"], table.loc[predict_failed, "source"], predictions.loc[predict_failed, "error"])),
    ]
    ok = ~parse_failed & ~predict_failed
    ranked = pd.concat([table.loc[ok, ["id", "formula", "n_sites", "working_ion", "source"]], predictions.loc[ok, PREDICTION_COLUMNS]], axis=1)
    ranked = ranked.sort_values(["voltage", "id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked[RESULT_COLUMNS], pd.DataFrame(failures, columns=FAILED_COLUMNS)


# --------------------------------------------------------------------------------------------------
# engines


def score_pandas(model, table: pd.DataFrame, batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`describe` + the model's predictions (with `error`) for every row, in this process."""
    described = pd.concat([table.reset_index(drop=True), describe(table["structure"])], axis=1)
    parsed = described["parse_error"].isna().to_numpy()
    predictions = pd.DataFrame(index=range(len(table)), columns=[*PREDICTION_COLUMNS, "error"], dtype=object)
    rows = np.flatnonzero(parsed)
    for start in range(0, len(rows), max(1, batch_size)):
        chunk = rows[start : start + batch_size]
        out = model.predict(model_inputs(described.iloc[chunk]), params={"on_error": "row"})
        predictions.iloc[chunk] = out.reindex(columns=[*PREDICTION_COLUMNS, "error"]).to_numpy()
    for column in ("voltage", "voltage_lower", "voltage_upper"):
        predictions[column] = pd.to_numeric(predictions[column])
    return described, predictions

def spark_table(spark, path: str | Path, ion: str | None):
    """A Parquet / JSON-lines structure table with an `id` (or `candidate_id`) column read by Spark
    itself, so on a cluster it never passes through the driver; None for any other input."""
    from pyspark.sql import functions as F

    uri = str(path)  # kept as given: s3a://, hdfs:// ... are read by Spark, not by this process
    local = Path(uri).expanduser() if "://" not in uri else None
    uri = str(local) if local is not None else uri
    if uri.lower().endswith(".jsonl"):
        df = spark.read.json(uri)
    elif uri.lower().rstrip("/").endswith(".parquet") or (local is not None and local.is_dir() and any(local.glob("*.parquet"))):
        df = spark.read.parquet(uri)
    else:
        return None
    id_column = next((c for c in ("id", "candidate_id") if c in df.columns), None)
    if id_column is None or "structure" not in df.columns:
        return None
    ion_column = F.nullif(F.trim(F.col("working_ion").cast("string")), F.lit("")) if "working_ion" in df.columns else F.lit(None).cast("string")
    return df.select(
        F.col(id_column).cast("string").alias("id"),
        F.concat(F.lit(f"{uri}#"), F.col(id_column).cast("string")).alias("source"),
        F.col("structure").cast("string").alias("structure"),
        F.coalesce(ion_column, F.lit(ion)).alias("working_ion"),
        (F.col("structure_charged").cast("string") if "structure_charged" in df.columns else F.lit(None).cast("string")).alias("structure_charged"),
    )


def score_spark(spark, model_uri: str, df, batch_size: int = 64, partitions: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same as score_pandas on a Spark DataFrame (id, source, structure, working_ion,
    structure_charged): the parse stage and the model run as UDFs in the executors; only the small
    result columns come back to the driver."""
    import mlflow.models
    import mlflow.pyfunc
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(max(1, batch_size)))
    string, double = T.StringType(), T.DoubleType()

    @F.pandas_udf(T.StructType([T.StructField("formula", string), T.StructField("n_sites", T.LongType()), T.StructField("parse_error", string)]))
    def describe_udf(structures: pd.Series) -> pd.DataFrame:
        return describe(structures)

    # Only the columns the model says it returns: Spark fails on a missing one (a router logged before
    # `relaxation` existed has none); those it lacks come back empty, as in score_pandas.
    signature = mlflow.models.get_model_info(model_uri).signature
    returned = set(signature.outputs.input_names()) if signature is not None and signature.outputs is not None else None
    columns = [c for c in (*PREDICTION_COLUMNS, "error") if returned is None or c in returned]
    result_type = T.StructType([T.StructField(c, double if c in PREDICTION_COLUMNS[:3] else string) for c in columns])
    predict_udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local", params={"on_error": "row"})
    df = df.repartition(partitions or spark.sparkContext.defaultParallelism).withColumn("row", F.monotonically_increasing_id())
    df = df.withColumn("described", describe_udf("structure")).cache()  # read twice below, parsed once
    parsed = df.where(F.col("described.parse_error").isNull())
    scored = parsed.withColumn("p", predict_udf(F.struct("structure", "working_ion", "structure_charged"))).select("row", "p.*")
    described = df.select("row", "id", "source", "working_ion", "described.*").toPandas().set_index("row").sort_index()
    predictions = scored.toPandas().set_index("row").reindex(index=described.index, columns=[*PREDICTION_COLUMNS, "error"])
    df.unpersist()
    return described.reset_index(drop=True), predictions.reset_index(drop=True)


def load_model(uri: str, ions, default_uri: str, fallback_uri_of):
    """(uri, pyfunc) for the screen. The default router falls back to the ion's own champion when the
    router is not registered or does not cover the ion (one ion only); an explicit model is used as given."""
    import mlflow

    from voltmodels import tracking

    ions = sorted(set(ions))
    candidates = [uri] + ([fallback_uri_of(ions[0])] if uri == default_uri and len(ions) == 1 else [])
    reasons = []
    for candidate in candidates:
        try:
            tracking.resolve_model_uri(candidate)
        except VoltmodelsError as exc:
            reasons.append(str(exc))
            continue
        model = mlflow.pyfunc.load_model(candidate)
        covered = _supported_ions(model)
        missing = [ion for ion in ions if covered is not None and ion not in covered]
        if missing:
            reasons.append(f"{candidate} does not cover {', '.join(missing)} (it covers {', '.join(sorted(covered))}).")
            continue
        return candidate, model
    raise VoltmodelsError(" ".join(reasons))


def _supported_ions(model) -> list[str] | None:
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # not a custom pyfunc: cannot tell, let predict decide
        return None
    ions = getattr(python_model, "supported_ions", None)
    if ions is None and getattr(python_model, "ion", None):
        ions = [python_model.ion]
    return list(ions) if ions is not None else None


def screen(input_path, ion: str | None, model_uri: str, default_uri: str, fallback_uri_of, engine: str = "pandas", batch_size: int = 64, master: str = "local[2]", spark=None) -> ScreenResult:
    """Read, score and rank; `spark` reuses a session (else one is made for `master`)."""
    if engine not in ENGINES:
        raise VoltmodelsError(f"unknown engine {engine!r}; use pandas or spark")
    started = time.perf_counter()
    failed: list[dict] = []
    if engine == "spark":
        spark = spark or spark_session(master)
        df = spark_table(spark, input_path, ion)
        if df is None:  # files, mappings, tables without ids: read here, then distributed
            table, failed = read_inputs(input_path)
            df = spark.createDataFrame(model_inputs(with_ion(table, ion)).assign(id=table["id"].to_numpy(), source=table["source"].to_numpy()))
        ions = [r[0] for r in df.select("working_ion").distinct().collect()]
    else:
        table, failed = read_inputs(input_path)
        table = with_ion(table, ion)
        ions = table["working_ion"].unique()
    if any(i is None for i in ions):
        raise VoltmodelsError("the input has rows without a working_ion and no --ion was given")
    load_started = time.perf_counter()
    used_uri, model = load_model(model_uri, ions, default_uri, fallback_uri_of)
    load_seconds = time.perf_counter() - load_started
    if engine == "pandas":
        described, predictions = score_pandas(model, table, batch_size)
    else:
        described, predictions = score_spark(spark, used_uri, df, batch_size)
    ranked, failures = split_results(described, predictions, failed)
    return ScreenResult(ranked, failures, used_uri, engine, time.perf_counter() - started - load_seconds)
