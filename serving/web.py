"""The web tool: a small page beside `mlflow models serve` that calls the model's REST endpoint.

    mlflow models serve -m models:/voltage-predictor@champion --env-manager local -h 127.0.0.1 -p 5001 &
    python -m serving.web --endpoint http://127.0.0.1:5001 --port 5002

The page (serving/templates/web.html, serving/static/web.{js,css}; no external assets) predicts one
structure (voltage, 90 % interval, the member that answered, per-atom local voltages and an SVG view of
the cell) or screens a CSV in chunks. The browser talks to this app only:

- `POST /api/predict`: the request body is forwarded to `{endpoint}/invocations`; status and body come
  back as the endpoint gave them (502 with a one-sentence message when it does not answer);
- `POST /api/cell` with `{"structure": text}`: the cell's lattice and sites, parsed with
  `voltmodels.graphs.convert.parse_structure`, for drawing (400 with one sentence when it is no
  structure, larger than 1 MB or more than 500 sites).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import requests
from flask import Flask, Response, jsonify, render_template, request

from voltmodels.config import SUPPORTED_IONS, VoltmodelsError
from serving.inputs import parse_structure_bounded

HERE = Path(__file__).resolve().parent
#: The largest request body the proxy forwards (a chunk of CSV rows is far smaller).
MAX_BODY_BYTES = 25 * 1024 * 1024
#: Seconds the proxy waits for the endpoint: potential members relax structures (seconds per row).
PROXY_TIMEOUT_S = 600


def _message(text: str, status: int = 400) -> Response:
    response = jsonify({"message": text})
    response.status_code = status
    return response


def cell_sites(text: str) -> dict:
    """Lattice and sites of a structure text for drawing; VoltmodelsError (one sentence) when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise VoltmodelsError("the structure is empty")
    # The served models' own limits (serving/limits.py), checked on the text before parsing.
    structure = parse_structure_bounded(text)
    sites = []
    for i, site in enumerate(structure):
        element = site.specie.symbol if site.is_ordered else site.species.elements[0].symbol
        radius = getattr(site.species.elements[0], "atomic_radius", None)
        sites.append(
            {
                "site": i,
                "element": element,
                "label": site.species_string,
                "frac": [round(float(x), 6) for x in site.frac_coords],
                "cart": [round(float(x), 6) for x in site.coords],
                "radius": float(radius) if radius else 1.0,
            }
        )
    return {"formula": structure.composition.reduced_formula, "lattice": structure.lattice.matrix.round(6).tolist(), "sites": sites}


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def browser_json(content: bytes) -> bytes:
    """The endpoint's body, with NaN / Infinity (Python's JSON, e.g. a failed row's voltage) as null:
    browsers' JSON.parse refuses them. Any other body is passed through as it is."""
    if b"NaN" not in content and b"Infinity" not in content:
        return content
    try:
        return json.dumps(_finite(json.loads(content))).encode()
    except ValueError:
        return content


def create_app(endpoint_url: str) -> Flask:
    endpoint = endpoint_url.rstrip("/")
    app = Flask(__name__, static_folder=str(HERE / "static"), template_folder=str(HERE / "templates"))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    session = requests.Session()

    @app.get("/")
    def index():
        return render_template("web.html", endpoint=endpoint, ions=SUPPORTED_IONS)

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/api/predict")
    def predict():
        try:
            upstream = session.post(
                f"{endpoint}/invocations", data=request.get_data(), headers={"Content-Type": "application/json"}, timeout=PROXY_TIMEOUT_S
            )
        except requests.Timeout:
            return _message(f"The model endpoint {endpoint} did not answer within {PROXY_TIMEOUT_S} s.", 504)
        except requests.RequestException as exc:
            return _message(f"The model endpoint {endpoint} could not be reached ({type(exc).__name__}); is `mlflow models serve` running?", 502)
        return Response(browser_json(upstream.content), status=upstream.status_code, content_type=upstream.headers.get("Content-Type", "application/json"))

    @app.post("/api/cell")
    def cell():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "structure" not in body:
            return _message('Send JSON {"structure": "<CIF, POSCAR or structure JSON text>"}.')
        try:
            return jsonify(cell_sites(body["structure"]))
        except VoltmodelsError as exc:
            return _message(f"{str(exc)[:1].upper()}{str(exc)[1:]}.")

    @app.errorhandler(413)
    def too_large(_):
        return _message(f"The request is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB; send fewer rows at a time.", 413)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:5001", help="the `mlflow models serve` URL (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5002, help="port to listen on (default %(default)s)")
    args = parser.parse_args(argv)
    app = create_app(args.endpoint)
    print(f"voltmodels web tool on http://{args.host}:{args.port}/ -> {args.endpoint}/invocations", flush=True)
    app.run(host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False)


if __name__ == "__main__":
    main()
