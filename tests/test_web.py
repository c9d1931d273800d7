"""The web tool (serving/web.py) in headless Chromium, beside a real `mlflow models serve` of the router.

Both servers are real subprocesses: `mlflow models serve -m models:/voltage-predictor@champion` (the
session's router, conftest `router_champion`) and `python -m serving.web --endpoint ...`. Checked: a
pasted Li CIF shows the voltage, its interval, the model that answered, a local-voltage table and an
SVG with one circle per site; a broken CIF shows the endpoint's 400 message as one sentence; a CSV of
5 good rows and 1 bad row is screened in chunks (progress per chunk up to 100 %), ranked, with the bad
row and its reason listed, and downloads as CSV.

Screenshots (web_single.png, web_error.png, web_batch.png) go to $VOLTMODELS_TEST_SCREENSHOTS, or to a
temporary folder. Chromium and chromedriver: $VOLTMODELS_TEST_CHROMIUM / $VOLTMODELS_TEST_CHROMEDRIVER
(scripts/services.sh sets them), else `chromium` / `chromedriver` on PATH; skipped without a driver.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from serving.processes import ServerError, ServerProcess, free_port
from tests.conftest import REPO

CHROMEDRIVER = os.environ.get("VOLTMODELS_TEST_CHROMEDRIVER") or shutil.which("chromedriver")

pytestmark = pytest.mark.integration
# A marker, not a fixture: the session's model fixtures would otherwise train before the skip.
needs_browser = pytest.mark.skipif(not CHROMEDRIVER, reason="headless browser not configured: VOLTMODELS_TEST_CHROMEDRIVER is unset and no chromedriver on PATH")

CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1400",
]
WAIT_S = 60
BROKEN_CIF = "data_broken\n_cell_length_a 3\nloop_\n_atom_site_label\nnot a cif"


@pytest.fixture(scope="module")
def li_structures(li_snapshot_structures) -> list[tuple[str, str, int]]:
    """(material id, CIF, sites) of 5 real Li-containing snapshot structures with 10-40 sites."""
    return li_snapshot_structures


def _start(process: ServerProcess):
    try:
        return process.start()
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def endpoint(router_champion, tmp_path_factory):
    """`mlflow models serve` of the router, from a temp dir (the model carries its own code)."""
    cwd = tmp_path_factory.mktemp("web_serve")
    env = {**os.environ, "VOLTMODELS_TORCH_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("PYTHONPATH", None)
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", router_champion, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    process = ServerProcess(cmd, port, cwd, env, cwd / "server.log")
    try:
        yield _start(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def web(endpoint, tmp_path_factory):
    """`python -m serving.web --endpoint <endpoint> --port N`, ready when /health answers."""
    cwd = tmp_path_factory.mktemp("web_app")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    port = free_port()
    cmd = [sys.executable, "-m", "serving.web", "--endpoint", endpoint, "--port", str(port)]
    process = ServerProcess(cmd, port, cwd, env, cwd / "web.log", ready_path="/health")
    try:
        yield _start(process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("VOLTMODELS_TEST_SCREENSHOTS") or tempfile.mkdtemp(prefix="voltmodels-web-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web_downloads")


@pytest.fixture(scope="module")
def driver(web, downloads):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = os.environ.get("VOLTMODELS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    for path in (CHROMEDRIVER, chromium):
        assert os.access(path, os.X_OK), f"{path} is not an executable (install chromium and chromium-driver: scripts/services.sh)"
    profile = tempfile.mkdtemp(prefix="voltmodels-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    d.set_page_load_timeout(WAIT_S)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str, shots: Path | None = None, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        if shots:
            driver.save_screenshot(str(shots / "web_FAILED.png"))
        body = driver.execute_script("return document.body.innerText")
        pytest.fail(f"after {timeout:.0f} s: {what}; the page shows:\n{body[:3000]}")


def shot(driver, shots: Path, name: str) -> Path:
    time.sleep(0.3)
    path = shots / name
    driver.save_screenshot(str(path))
    assert path.is_file() and path.stat().st_size > 1000, f"{path} missing or empty"
    return path


def submit_structure(driver, web: str, text: str, ion: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(web + "/")
    box = driver.find_element(By.ID, "structure")
    driver.execute_script("arguments[0].value = arguments[1];", box, text)  # a paste, without typing 3 kB
    Select(driver.find_element(By.ID, "ion")).select_by_value(ion)
    driver.find_element(By.ID, "predict").click()


# --------------------------------------------------------------------------------------------------
# The Flask app alone (no endpoint, no browser)


@pytest.fixture
def client():
    from serving.web import create_app

    return create_app(f"http://127.0.0.1:{free_port()}").test_client()  # nothing listens there


def test_cell_route_returns_sites_and_refuses_bad_text(client):
    from pymatgen.core import Lattice, Structure

    rocksalt = Structure(Lattice.cubic(4.2), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for text in (rocksalt.to(fmt="cif"), rocksalt.to(fmt="poscar"), rocksalt.to_json()):
        answer = client.post("/api/cell", json={"structure": text})
        assert answer.status_code == 200, answer.get_json()
        cell = answer.get_json()
        assert [s["element"] for s in cell["sites"]] == ["Li", "O"] and cell["lattice"][0][0] == pytest.approx(4.2)
        assert cell["sites"][1]["frac"] == pytest.approx([0.5, 0.5, 0.5]) and cell["sites"][1]["cart"] == pytest.approx([2.1, 2.1, 2.1])
    huge = rocksalt * (7, 7, 6)  # 588 sites
    cases = {
        "garbage": ("not a structure", "POSCAR"),
        "empty": ("  ", "empty"),
        "huge": (huge.to_json(), "588 sites, above the limit of 500"),
        "too_long": ("x" * 1_000_001, "above the limit of 1,000,000"),
    }
    for case, (text, fragment) in cases.items():
        answer = client.post("/api/cell", json={"structure": text})
        assert answer.status_code == 400, case
        message = answer.get_json()["message"]
        assert fragment in message and message.endswith(".") and "\n" not in message, (case, message)
    assert client.post("/api/cell", data="nope").status_code == 400


def test_proxy_without_endpoint_is_a_502_sentence(client):
    answer = client.post("/api/predict", json={"dataframe_split": {"columns": ["structure", "working_ion"], "data": [["x", "Li"]]}})
    assert answer.status_code == 502
    assert "could not be reached" in answer.get_json()["message"]


def test_page_has_no_external_assets(client):
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for ion in ("Li", "Mg", "Ca", "Zn", "Al", "Na", "K", "Y", "Rb", "Cs"):
        assert f'<option value="{ion}">' in page
    assert 'id="material-id"' in page and "disabled" not in page.split('id="material-id"', 1)[1].split(">", 1)[0]
    for asset in ("/static/web.js", "/static/web.css"):
        assert client.get(asset).status_code == 200


# --------------------------------------------------------------------------------------------------
# In the browser, beside a real endpoint


@needs_browser
def test_single_cif_shows_voltage_interval_model_and_local_voltages(driver, web, endpoint, li_structures, shots):
    import requests
    from selenium.webdriver.common.by import By

    _, cif, n_sites = li_structures[0]
    submit_structure(driver, web, cif, "Li")
    wait_for(driver, lambda d: d.find_element(By.ID, "single-error").is_displayed() or d.find_elements(By.CSS_SELECTOR, "#cell-view circle"), "no result shown", shots)
    assert not driver.find_element(By.ID, "single-error").is_displayed(), driver.find_element(By.ID, "single-error").text

    voltage = float(driver.find_element(By.ID, "voltage").text)
    lower, upper = (float(x) for x in re.findall(r"-?\d+\.\d+", driver.find_element(By.ID, "interval").text))
    assert lower < voltage < upper
    direct = requests.post(f"{endpoint}/invocations", json={"dataframe_split": {"columns": ["structure", "working_ion"], "data": [[cif, "Li"]]}}, timeout=60)
    row = direct.json()["predictions"][0]
    assert voltage == pytest.approx(row["voltage"], abs=1e-3) and lower == pytest.approx(row["voltage_lower"], abs=1e-3)
    assert "voltage-cgcnn-Li" in driver.find_element(By.ID, "model").text
    assert f"v{row['model_version']}" in driver.find_element(By.ID, "model").text
    assert "mode: discharged" in driver.find_element(By.ID, "model-extra").text

    rows = driver.find_elements(By.CSS_SELECTOR, "#local-table tbody tr")
    assert len(rows) == n_sites
    values = [float(r.find_elements(By.TAG_NAME, "td")[3].text) for r in rows]
    assert all(math.isfinite(v) for v in values)
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [str(i) for i in range(n_sites)]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#cell-view svg circle")) == n_sites
    assert "local voltage (V)" in driver.find_element(By.CSS_SELECTOR, "#cell-view svg .legend").text
    shot(driver, shots, "web_single.png")


@needs_browser
def test_material_id_is_answered_from_the_models_index(driver, web, endpoint, shots):
    """An MP id typed instead of a structure: the endpoint resolves it from the structures bundled with the router."""
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from voltmodels.data.dataset import load_dataset

    dataset = load_dataset("latest")
    mid = next(m for m in dataset.rows("Li")["id_discharge"] if len(dataset.compact_structures[m]["species"]) <= 30)
    driver.get(web + "/")
    driver.find_element(By.ID, "material-id").send_keys(mid)
    Select(driver.find_element(By.ID, "ion")).select_by_value("Li")
    driver.find_element(By.ID, "predict").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "single-error").is_displayed() or d.find_element(By.ID, "single-result").is_displayed(), "no result shown", shots)
    assert not driver.find_element(By.ID, "single-error").is_displayed(), driver.find_element(By.ID, "single-error").text
    direct = requests.post(f"{endpoint}/invocations", json={"dataframe_split": {"columns": ["material_id", "working_ion"], "data": [[mid, "Li"]]}}, timeout=60)
    assert float(driver.find_element(By.ID, "voltage").text) == pytest.approx(direct.json()["predictions"][0]["voltage"], abs=1e-3)
    assert len(driver.find_elements(By.CSS_SELECTOR, "#local-table tbody tr")) == len(dataset.compact_structures[mid]["species"])
    assert "looked up by the endpoint" in driver.find_element(By.ID, "cell-note").text
    shot(driver, shots, "web_material_id.png")


@needs_browser
def test_member_without_local_voltages_draws_the_cell_by_element(driver, web, li_structures):
    """A potential member's answer (no `local_voltages`): the page says so and colors the cell by element."""
    from selenium.webdriver.common.by import By

    _, cif, n_sites = li_structures[1]
    driver.get(web + "/")
    driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
           postJSON('/api/cell', {structure: arguments[0]}).then((c) => {
             renderOne({voltage: 3.1, voltage_lower: 2.6, voltage_upper: 3.6, model_name: 'voltage-uip-Li', model_version: '2',
                        working_ion: 'Li', mode: 'relaxed', family: 'sevenn', potential: '7net-0', local_voltages: null}, c);
             done();
           });""",
        cif,
    )
    note = driver.find_element(By.ID, "local-note").text
    assert "not available for this model (voltage-uip-Li v2)" in note and "colored by element" in note
    assert "family: sevenn" in driver.find_element(By.ID, "model-extra").text
    assert not driver.find_element(By.ID, "local-table").is_displayed()
    circles = driver.find_elements(By.CSS_SELECTOR, "#cell-view svg circle")
    assert len(circles) == n_sites
    legend = driver.find_element(By.CSS_SELECTOR, "#cell-view svg .legend").text
    assert "Li" in legend and "O" in legend
    li_fill = {c.get_attribute("fill") for c in circles if c.get_attribute("data-element") == "Li"}
    assert li_fill == {"#cc80ff"}


@needs_browser
def test_broken_structure_shows_the_400_message(driver, web, shots):
    from selenium.webdriver.common.by import By

    submit_structure(driver, web, BROKEN_CIF, "Li")
    error = wait_for(driver, lambda d: d.find_element(By.ID, "single-error").is_displayed() and d.find_element(By.ID, "single-error"), "no error shown", shots)
    message = error.text
    assert message.startswith("Invalid input: row 0: ") and "CIF" in message, message
    assert "\n" not in message and "Failed to predict data" not in message, message  # one sentence, not the echo of the input
    assert not driver.find_element(By.ID, "single-result").is_displayed()
    shot(driver, shots, "web_error.png")


@needs_browser
def test_csv_screen_ranks_good_rows_and_lists_the_bad_one(driver, web, li_structures, shots, downloads, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "candidates.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "structure", "working_ion"])
        for mid, cif, _ in li_structures[:3]:
            writer.writerow([mid, cif, "Li"])
        writer.writerow(["bad-1", "not a structure", "Li"])
        for mid, cif, _ in li_structures[3:5]:
            writer.writerow([mid, cif, "Li"])

    driver.get(web + "/?chunk=2")  # 3 requests of 2 rows: the bar moves per chunk
    driver.find_element(By.CSS_SELECTOR, ".tab[data-tab='batch']").click()
    driver.execute_script(
        """window.progressSeen = [];
           new MutationObserver(() => window.progressSeen.push(document.getElementById('progress-text').textContent))
             .observe(document.getElementById('progress-text'), {childList: true, characterData: true, subtree: true});"""
    )
    driver.find_element(By.ID, "csv-file").send_keys(str(path))
    driver.find_element(By.ID, "screen").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "batch-result").is_displayed() or d.find_element(By.ID, "batch-error").is_displayed(), "no screening result", shots)
    assert not driver.find_element(By.ID, "batch-error").is_displayed(), driver.find_element(By.ID, "batch-error").text

    assert driver.find_element(By.ID, "progress").get_attribute("value") == "100"
    seen = driver.execute_script("return window.progressSeen")
    assert [s for s in seen if "rows" in s][-3:] == ["2 / 6 rows (33 %)", "4 / 6 rows (67 %)", "6 / 6 rows (100 %)"], seen

    ranked = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#ranked-table tbody tr")]
    assert len(ranked) == 5
    assert [r[0] for r in ranked] == ["1", "2", "3", "4", "5"]
    assert {r[1] for r in ranked} == {mid for mid, _, _ in li_structures}
    voltages = [float(r[3]) for r in ranked]
    assert voltages == sorted(voltages, reverse=True)
    assert all("voltage-cgcnn-Li" in r[5] for r in ranked)
    failed = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#failed-table tbody tr")]
    assert len(failed) == 1
    row, mid, ion, reason = failed[0]
    assert (row, mid, ion) == ("4", "bad-1", "Li") and "CIF" in reason, failed
    _ = driver.find_element(By.ID, "batch-result").location_once_scrolled_into_view  # scrolls it into the shot
    shot(driver, shots, "web_batch.png")

    driver.find_element(By.ID, "download").click()
    target = downloads / "voltmodels_screen.csv"
    wait_for(driver, lambda d: target.is_file() and target.stat().st_size > 0, "no CSV downloaded", shots, timeout=20)
    with open(target, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["id"] for r in table[:5]] == [r[1] for r in ranked] and table[5]["id"] == "bad-1"
    assert [float(r["voltage"]) for r in table[:5]] == pytest.approx(voltages, abs=1e-3)
    assert table[5]["rank"] == "" and "CIF" in table[5]["error"] and all(r["error"] == "" for r in table[:5])
