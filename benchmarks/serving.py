"""Latency and throughput of the `voltage-predictor` router behind a real `mlflow models serve`.

Usage: python benchmarks/serving.py [--model-uri models:/voltage-predictor@champion] [--workers 1]
       [--threads 1] [--n-single 200] [--n-batches 10] [--n-concurrent 1000] [--clients 8] [--url URL]

Starts `mlflow models serve -m <model> --env-manager local -h 127.0.0.1` from a temporary directory
(unless --url points at a running server), warms it up, then measures over HTTP with the scoring
protocol ({"dataframe_split": ...} to /invocations):

* single: one ~30-atom Li structure as CIF, --n-single sequential requests: p50 / p90 / p99;
* single (JSON): the same structure as pymatgen Structure JSON (no CIF parsing on the server);
* batch: --n-batches sequential requests of 100 distinct Li structures (CIF): structures per second;
* ping: GET /ping, the bare HTTP round trip through uvicorn;
* concurrent: --n-concurrent single-structure requests from --clients threads: req/s, p50/p99, errors;

and, in process, where a single request's time goes (CIF parsing, graph, model, MLflow/HTTP overhead).
With --potential-modes N (a router whose member for --potential-ion is a universal-potential family):
one-row requests for N distinct test electrodes in mode (a) (with `structure_charged`: two static
energies) and in mode (b) (without: two relaxations), on a server with an empty potential cache, and
the same requests again (answered from the cache).
Ends with the test-split interval coverage per ion (benchmarks/coverage.py).

Serve with one worker (the default). With `-w 2` or more, uvicorn binds the socket itself with
`socket.socket(family)` (proto 0), so asyncio never sets TCP_NODELAY on the accepted connections and every
keep-alive request waits ~40 ms for Nagle + delayed ACK (measured here: /ping 1.4 ms with 1 worker, ~49 ms
with 2; single-structure p50 68 ms instead of 20-27 ms). On 2 shared cores one worker is also the faster
choice for throughput; scale out with several single-worker servers behind a proxy instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voltmodels.machine import machine_line  # noqa: E402
from voltmodels.tracking import results_run  # noqa: E402
from serving.processes import ServerProcess, free_port  # noqa: E402
from voltmodels.config import default_tracking_uri, resolve_snapshot  # noqa: E402

CIF_FILE = "mp_electrode_structures_cif.json.gz"


def pick_structures(snapshot: Path, n_batch: int = 100, target_sites: int = 30):
    """(one Li structure with ~target_sites sites as CIF, n_batch distinct Li structures as CIF)."""
    from pymatgen.core import Structure

    with gzip.open(snapshot / CIF_FILE, "rt") as fh:
        cifs = json.load(fh)
    single, batch = None, []
    for mid in sorted(cifs):
        structure = Structure.from_str(cifs[mid], fmt="cif")
        if "Li" not in structure.composition:
            continue
        if len(batch) < n_batch and len(structure) <= 200:
            batch.append((mid, cifs[mid], len(structure)))
        if single is None or abs(len(structure) - target_sites) < abs(single[2] - target_sites):
            single = (mid, cifs[mid], len(structure))
        if len(batch) >= n_batch and single[2] == target_sites:
            break
    return single, batch


def start_server(model_uri: str, workers: int, threads: int, tracking_uri: str, workdir: Path) -> ServerProcess:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "VOLTMODELS_TORCH_THREADS": str(threads), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    # -t 600 as the docs serve it: a mode (b) row relaxes two structures, past MLflow's default 60 s.
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "-t", "600"]
    return ServerProcess(cmd, port, workdir, env, workdir / "server.log")


def body(rows: list[tuple[str, str]], columns=("structure", "working_ion")) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": [list(r) for r in rows]}}).encode()


def indexed_id(target_sites: int = 30) -> str | None:
    """A Li discharged material of the latest curated dataset (what a router's material_id index holds)."""
    try:
        from voltmodels.data.dataset import load_dataset

        dataset = load_dataset("latest")
    except Exception:
        return None
    rows = dataset.rows("Li")
    return min(rows["id_discharge"], key=lambda m: abs(len(dataset.compact_structures[m]["species"]) - target_sites))


def p1_supercell_cif(n: int = 32) -> str:
    """A P1 CIF of n^3 atoms (32,768 for n = 32): the request the site limit must refuse at once."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(Structure(Lattice.cubic(3.0), ["Li"], [[0, 0, 0]]) * (n, n, n)))


HEADERS = {"Content-Type": "application/json"}


def timed_posts(session, url: str, payload: bytes, n: int, expected: int = 200) -> tuple[list[float], int]:
    """Latencies of n sequential posts, and how many were not answered with `expected`."""
    times, errors = [], 0
    for _ in range(n):
        t = time.perf_counter()
        r = session.post(f"{url}/invocations", data=payload, headers=HEADERS, timeout=120)
        times.append(time.perf_counter() - t)
        errors += r.status_code != expected
    return times, errors


def concurrent_posts(url: str, payload: bytes, n: int, clients: int) -> tuple[list[float], int, float]:
    import requests

    per_client = [n // clients + (i < n % clients) for i in range(clients)]

    def client(count: int):
        times, errors = [], 0
        with requests.Session() as s:
            for _ in range(count):
                t = time.perf_counter()
                try:
                    ok = s.post(f"{url}/invocations", data=payload, headers=HEADERS, timeout=120).status_code == 200
                except requests.RequestException:
                    ok = False
                times.append(time.perf_counter() - t)
                errors += not ok
        return times, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, per_client))
    wall = time.perf_counter() - started
    return [t for ts, _ in results for t in ts], sum(e for _, e in results), wall


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000.0, q))


def breakdown(model_uri: str, cif: str, n: int = 100) -> list[tuple[str, float]]:
    """In-process medians (ms) of the request path's stages for one structure."""
    import mlflow
    import pandas as pd

    from serving.cgcnn_model import graphs_for_rows
    from serving.inputs import parse_rows

    model = mlflow.pyfunc.load_model(model_uri)
    router = model.unwrap_python_model().router
    frame = pd.DataFrame({"structure": [cif], "working_ion": ["Li"]})
    predictor = router.predictors["Li"]
    # Not a public API, but what is timed here: the handler `mlflow models serve` runs per request.
    from mlflow.pyfunc.scoring_server import invocations

    payload = body([(cif, "Li")])
    schema = model.metadata.get_input_schema()
    stages = {
        "parse_rows (CIF -> Structure)": [],
        "crystal graph": [],
        "CGCNN forward + output table": [],
        "pyfunc predict (the above + schema check)": [],
        "scoring_server.invocations (JSON -> DataFrame -> predict -> JSON)": [],
    }
    for _ in range(n):
        t0 = time.perf_counter()
        parsed = parse_rows(frame, router.supported_ions)
        t1 = time.perf_counter()
        graphs = graphs_for_rows([parsed[0][0]], predictor.settings)
        t2 = time.perf_counter()
        predictor.predict_graphs(graphs, [parsed[0][0]])
        t3 = time.perf_counter()
        model.predict(frame)
        t4 = time.perf_counter()
        assert invocations(payload, "application/json", model, schema).status == 200
        t5 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stages[key].append(value * 1000)
    return [(k, statistics.median(v)) for k, v in stages.items()]


def potential_modes(model_uri: str, tracking_uri: str, snapshot: Path, ion: str, n: int, threads: int) -> list[tuple]:
    """Rows of the table for one-row requests in modes (a) and (b), cold (empty cache) and cached."""
    import requests

    from voltmodels.data.dataset import load_dataset

    dataset = load_dataset("latest")
    rows = dataset.split(ion, "random", 0)
    rows = rows[(rows["split"] == "test") & rows["id_charge"].isin(list(dataset.compact_structures))].head(n)
    pairs = [(json.dumps(dataset.compact_structures[d]), json.dumps(dataset.compact_structures[c])) for d, c in zip(rows["id_discharge"], rows["id_charge"])]
    out = []
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["VOLTMODELS_CACHE"] = str(Path(workdir) / "cache")  # the server starts with no energies
        server = start_server(model_uri, 1, threads, tracking_uri, Path(workdir))
        try:
            started = time.perf_counter()
            url = server.start(timeout=300)
            startup = time.perf_counter() - started
            with requests.Session() as s:
                for mode, columns in (("a", ["structure", "working_ion", "structure_charged"]), ("b", ["structure", "working_ion"])):
                    payloads = [json.dumps({"dataframe_split": {"columns": columns, "data": [[d, ion, c][: len(columns)]]}}).encode() for d, c in pairs]
                    for label in ("cold", "cached"):
                        times, failed = [], []
                        for payload in payloads:
                            t = time.perf_counter()
                            r = s.post(f"{url}/invocations", data=payload, headers=HEADERS, timeout=600)
                            times.append(time.perf_counter() - t)
                            failed.append(r.status_code != 200 or r.json()["predictions"][0].get("mode") != mode)
                        if not out:  # the server's very first request: what its start-up did not load, it pays here
                            out.append(("server start-up to first /ping", "1", f"{startup * 1000:.0f}", "", "", "", 0))
                            out.append((f"{ion} mode (a), the first request after start-up, cold", "1", f"{times[0] * 1000:.0f}", "", "", "", int(failed[0])))
                        what = "both end members, static energies" if mode == "a" else "discharged only, two relaxations"
                        out.append((f"{ion} mode ({mode}): {what}, {label}", f"{len(times)} req", f"{pct(times, 50):.0f}", f"{pct(times, 90):.0f}", f"{pct(times, 99):.0f}", f"{len(times) / sum(times):.2f} req/s", sum(failed)))
        finally:
            server.stop()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default="models:/voltage-predictor@champion")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or the project's mlflow.db")
    parser.add_argument("--snapshot", default=None, help="snapshot folder (default: $VOLTMODELS_SNAPSHOT or ../shared/data)")
    parser.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (mlflow models serve -w)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (VOLTMODELS_TORCH_THREADS)")
    parser.add_argument("--n-single", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-batches", type=int, default=10)
    parser.add_argument("--n-concurrent", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process stage timings")
    parser.add_argument("--potential-modes", type=int, default=0, help="distinct electrodes for the mode (a)/(b) table (0: skip)")
    parser.add_argument("--potential-ion", default="Mg")
    parser.add_argument("--only-potential-modes", action="store_true", help="print only the mode (a)/(b) table")
    args = parser.parse_args(argv)

    import mlflow
    import requests

    tracking_uri = args.tracking_uri or default_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    snapshot = resolve_snapshot(args.snapshot) or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    (single_id, single_cif, single_sites), batch = pick_structures(snapshot, args.batch_size)
    from pymatgen.core import Structure

    single_json = Structure.from_str(single_cif, fmt="cif").to_json()
    print(machine_line(("torch", "mlflow")))
    print(f"model: {args.model_uri} ({tracking_uri}); workers {args.workers}, torch threads {args.threads}")
    if args.potential_modes:
        print("\n| scenario | requests | p50 ms | p90 ms | p99 ms | throughput | errors |\n|---|---|---|---|---|---|---|")
        for r in potential_modes(args.model_uri, tracking_uri, snapshot, args.potential_ion, args.potential_modes, args.threads):
            print("| " + " | ".join(str(x) for x in r) + " |")
        if args.only_potential_modes:
            return
    print(f"single structure: {single_id} ({single_sites} sites); batch: {len(batch)} Li structures, {np.mean([b[2] for b in batch]):.1f} sites on average")

    server = None
    with tempfile.TemporaryDirectory() as workdir:
        if args.url:
            url = args.url.rstrip("/")
            startup = None
        else:
            server = start_server(args.model_uri, args.workers, args.threads, tracking_uri, Path(workdir))
            started = time.perf_counter()
        try:
            if server is not None:
                url = server.start(timeout=300)
                startup = time.perf_counter() - started
            one = body([(single_cif, "Li")])
            one_json = body([(single_json, "Li")])
            material = indexed_id()
            one_id = body([(material, "Li")], columns=("material_id", "working_ion")) if material else None
            huge = body([(p1_supercell_cif(), "Li")])
            many = body([(cif, "Li") for _, cif, _ in batch])
            with requests.Session() as s:
                timed_posts(s, url, one, 20)  # warm-up: lazy imports, allocator, caches
                timed_posts(s, url, many, 1)
                single, single_err = timed_posts(s, url, one, args.n_single)
                single_j, single_j_err = timed_posts(s, url, one_json, max(20, args.n_single // 2))
                by_id, by_id_err = timed_posts(s, url, one_id, max(20, args.n_single // 2)) if one_id else ([float("nan")], 0)
                refused, refused_err = timed_posts(s, url, huge, 10, expected=400)
                batches, batch_err = timed_posts(s, url, many, args.n_batches)
                pings = []
                for _ in range(100):  # the bare HTTP round trip through uvicorn
                    t = time.perf_counter()
                    s.get(f"{url}/ping", timeout=10)
                    pings.append(time.perf_counter() - t)
            conc, conc_err, conc_wall = concurrent_posts(url, one, args.n_concurrent, args.clients)
        finally:
            if server is not None:
                server.stop()
                server_log = server.log_tail(10**7)
                if "Traceback" in server_log:
                    print("server log has tracebacks:\n" + server_log[-3000:])

    rows = [
        ("single CIF, sequential", f"{args.n_single} req", f"{pct(single, 50):.1f}", f"{pct(single, 90):.1f}", f"{pct(single, 99):.1f}", f"{len(single) / sum(single):.1f} req/s", single_err),
        ("single JSON, sequential", f"{len(single_j)} req", f"{pct(single_j, 50):.1f}", f"{pct(single_j, 90):.1f}", f"{pct(single_j, 99):.1f}", f"{len(single_j) / sum(single_j):.1f} req/s", single_j_err),
        (f"single material_id ({material}), sequential", f"{len(by_id)} req", f"{pct(by_id, 50):.1f}", f"{pct(by_id, 90):.1f}", f"{pct(by_id, 99):.1f}", f"{len(by_id) / sum(by_id):.1f} req/s", by_id_err),
        (f"32,768-atom CIF ({len(huge) / 1e6:.1f} MB), refused with 400", f"{len(refused)} req", f"{pct(refused, 50):.1f}", f"{pct(refused, 90):.1f}", f"{pct(refused, 99):.1f}", f"{len(refused) / sum(refused):.1f} req/s", refused_err),
        (f"batch of {len(batch)} CIF, sequential", f"{args.n_batches} req", f"{pct(batches, 50):.0f}", f"{pct(batches, 90):.0f}", f"{pct(batches, 99):.0f}", f"{len(batch) * len(batches) / sum(batches):.0f} structures/s", batch_err),
        ("GET /ping (HTTP round trip only)", f"{len(pings)} req", f"{pct(pings, 50):.1f}", f"{pct(pings, 90):.1f}", f"{pct(pings, 99):.1f}", f"{len(pings) / sum(pings):.1f} req/s", 0),
        (f"single CIF, {args.clients} concurrent clients", f"{len(conc)} req", f"{pct(conc, 50):.1f}", f"{pct(conc, 90):.1f}", f"{pct(conc, 99):.1f}", f"{len(conc) / conc_wall:.1f} req/s", conc_err),
    ]
    print()
    if startup is not None:
        print(f"server start-up to first /ping: {startup:.1f} s")
    print("| scenario | requests | p50 ms | p90 ms | p99 ms | throughput | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")

    if not args.no_breakdown:
        import torch

        torch.set_num_threads(args.threads)
        print(f"\nIn-process stages of one request ({single_sites}-site CIF, median of 100, torch threads {args.threads}):")
        print("| stage | ms |")
        print("|---|---|")
        stages = breakdown(args.model_uri, single_cif)
        for name, ms in stages:
            print(f"| {name} | {ms:.1f} |")
        print(f"| (server, over HTTP: single CIF request p50) | {pct(single, 50):.1f} |")

    from benchmarks.coverage import coverage_rows, format_rows

    print("\nInterval coverage on the test split (90 % nominal):")
    rows = coverage_rows()
    print(format_rows(rows) if rows else "no voltage-cgcnn-<ion>@champion registered")


if __name__ == "__main__":
    with results_run("serving"):
        main()
