"""End to end in a real browser: upload a CSV, choose roles, fit, read the effects, download.

Starts ``streamlit run app.py`` on a free port and drives Debian's Chromium with Playwright.
Screenshots of every page are saved under ``test-artifacts/`` (git-ignored). Without Chromium
(``apt-get install -y chromium``) or Playwright the tests are skipped, or fail when ``CI`` is set.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("HTE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Sampler settings typed into the Model page (the shape of the conftest fits, so the compiled
#: sampler is usually in JAX's persistent cache).
TINY = {"Chains": "2", "Warm-up iterations": "300", "Draws per chain": "300"}
FIT_TIMEOUT_MS = 900_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Browser tests cannot run: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, log: Path, **env_vars: str) -> subprocess.Popen:
    """``streamlit run app.py`` in the background, headless, on ``port``.

    The app runs as shipped: background compilation on (conftest turns it off for in-process
    tests); ``env_vars`` add to or override its environment.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HTE_WARM_UP": "on", **env_vars}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_app(log_name: str, **env_vars: str) -> Iterator[str]:
    """The app on a free local port until the block ends; yields its URL. Logs to ARTIFACTS."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    proc = start_app(port, ARTIFACTS / log_name, **env_vars)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_app("streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed.")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# -- helpers (also used by bench/dashboard.py) ----------------------------------------------------

def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until the script run is over (Streamlit's 'running' indicator is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def go(page, title: str) -> None:
    """Open a page through the sidebar navigation."""
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title).first.wait_for()
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.get_by_role("combobox", name=label)
    wanted = page.get_by_role("option", name=option, exact=True)
    for _attempt in range(3):
        box.click()
        box.fill("")
        box.press_sequentially(option)    # typing filters the list and opens it
        try:
            wanted.click(timeout=10_000)
            break
        except PlaywrightTimeout:         # the list closed under a rerun: try again
            page.keyboard.press("Escape")
            wait_idle(page)
    else:
        raise AssertionError(f"could not choose '{option}' in '{label}'")
    wait_idle(page)


def type_number(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(value)
    box.press("Enter")
    wait_idle(page)


def screenshot(page, name: str) -> Path:
    """The whole page (Streamlit scrolls inside its main block, so grow the viewport first)."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...['stMain', 'stMainBlockContainer'].map(id => "
        "(document.querySelector(`[data-testid=\"${id}\"]`) || {scrollHeight: 0}).scrollHeight))")
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height + 80,
                                                                          size["height"]), 15000))})
    page.wait_for_timeout(2500)   # let Plotly redraw at the new size
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def trial_csv() -> bytes:
    """The sample experiment with other names: outcome 'attitude', arms 'T0'/'T1'."""
    df = pd.read_csv(ROOT / "sample_data" / "experiment.csv")
    df = df.rename(columns={"support": "attitude", "treatment": "condition"})
    df["condition"] = df["condition"].map({"treatment": "T1", "control": "T0"})
    return df.to_csv(index=False).encode()


def test_upload_fit_effects_and_download(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(60_000)
    page.goto(server)
    page.get_by_role("heading", name="1 · Data", exact=True).wait_for()
    wait_idle(page)
    screenshot(page, "01_data_empty")

    # A result page before anything is loaded says what is missing.
    go(page, "3 · Effects")
    page.get_by_text("Nothing to show yet").wait_for()
    screenshot(page, "02_effects_missing_step")
    go(page, "1 · Data")

    # Upload through the file uploader.
    csv = tmp_path / "trial.csv"
    csv.write_bytes(trial_csv())
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(csv))
    page.get_by_text("Loaded the file trial.csv").wait_for(timeout=120_000)
    wait_idle(page)

    # Roles: the outcome and the treated value, chosen explicitly; three factors.
    choose(page, "Outcome (measured after treatment)", "attitude")
    choose(page, "Treatment (who was treated)", "condition")
    choose(page, "Value that means treated", "T1")
    for factor in ("generation", "married", "kids"):
        page.get_by_role("button", name=f"Remove {factor}").click()
        wait_idle(page)
    page.get_by_text("Treated: 'T1' (2,000 people)").wait_for()
    screenshot(page, "03_data_loaded")

    # Model: the suggested intersection, tiny sampler settings, fit.
    go(page, "2 · Model")
    intersections = page.get_by_role("combobox", name="Intersections to model (optional)")
    intersections.click()
    page.get_by_role("option", name="gender × race", exact=False).click()
    page.keyboard.press("Escape")
    wait_idle(page)
    page.get_by_text("Sampler settings (advanced)").click()
    for label, value in TINY.items():
        type_number(page, label, value)
    page.get_by_text("(1 + condition || gender:race)").wait_for()
    screenshot(page, "04_model")
    page.get_by_role("button", name="Fit the model").click()
    page.get_by_role("heading", name="3 · Effects", exact=True).wait_for(timeout=FIT_TIMEOUT_MS)
    page.get_by_text("Effects by group").wait_for(timeout=FIT_TIMEOUT_MS)
    wait_idle(page, FIT_TIMEOUT_MS)

    # The headline, the forest plot and the effects table.
    page.get_by_text("chance the treatment raises attitude").first.wait_for()
    forest = page.locator('[data-testid="stPlotlyChart"]').first
    forest.locator("text=Everyone").first.wait_for()
    assert forest.locator("text=Black").count() >= 1
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # drawn after the charts
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    screenshot(page, "05_effects")

    # The CSV download holds the full-precision table.
    with page.expect_download() as info:
        page.get_by_role("button", name="Download table (CSV)").first.click()
    download = info.value
    assert download.suggested_filename == "effects.csv"
    table = pd.read_csv(io.StringIO(Path(download.path()).read_text()))
    assert table["label"].iloc[0] == "Everyone"
    assert {"mean", "lower", "upper", "p_above", "verdict"} <= set(table.columns)
    assert len(table) == 1 + 2 + 4 + 3

    for title, name in (("4 · Intersections", "06_intersections"),
                        ("5 · Compare", "07_compare"), ("6 · Diagnostics", "08_diagnostics")):
        go(page, title)
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
        screenshot(page, name)
    page.close()
