"""Shared reports end to end in a real browser: fit in the app, publish, open the link in a fresh
browser (another person), change δ, download, withdraw.

Starts ``streamlit run app.py`` with ``HTE_REPORTS_URL`` pointing to a temporary SQLite file and
drives Debian's Chromium with Playwright (helpers from ``test_browser.py``). Screenshots go to
``test-artifacts/`` (report_publish.png, report_view.png, report_invalid.png). Without Chromium or
Playwright the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from hte.report_store import INVALID_LINK
from tests.test_browser import (
    FIT_TIMEOUT_MS,
    TINY,
    browser,  # noqa: F401  (the shared Chromium fixture)
    go,
    running_app,
    screenshot,
    type_number,
    wait_idle,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TITLE = "Pilot <b>results</b> **bold**"
NOTE = "Shared with the team.\nSecond line: <i>not italic</i>"
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def report_server(tmp_path_factory) -> Iterator[str]:
    """The app on a free port, storing reports in a fresh SQLite file."""
    db = tmp_path_factory.mktemp("reports") / "reports.db"
    with running_app("streamlit-report.log", HTE_REPORTS_URL=f"sqlite:///{db}") as url:
        yield url
    assert db.exists()                     # the reports went to the test's own file


def fit_the_sample(page) -> None:
    """Load the sample, keep three factors and the gender × race intersection, fit tiny."""
    page.get_by_role("button", name="Use the sample experiment").click()
    page.get_by_text("Loaded the sample").first.wait_for(timeout=120_000)
    wait_idle(page)
    for factor in ("generation", "married", "kids"):
        page.get_by_role("button", name=f"Remove {factor}").click()
        wait_idle(page)
    go(page, "2 · Model")
    page.get_by_role("combobox", name="Intersections to model (optional)").click()
    page.get_by_role("option", name="gender × race", exact=False).click()
    page.keyboard.press("Escape")
    wait_idle(page)
    page.get_by_text("Sampler settings (advanced)").click()
    for label, value in TINY.items():
        type_number(page, label, value)
    page.get_by_role("button", name="Fit the model").click()
    page.get_by_role("heading", name="3 · Effects", exact=True).wait_for(timeout=FIT_TIMEOUT_MS)
    wait_idle(page, FIT_TIMEOUT_MS)


def code_blocks(page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="stCode"] code').all_inner_texts()]


def headline(page) -> str:
    return page.locator("h4").filter(has_text="chance the treatment").first.inner_text()


def test_publish_open_in_a_fresh_browser_change_delta_and_withdraw(browser, report_server):  # noqa: F811
    analyst = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    analyst.set_default_timeout(60_000)
    analyst.goto(report_server)
    analyst.get_by_role("heading", name="1 · Data", exact=True).wait_for()
    wait_idle(analyst)
    fit_the_sample(analyst)

    # Publish from the Share page, with a title and a note that must be shown literally.
    go(analyst, "7 · Share")
    analyst.get_by_text("groups are published and").wait_for()
    title = analyst.get_by_label("Title (optional)")
    title.fill(TITLE)
    title.press("Enter")
    wait_idle(analyst)
    note = analyst.get_by_label("Note for readers (optional)")
    note.fill(NOTE)
    note.press("Tab")
    wait_idle(analyst)
    analyst.get_by_role("button", name="Publish report").click()
    analyst.get_by_text("The report is published").wait_for()
    wait_idle(analyst)
    analyst.get_by_text("The owner key is shown only now").wait_for()
    codes = code_blocks(analyst)
    link = next(c for c in codes if "?report=" in c)
    owner_key = next(c for c in codes if c != link and re.fullmatch(r"[A-Za-z0-9_-]{43}", c))
    assert link.startswith(f"{report_server}/?report=")
    screenshot(analyst, "report_publish")

    # Someone else opens the link: a fresh browser context (no cookies, no session).
    reader_context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    reader = reader_context.new_page()
    reader.set_default_timeout(60_000)
    reader.goto(link)
    reader.get_by_role("heading", name=TITLE, exact=True).wait_for()
    wait_idle(reader)
    assert reader.get_by_text("Second line: <i>not italic</i>").count() == 1
    forest = reader.locator('[data-testid="stPlotlyChart"]').first
    forest.locator("text=Everyone").first.wait_for()
    assert forest.locator("text=Black").count() >= 1
    assert reader.locator('[data-testid="stPlotlyChart"]').count() == 4
    # Only the report: no navigation, no sidebar, no upload.
    assert reader.get_by_role("link", name="1 · Data").count() == 0
    assert reader.locator('[data-testid="stSidebar"]').count() == 0
    assert reader.locator('[data-testid="stFileUploader"]').count() == 0
    assert reader.locator('[data-testid="stException"]').count() == 0

    # Changing δ recomputes the probabilities from the stored draws.
    before = headline(reader)
    chance_before = reader.locator('[data-testid="stMetricValue"]').nth(2).inner_text()
    type_number(reader, "Practically zero within ±", "0.3")
    reader.locator("h4").filter(has_text="by more than 0.3").first.wait_for()
    after = headline(reader)
    chance_after = reader.locator('[data-testid="stMetricValue"]').nth(2).inner_text()
    assert after != before and "0.3" in after
    assert chance_after != chance_before
    reader.get_by_text("Chance it is above +0.3").wait_for()
    screenshot(reader, "report_view")

    # The exports carry the reader's δ.
    with reader.expect_download() as info:
        reader.get_by_role("button", name="Download the table (CSV)").click()
    table = pd.read_csv(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8-sig")))
    assert table["label"].iloc[0] == "Everyone" and "p_above" in table.columns
    with reader.expect_download() as info:
        reader.get_by_role("button", name="Download the report (HTML)").click()
    page_html = Path(info.value.path()).read_text(encoding="utf-8")
    assert "Pilot &lt;b&gt;results&lt;/b&gt; **bold**" in page_html and TITLE not in page_html
    assert "±0.3" in page_html

    # A link that does not work shows the one message, and nothing of the app.
    stranger = browser.new_context(viewport=VIEWPORT).new_page()
    stranger.goto(f"{report_server}/?report={'A' * 43}")
    stranger.get_by_text(INVALID_LINK).wait_for()
    wait_idle(stranger)
    assert stranger.locator('[data-testid="stPlotlyChart"]').count() == 0
    assert stranger.get_by_role("link", name="1 · Data").count() == 0
    screenshot(stranger, "report_invalid")
    stranger.context.close()

    # The analyst withdraws the report; the reader's next look shows the same message.
    analyst.get_by_label("Report link (or its token)").fill(link)
    analyst.get_by_label("Owner key").fill(owner_key)
    analyst.get_by_role("button", name="Withdraw the report").click()
    analyst.get_by_text("The report is withdrawn").wait_for()
    reader.reload()
    reader.get_by_text(INVALID_LINK).wait_for()
    assert reader.locator('[data-testid="stPlotlyChart"]').count() == 0
    reader_context.close()
    analyst.close()



@pytest.mark.parametrize("path", ["data", "share"])
def test_a_fresh_servers_first_request_to_a_sub_path_with_a_report_link_shows_only_the_report(
        browser, tmp_path, path):  # noqa: F811
    """Streamlit serves a ``pages/`` folder on its own until ``st.navigation`` has run once; the
    gate must hold for the very first request to any path (issue 11)."""
    db = tmp_path / "reports.db"
    with running_app(f"streamlit-fresh-{path}.log", HTE_REPORTS_URL=f"sqlite:///{db}") as url:
        reader = browser.new_page(viewport=VIEWPORT)
        reader.goto(f"{url}/{path}?report=not-a-real-token")
        reader.get_by_text(INVALID_LINK).wait_for(timeout=60_000)
        wait_idle(reader)
        assert reader.locator('[data-testid="stFileUploader"]').count() == 0
        assert reader.locator('[data-testid="stSidebarNav"]').count() == 0
        assert reader.get_by_role("button", name="Use the sample experiment").count() == 0
        assert reader.get_by_text("Page not found").count() == 0  # the report answers here
        # The link is the permission: the page loads nothing from, and links to nothing on,
        # another site, so it never leaves as a Referer (a proxy adds Referrer-Policy too).
        elsewhere = reader.evaluate(
            "origin => [...performance.getEntriesByType('resource').map(e => e.name), "
            "...[...document.querySelectorAll('a[href]')].map(a => a.href)]"
            ".filter(u => u.startsWith('http') && !u.startsWith(origin))", url)
        assert elsewhere == []
        if path == "data":
            screenshot(reader, "report_gate_fresh_server")
        reader.close()


def test_no_pages_folder_next_to_the_app():
    """The reason the gate holds from the first request: see app.py's docstring."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "pages").exists()
    assert (root / "app_pages" / "report.py").exists()
