"""The MLflow UI of a tracking server that holds the project's models, in headless Chromium (Selenium).

A `mlflow server` on the session's SQLite store serves the Li champion (conftest `li_champion`) and a
quick Mg transfer run. Checked: the registered-models page lists both models, the champion version
pages show the MAE tags, the run pages show the MAE metrics, the transfer run's method comparison
(artifact table, runs table with the methods' metric columns, compare-runs view).

Screenshots go to $VOLTMODELS_TEST_ARTIFACTS/registry-ui (default: test-artifacts/registry-ui in the
checkout), also on failure.

Needs VOLTMODELS_TEST_CHROMEDRIVER (and VOLTMODELS_TEST_CHROMIUM, default /usr/bin/chromium), set by
scripts/services.sh via scripts/test.sh; skipped without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from serving.processes import free_port
from tests.conftest import REPO, run_entry_point
from voltmodels.transfer import REGISTERED_METHODS

pytestmark = [
    pytest.mark.integration,
    # A marker, not a fixture: the session's model fixtures would otherwise train before the skip.
    pytest.mark.skipif(
        not os.environ.get("VOLTMODELS_TEST_CHROMEDRIVER"),
        reason="headless browser not configured: VOLTMODELS_TEST_CHROMEDRIVER is unset (scripts/test.sh sets it via scripts/services.sh)",
    ),
]

LI, MG = "voltage-cgcnn-Li", "voltage-cgcnn-Mg"
METHOD_METRICS = ["li_direct_test_mae_mean", "scratch_test_mae_mean", "freeze_test_mae_mean", "finetune_test_mae_mean"]
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1920,1200",
]
WAIT_S = 90


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[str, str]:
    driver = os.environ["VOLTMODELS_TEST_CHROMEDRIVER"]
    chromium = os.environ.get("VOLTMODELS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    for path in (driver, chromium):
        assert os.access(path, os.X_OK), f"{path} is not an executable (install chromium and chromium-driver: scripts/services.sh)"
    return chromium, driver


@pytest.fixture(scope="module")
def shots_dir() -> Path:
    folder = Path(os.environ.get("VOLTMODELS_TEST_ARTIFACTS") or REPO / "test-artifacts") / "registry-ui"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


# --------------------------------------------------------------------------------------------------
# Models and a server


@pytest.fixture(scope="module")
def models(browser_binaries, li_champion):
    """The Li champion, a finished Mg transfer run (reused when the session already has one), their runs."""
    from mlflow import MlflowClient

    def transfer_runs():
        return MlflowClient().search_runs(
            [e.experiment_id for e in MlflowClient().search_experiments()],
            "tags.`voltmodels.step` = 'transfer' and tags.ion = 'Mg' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
        )

    if not transfer_runs():
        run_entry_point("pipelines.transfer", "--ion", "Mg", "--profile", "quick", "--n-repeats", "1", "--split", "random", "--epochs", "2")
    client = MlflowClient()
    transfer = transfer_runs()[0]
    li = client.get_model_version_by_alias(LI, "champion")
    mg = client.get_model_version_by_alias(MG, "champion")
    return {"li_version": li, "mg_version": mg, "li_run": client.get_run(li.run_id), "transfer_run": transfer}


@pytest.fixture(scope="module")
def ui_server(models, tmp_path_factory) -> str:
    """`mlflow server` on the session's store (its runs' artifacts are local folders)."""
    import requests

    store = os.environ["MLFLOW_TRACKING_URI"]
    workdir = tmp_path_factory.mktemp("ui-server")
    port = free_port()
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180 s:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Page:
    """Headless Chromium on the server's UI; every check waits for the SPA to render."""

    def __init__(self, driver, base: str, shots: Path):
        self.driver, self.base, self.shots = driver, base, shots

    def text(self) -> str:
        return self.driver.execute_script("return document.body ? document.body.innerText : ''") or ""

    def open(self, route: str, *expected: str, shot: str | None = None, timeout: float = WAIT_S) -> str:
        """Go to `route` (e.g. '/#/models') and wait until every expected string is on the page."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(self.base + route)
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(lambda d: all(s in self.text() for s in expected))
        except TimeoutException:
            self.screenshot(f"FAILED-{shot or 'page'}")
            body = self.text()
            missing = [s for s in expected if s not in body]
            pytest.fail(f"{route}: after {timeout:.0f} s the page lacks {missing}; it shows:\n{body[:3000]}")
        time.sleep(1)  # let late widgets (charts, tables) settle before the screenshot
        if shot:
            self.screenshot(shot)
        return self.text()

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def scroll_to_text(self, text: str) -> None:
        self.driver.execute_script(
            """const t = arguments[0];
               const el = [...document.querySelectorAll('body *')].find(e => e.children.length === 0 && e.textContent.trim() === t);
               if (el) el.scrollIntoView({block: 'center'});""",
            text,
        )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def page(browser_binaries, ui_server, shots_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_binaries
    profile = tempfile.mkdtemp(prefix="voltmodels-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        p = Page(driver, ui_server, shots_dir)
        # A first visit opens the MLflow Assistant side panel (a third of the page) and a "new model
        # registry UI" promo modal over the models page: mark both as seen, as a returning user would.
        p.open("/#/models", "Registered Models")
        driver.execute_script(
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('_mlflow_model_registry_promo_modal_dismissed_v1', 'true');"
        )
        driver.refresh()
        yield p
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Tests


def test_registered_models_page_lists_the_models(page, models):
    text = page.open("/#/models", LI, MG, "champion", shot="01-registered-models")
    assert f"Version {models['li_version'].version}" in text


def test_li_champion_version_page_shows_mae_tags(page, models):
    v = models["li_version"]
    # The source-run link is filled in by a later request than the tags: wait for it as well.
    source_run = models["li_run"].info.run_name
    text = page.open(f"/#/models/{LI}/versions/{v.version}", f"Version {v.version}", "champion", "val_mae", "test_mae", source_run)
    assert v.tags["val_mae"] in text and v.tags["test_mae"] in text, "the version's MAE tag values are not shown"
    page.scroll_to_text("val_mae")
    page.screenshot("02-li-champion-version")


def test_mg_champion_version_page_shows_method_and_mae(page, models):
    v = models["mg_version"]
    text = page.open(f"/#/models/{MG}/versions/{v.version}", f"Version {v.version}", "champion", "val_mae", "test_mae", "base_model")
    assert v.tags["method"] in REGISTERED_METHODS and v.tags["method"] in text  # any registered method can win
    assert v.tags["test_mae"] in text
    page.scroll_to_text("test_mae")
    page.screenshot("03-mg-champion-version")


def test_li_run_page_shows_mae_metrics(page, models):
    run = models["li_run"]
    route = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    text = page.open(route, run.info.run_name, "Metrics", "val_mae", "test_mae", shot="04-li-run")
    shown = repr(run.data.metrics["test_mae"])[:5]  # e.g. 0.590; the UI prints the full float
    assert shown in text, f"test_mae {run.data.metrics['test_mae']} not shown"


def test_transfer_run_page_lists_every_method(page, models):
    run = models["transfer_run"]
    route = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    text = page.open(route, run.info.run_name, *METHOD_METRICS, shot="05-transfer-run")
    for name in METHOD_METRICS:
        assert repr(run.data.metrics[name])[:5] in text, f"{name} value not shown"


def test_transfer_comparison_table_artifact_lists_every_method(page, models):
    run = models["transfer_run"]
    route = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/comparison_Mg.csv"
    text = page.open(route, "comparison_Mg.csv", "mae_mean", "li_direct", "scratch", "freeze", "finetune", shot="06-transfer-comparison-artifact")
    assert "Mg" in text


def test_runs_table_shows_method_metric_columns(page, models):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run = models["transfer_run"]
    exp = run.info.experiment_id
    search = urllib.parse.quote("tags.`voltmodels.step` = 'transfer'")
    page.open(f"/#/experiments/{exp}/runs?searchFilter={search}", run.info.run_name, "Columns")
    driver = page.driver
    driver.find_element(By.XPATH, "//button[normalize-space()='Columns']").click()
    box = WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']"))
    for name in METHOD_METRICS:
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(name)
        option = WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.XPATH, f"//*[normalize-space(text())='{name}']"))
        option[-1].click()
        time.sleep(0.3)
    box.send_keys(Keys.ESCAPE)
    time.sleep(1)

    state = json.loads(driver.execute_script(f"return localStorage.getItem('MLflowLocalStorage-1.1-ExperimentPage-[\"{exp}\"]-ReactComponentState')") or "{}")
    selected = state.get("selectedColumns", [])
    assert all(f"metrics.`{name}`" in selected for name in METHOD_METRICS), selected

    # ag-grid renders only the columns in view: scroll across and collect the headers and cells seen.
    headers, cells = set(), set()
    for fraction in (0, 0.25, 0.5, 0.75, 1.0):
        driver.execute_script(
            "for (const v of document.querySelectorAll('.ag-body-horizontal-scroll-viewport, .ag-center-cols-viewport')) v.scrollLeft = v.scrollWidth * arguments[0];",
            fraction,
        )
        time.sleep(0.5)
        headers |= {e.get_attribute("textContent").strip() for e in driver.find_elements(By.CSS_SELECTOR, ".ag-header-cell")}
        cells |= {e.get_attribute("textContent").strip() for e in driver.find_elements(By.CSS_SELECTOR, ".ag-cell")}
        if fraction == 0:
            page.screenshot("07-runs-table-method-columns")
    assert all(any(name in h for h in headers) for name in METHOD_METRICS), f"metric columns missing; headers seen: {sorted(headers)}"
    for name in METHOD_METRICS:
        value = repr(run.data.metrics[name])[:5]
        assert any(c.startswith(value) for c in cells), f"{name} = {run.data.metrics[name]} not in the table"


def test_compare_runs_view_shows_both_runs(page, models):
    transfer, li = models["transfer_run"], models["li_run"]
    runs = json.dumps([transfer.info.run_id, li.info.run_id])
    exps = json.dumps(sorted({transfer.info.experiment_id, li.info.experiment_id}))
    route = f"/#/compare-runs?runs={urllib.parse.quote(runs)}&experiments={urllib.parse.quote(exps)}"
    text = page.open(route, "Comparing 2 Runs", transfer.info.run_name, li.info.run_name, "Metrics")
    assert "registered_model" in text and MG in text and LI in text
    from selenium.webdriver.common.by import By

    driver = page.driver
    for section in ("Visualizations", "Parameters"):  # collapse, so that the metrics table is in view
        with contextlib.suppress(Exception):
            driver.find_element(By.XPATH, f"//div[normalize-space(text())='{section}']").click()
            time.sleep(0.5)
    # The metrics table is a virtualized grid: scroll through it and collect the metric names rendered.
    time.sleep(1)
    page.screenshot("08-compare-runs-metrics")
    seen = ""
    for _ in range(60):
        text, more = driver.execute_script(
            """let more = false, text = '';
               for (const g of document.querySelectorAll('.ReactVirtualized__Grid')) {
                 text += g.innerText + ' ';
                 if (g.scrollTop + g.clientHeight < g.scrollHeight) { g.scrollTop += g.clientHeight; more = true; }
               }
               return [text, more];"""
        )
        seen += text
        if not more:
            break
        time.sleep(0.3)
    missing = [name for name in METHOD_METRICS if name not in seen]
    assert not missing, f"compare-runs metrics table lacks {missing}"
