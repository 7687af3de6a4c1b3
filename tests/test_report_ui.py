"""Shared reports in the dashboard, run headlessly with AppTest: the Share page (publish,
withdraw) and the read-only report view that a ``?report=<token>`` link opens.

Every test stores reports in its own SQLite file (``HTE_REPORTS_URL``), never under ``.hte/``.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import hte.report_store as rs
from hte.errors import ReportError
from hte.report_store import INVALID_LINK, WRONG_KEY, ReportStore, new_token
from hte.reports import Snapshot
from ui import formatting as fmt
from ui import reports, state

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120
HOSTILE = "<i>Fe</i>male **x** :red[y] $z$"


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    monkeypatch.setenv("HTE_REPORTS_URL", url)
    return url


@pytest.fixture
def store(store_url):
    with ReportStore(store_url) as s:
        yield s


@pytest.fixture(scope="module")
def snapshot(gaussian_fit) -> Snapshot:
    return Snapshot.from_fit(gaussian_fit, title="Pilot results", note="Read me.\nTwo lines.",
                             threshold=0.1)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at, kind: str = "markdown") -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def share_page(fit, context: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["hte_fit"] = fit
    if context:
        at.context = context
    at = ok(at.run())
    return ok(at.switch_page(state.PAGES["share"]).run())


def report_view(token: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.query_params[reports.REPORT_PARAM] = token
    return ok(at.run())


def published_key(at: AppTest) -> str | None:
    """The owner key shown on the page: the code block under the 'Owner key' heading."""
    codes = [c.value for c in at.code]
    keys = [c for c in codes if rs.is_well_formed(c)]
    return keys[0] if keys else None


# -- the Share page -------------------------------------------------------------------------------

def test_publish_shows_the_link_and_the_owner_key_once(store, gaussian_fit):
    at = share_page(gaussian_fit, context={"url": "https://hte.example.org/share"})
    assert at.title[0].value == "7 · Share"
    assert at.number_input(key="share_min_cell").value == 10
    assert at.date_input(key="share_expires").value is None
    assert "groups are published and" in texts(at, "caption")
    at.text_input(key="share_title").input("Pilot results")
    at.text_area(key="share_note").input("For the team.")
    at.number_input(key="_w_share_threshold").set_value(0.2)
    button(at, "Publish report").click()
    at = ok(at.run())

    links = [c.value for c in at.code if "?report=" in c.value]
    assert len(links) == 1 and links[0].startswith("https://hte.example.org/?report=")
    token = reports.token_from_link(links[0])
    key = published_key(at)
    assert key is not None and key != token
    assert "shown only now" in texts(at, "warning") and "withdraw" in texts(at, "warning")
    assert "withheld for small-cell protection" in texts(at, "info") or \
        "No group was withheld" in texts(at, "info")
    assert "Download the link and key (TXT)" in [d.proto.label
                                                for d in at.get("download_button")]

    snap = store.open(token)
    assert (snap.title, snap.note, snap.min_cell) == ("Pilot results", "For the team.", 10)
    assert snap.threshold == pytest.approx(0.2)   # the decision rule on the page
    assert snap.expires is None

    at = ok(at.run())                              # any later run: the key is gone
    assert published_key(at) is None and not [c for c in at.code if "?report=" in c.value]
    assert key not in texts(at) + texts(at, "warning") + texts(at, "info")


def test_publish_without_a_known_address_shows_the_relative_link(store, gaussian_fit):
    at = share_page(gaussian_fit)
    at.date_input(key="share_expires").set_value(datetime.now(UTC).date() + timedelta(days=3))
    at.number_input(key="share_min_cell").set_value(400)
    at = ok(at.run())
    assert "withheld" in texts(at, "caption")
    button(at, "Publish report").click()
    at = ok(at.run())
    links = [c.value for c in at.code if "?report=" in c.value]
    assert len(links) == 1 and links[0].startswith("?report=")
    assert "dashboard's address" in texts(at, "caption")
    snap = store.open(reports.token_from_link(links[0]))
    assert snap.min_cell == 400 and snap.withheld > 0 and snap.expires is not None
    assert f"{snap.withheld:,} groups were withheld" in texts(at, "info")


def test_publish_errors_are_shown_on_the_page(store, gaussian_fit):
    at = share_page(gaussian_fit)
    at.number_input(key="share_min_cell").set_value(100_000)
    at = ok(at.run())
    assert "fewer than 100000 people" in texts(at, "error")
    button(at, "Publish report").click()
    at = ok(at.run())
    assert published_key(at) is None


def test_withdraw_needs_the_right_owner_key(store, snapshot, gaussian_fit):
    token, key = store.publish(snapshot)
    at = share_page(gaussian_fit, context={"url": "http://localhost:8501/share"})
    for wrong in (new_token(), "", key[:-1]):
        at.text_input(key="withdraw_link").input(f"http://localhost:8501/?report={token}")
        at.text_input(key="withdraw_key").input(wrong)
        button(at, "Withdraw the report").click()
        at = ok(at.run())
        assert texts(at, "error") == WRONG_KEY
        assert store.open(token).title == snapshot.title   # still there
    at.text_input(key="withdraw_link").input(token)            # a bare token works too
    at.text_input(key="withdraw_key").input(key)
    button(at, "Withdraw the report").click()
    at = ok(at.run())
    assert "withdrawn" in texts(at, "success") and not at.error
    with pytest.raises(ReportError, match="not valid"):
        store.open(token)


def test_token_from_link_and_base_url():
    token = new_token()
    for text in (token, f" {token} ", f"?report={token}", f"https://a.b/x/?report={token}&y=1",
                 f"report={token}"):
        assert reports.token_from_link(text) == token
    assert reports.base_url("http://h:8501/share") == "http://h:8501"
    assert reports.base_url("https://h/apps/hte/share/") == "https://h/apps/hte"
    assert reports.base_url("https://h/apps/hte") == "https://h/apps/hte"
    assert reports.base_url(None) is None


def test_markdown_escape_shows_user_text_literally():
    assert fmt.md("**bold** <script>alert(1)</script>") == (
        r"\*\*bold\*\* \<script\>alert\(1\)\<\/script\>")
    assert fmt.md("a\nb") == "a b"
    assert fmt.md(":red[x] $y$ [l](u)") == r"\:red\[x\] \$y\$ \[l\]\(u\)"


# -- the report view ------------------------------------------------------------------------------

def test_a_report_link_shows_the_report_and_nothing_else(store, snapshot, binary_fit):
    token, _ = store.publish(snapshot)
    at = report_view(token, hte_fit=binary_fit)    # even in a session that has a fit
    assert at.title[0].value == "Pilot results"
    assert "4,000 people analysed" in texts(at, "caption")
    assert [t.value for t in at.text] == ["Read me.\nTwo lines."]
    headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert "chance the treatment raises support" in headline and "(90% interval)" in headline
    assert "**Rows:** 4,000 of 4,000 analysed; none dropped" in texts(at)
    assert at.code[0].value == snapshot.formula
    assert "sampler" in texts(at, "success") + texts(at, "warning")
    charts = at.get("plotly_chart")
    assert len(charts) == 4     # forest, intersection heatmap, densities, difference
    assert len(at.dataframe) == 3           # effects, the pair's cells, the two groups
    assert at.dataframe[0].value["Group"].iloc[0] == "Everyone"
    assert len(at.dataframe[0].value) == 1 + 2 + 4 + 3
    assert at.selectbox(key="_w_report_pair").value == "gender × race"
    assert len(at.dataframe[1].value) == 2 * 4
    labels = [d.proto.label for d in at.get("download_button")]
    assert "Download the report (HTML)" in labels and "Download the table (CSV)" in labels
    # Nothing of the app: no upload, no navigation, no sidebar, no fitting.
    assert not at.file_uploader and not at.get("page_link") and not at.sidebar.children
    assert "donated" not in texts(at) and "hte_data" not in at.session_state
    assert not [b for b in at.button if "Fit" in b.label or "sample" in b.label]


def test_a_report_tells_the_sampler_retries(store, snapshot):
    log = [{"attempt": 1, "target_accept": 0.8, "seed": 0, "divergences": 2,
            "tree_depth_hits": 0, "seconds": 2.0},
           {"attempt": 2, "target_accept": 0.95, "seed": 7919, "divergences": 0,
            "tree_depth_hits": 0, "seconds": 3.0}]
    diagnostics = {**snapshot.diagnostics, "attempts": 2, "attempts_log": log}
    token, _ = store.publish(dataclasses.replace(snapshot, diagnostics=diagnostics))
    at = report_view(token)
    told = texts(at, "success") + texts(at, "warning")
    assert "The first attempt met 2 divergent transitions at target acceptance 0.8" in told
    assert "results shown are from the second attempt" in told
    attempts = next(d.value for d in at.dataframe if "Attempt" in d.value.columns)
    assert list(attempts["Divergent transitions"]) == [2, 0]


def test_changing_delta_and_interval_recomputes_the_probabilities(store, snapshot):
    token, _ = store.publish(snapshot)
    at = report_view(token)
    assert at.number_input(key="_w_report_threshold").value == pytest.approx(0.1)
    before = at.dataframe[0].value["P(> δ)"].copy()
    headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    at.number_input(key="_w_report_threshold").set_value(0.3)
    at.select_slider(key="_w_report_interval").set_value(0.5)
    at = ok(at.run())
    after = at.dataframe[0].value["P(> δ)"]
    assert (after <= before + 1e-9).all() and (after < before).any()
    new_headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert new_headline != headline and "(50% interval)" in new_headline
    expected = snapshot.effects(threshold=0.3, interval=0.5)["p_above"].to_numpy() * 100
    assert after.to_numpy() == pytest.approx(expected[: len(after)])


def test_report_view_compares_groups_and_shows_densities(store, snapshot):
    token, _ = store.publish(snapshot)
    at = report_view(token)
    body = texts(at)
    assert "for people with gender = Female (A) than for people with gender = Male (B)" in body
    options = at.selectbox(key="_w_report_cmp_a").options
    assert "Everyone" in options and "gender = Female, race = Black" in options
    table = at.dataframe[0].value
    everyone = int(table.index[table["Group"] == "Everyone"][0])
    at.selectbox(key="_w_report_cmp_b").set_value(everyone)
    at.selectbox(key="_w_report_density_factor").set_value("party")
    at.selectbox(key="_w_report_pair").set_value("gender × party")
    at = ok(at.run())
    assert "than for everybody (B)" in texts(at)
    assert len(at.dataframe[1].value) == 2 * 3     # gender × party
    assert len(at.dataframe[2].value) == 2
    summary, _ = snapshot.contrast({"gender": "Female"}, {})
    between = (f"between {fmt.fmt_effect(summary['lower'], False)} and "
               f"{fmt.fmt_effect(summary['upper'], False)}")
    assert between in texts(at)


def test_binary_report_is_in_percentage_points(store, binary_fit):
    token, _ = store.publish(Snapshot.from_fit(binary_fit, threshold=0.02))
    at = report_view(token)
    assert at.title[0].value == "Treatment\\-effect report"
    assert at.number_input(key="_w_report_threshold").value == pytest.approx(2.0)
    assert "percentage points" in texts(at)


@pytest.mark.parametrize("kind", ["empty", "malformed", "unknown", "revoked", "expired"])
def test_a_link_that_does_not_work_shows_one_message_and_nothing_else(store, snapshot, kind,
                                                                       monkeypatch):
    token, key = store.publish(dataclasses.replace(
        snapshot, expires=datetime.now(UTC) + timedelta(hours=1)))
    if kind == "revoked":
        store.revoke(token, key)
    elif kind == "expired":
        monkeypatch.setattr(rs, "_now", lambda: int(datetime.now(UTC).timestamp()) + 7200)
    token = {"empty": "", "malformed": "../../etc/passwd'--", "unknown": new_token()}.get(
        kind, token)
    at = report_view(token)
    assert [e.value for e in at.error] == [INVALID_LINK]
    assert not at.title and not at.markdown and not at.get("plotly_chart")
    assert not at.file_uploader and not at.sidebar.children and not at.number_input


def test_user_strings_are_shown_literally(store, snapshot):
    groups = snapshot.groups.copy()
    groups["gender"] = groups["gender"].replace({"Female": HOSTILE})
    groups["label"] = groups["label"].str.replace("Female", HOSTILE, regex=False)
    hostile = dataclasses.replace(snapshot, groups=groups, title="**Bold** <script>alert(1)"
                                  "</script>", note="<b>note</b> **x**")
    token, _ = store.publish(hostile)
    at = report_view(token)
    assert at.title[0].value == fmt.md(hostile.title)
    assert at.text[0].value == "<b>note</b> **x**"          # st.text: no Markdown, no HTML
    body = texts(at)
    assert HOSTILE not in body and fmt.md(HOSTILE) in body    # the comparison's sentence
    for chart in at.get("plotly_chart"):
        spec = json.dumps(json.loads(chart.proto.spec), ensure_ascii=False)
        assert "<i>Fe</i>" not in spec and "<script>" not in spec
    forest = json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec), ensure_ascii=False)
    assert "&lt;i&gt;Fe&lt;/i&gt;male **x**" in forest


# -- figures shared by the view and the HTML export -----------------------------------------------

def test_report_figures_are_the_app_forest_plots_with_names_escaped(snapshot):
    from hte import plots
    from hte.reports import plot_table, report_figures

    groups = snapshot.groups.copy()
    groups["race"] = groups["race"].replace({"Black": "<i>B</i>" + "x" * 80})
    hostile = dataclasses.replace(snapshot, groups=groups)
    figures = report_figures(hostile)
    assert [name for name, _ in figures] == ["Everyone and each factor", "gender × race",
                                             "gender × party", "race × party"]
    first = figures[0][1]
    assert {t.name for t in first.data} <= set(plots.VERDICT_COLORS)   # the app's legend
    ticks = list(first.layout.yaxis.ticktext)
    assert "<i>B</i>" not in json.dumps(first.to_plotly_json(), default=str)
    shown = next(t for t in ticks if t.startswith("&lt;i&gt;B"))
    assert len(shown.replace("&lt;", "<").replace("&gt;", ">")) == 40 and shown.endswith("…")
    pair = figures[1][1]                       # the heading row is inside the drawn range
    top, bottom = pair.layout.yaxis.range[1], pair.layout.yaxis.range[0]
    assert top < min(pair.layout.yaxis.tickvals) and bottom > max(pair.layout.yaxis.tickvals)

    table = hostile.effects()
    pt = plot_table(table, hostile.factors, "<b>y</b>")
    assert pt.outcome == "&lt;b&gt;y&lt;/b&gt;" and list(pt.table.index) == list(table.index)
    assert pt.levels[pt.factors["race"]][1].startswith("&lt;i&gt;B")
    assert set(pt.table.loc[table["by"] == "gender × race", "by"]) == {"gender × race"}
