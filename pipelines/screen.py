"""Entry point `screen`: predict the average voltage of many structures, ranked highest first.

Input: a Parquet / JSON-lines structure table (e.g. what `candidates` writes), a folder of CIF / POSCAR /
structure-JSON files, a JSON file {id: structure}, or one structure file (serving/screening.py).
`--engine pandas` scores in this process; `--engine spark` scores on Spark (`--master`, default
local[2]) through `mlflow.pyfunc.spark_udf` of the same model. Output: `<output>` (CSV, the top rows,
all by default), `<output stem>.parquet` (every ranked row), `<output stem>_failed.csv` (every input that
could not be read or predicted, with the stage and reason). All are logged to the run; a bad structure
never stops the screen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow

from pipelines.common import as_int, main_guard, step_run
from serving import screening
from voltmodels import registry

DEFAULT_MODEL = f"models:/{registry.ROUTER_NAME}@{registry.CHAMPION}"


def ion_champion(ion: str) -> str:
    return f"models:/{registry.cgcnn_name(ion)}@{registry.CHAMPION}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="structure table (.parquet, .jsonl), folder of structure files, JSON {id: structure}, or one file")
    p.add_argument("--ion", default="Li", help="working ion of rows without a working_ion column (default Li)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model URI (default {DEFAULT_MODEL}, else models:/voltage-cgcnn-<ion>@champion)")
    p.add_argument("--output", default="outputs/screen.csv", help="CSV of the top rows to write")
    p.add_argument("--engine", default="pandas", choices=screening.ENGINES)
    p.add_argument("--master", default="local[2]", help="Spark master URL for --engine spark")
    p.add_argument("--top", type=as_int, default=0, help="rows in the CSV (0: all)")
    p.add_argument("--batch-size", type=as_int, default=64)
    return p.parse_args(argv)


def failed_path(output: Path) -> Path:
    return output.with_name(output.stem + "_failed.csv")


def ranked_path(output: Path) -> Path:
    return output.with_suffix(".parquet")


def load_model(uri: str, ion: str):
    return screening.load_model(uri, [ion], DEFAULT_MODEL, ion_champion)


def screen(input_path, ion, model_uri=DEFAULT_MODEL, output="outputs/screen.csv", batch_size=64, engine="pandas", master="local[2]", top=0, spark=None):
    """Run the screen and write its files; returns the ScreenResult."""
    result = screening.screen(input_path, ion, model_uri, DEFAULT_MODEL, ion_champion, engine, batch_size, master, spark)
    out = Path(output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    (result.ranked.head(top) if top else result.ranked).to_csv(out, index=False, float_format="%.4f")
    result.ranked.to_parquet(ranked_path(out), index=False)
    result.failed.to_csv(failed_path(out), index=False)
    return result


@main_guard
def main(argv=None) -> str:
    args = parse_args(argv)
    params = {"input": args.input, "ion": args.ion, "model": args.model, "output": args.output, "engine": args.engine, "master": args.master if args.engine == "spark" else None, "top": args.top}
    with step_run("screen", params) as run:
        result = screen(args.input, args.ion, args.model, args.output, args.batch_size, args.engine, args.master, args.top)
        ranked, failures = result.ranked, result.failed
        mlflow.set_tag("model_uri_used", result.model_uri)
        n_inputs = len(ranked) + len(failures)
        mlflow.log_metrics({"n_inputs": n_inputs, "n_predicted": len(ranked), "n_failed": len(failures), "seconds": result.seconds, "structures_per_second": result.throughput})
        if len(failures):
            mlflow.log_table(failures.groupby(["stage", "reason"]).size().rename("rows").reset_index(), "screen/failure_reasons.json")
        out = Path(args.output).expanduser()
        for path in (out, ranked_path(out), failed_path(out)):
            mlflow.log_artifact(str(path), "screen")
        print(f"Screened {n_inputs} structures with {result.model_uri} on {args.engine} in {result.seconds:.1f} s ({result.throughput:.1f}/s): {len(ranked)} predicted, {len(failures)} failed")
        print(f"Ranked: {ranked_path(out)}; top rows: {out}; failures: {failed_path(out)}")
        if len(ranked):
            print(ranked.head(10)[["rank", "id", "formula", "working_ion", "voltage", "voltage_lower", "voltage_upper"]].to_string(index=False))
        for row in failures.head(20).itertuples():
            print(f"  failed {row.id} ({row.stage}): {row.reason}")
    return run.info.run_id


if __name__ == "__main__":
    main()
