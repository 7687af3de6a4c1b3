"""The dashboard run headlessly with Streamlit's AppTest: every page, happy path and missing steps.

Result pages get a pre-made fit (the session fixtures of conftest.py) through session state, so
only one test fits through the Model page. ``AppTest.switch_page`` runs a page
through the app's ``st.navigation``; the shared frame of ``app.py`` (sidebar status) is checked
on ``app.py`` itself.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FACTORS
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
RESULT_PAGES = ["app_pages/effects.py", "app_pages/intersections.py", "app_pages/compare.py",
                "app_pages/diagnostics.py", "app_pages/share.py"]
TIMEOUT = 120
#: The address of a link to the Data page: the default page, at the app's root.
DATA_LINK = ""


def app(**state) -> AppTest:
    """The app after its first run, with ``state`` put into session state first."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def page(path: str, **state) -> AppTest:
    at = app(**state)
    return at.switch_page(path).run()


def texts(at: AppTest, kind: str = "markdown") -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def array(value) -> np.ndarray:
    """A number array from Plotly's JSON: a list, or base64 bytes with a dtype."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def with_sample(at: AppTest, name: str = "Use the sample experiment") -> AppTest:
    next(b for b in at.button if b.label == name).click()
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- the frame and the missing steps --------------------------------------------------------------

def test_first_launch_offers_the_sample_one_click_away():
    at = ok(app())
    assert at.title[0].value == "1 · Data"
    labels = [b.label for b in at.button]
    assert labels[:2] == ["Use the sample experiment", "Use the yes/no sample"]
    assert at.button[0].proto.type == "primary"
    assert "Nothing is loaded yet" in texts(at, "info")
    assert "nothing loaded yet" in texts(at.sidebar)
    assert "not fitted yet" in texts(at.sidebar)
    assert len(at.file_uploader) == 1


@pytest.mark.parametrize("path", ["app_pages/model.py", *RESULT_PAGES])
def test_pages_before_any_data_say_so_and_link_to_the_data_page(path):
    at = ok(page(path))
    assert "load" in texts(at, "info").lower()
    links = [link.proto.page for link in at.get("page_link")]
    assert DATA_LINK in links, links


@pytest.mark.parametrize("path", RESULT_PAGES)
def test_result_pages_with_data_but_no_fit_link_to_the_model_page(path):
    at = ok(with_sample(app()))
    at = ok(at.switch_page(path).run())
    assert "no model is fitted yet" in texts(at, "info")
    links = [link.proto.page for link in at.get("page_link")]
    assert "model" in links, links


# -- data -----------------------------------------------------------------------------------------

def test_sample_loads_with_suggested_roles_and_a_summary():
    at = ok(with_sample(app()))
    assert "experiment.csv" in texts(at, "success")
    values = {s.label: s.value for s in at.selectbox}
    assert values == {"Outcome (measured after treatment)": "support",
                      "Treatment (who was treated)": "treatment",
                      "Value that means treated": "treatment"}
    factors = at.multiselect(key="_w_data_factors").value
    assert factors == ["gender", "race", "generation", "married", "kids", "party"]
    summary = texts(at, "info")
    assert "Using all 4,000 rows" in summary and "continuous" in summary
    assert len(at.dataframe) == 1                              # the preview
    # Who is in the experiment: people per level and arm, one pair of bars per factor.
    assert "Who is in the experiment" in [h.value for h in at.subheader]
    (chart,) = at.get("plotly_chart")
    traces = json.loads(chart.proto.spec)["data"]
    assert len(traces) == 2 * 6
    assert sum(array(t["x"]).sum() for t in traces[:2]) == 4000   # gender: everybody, once


def test_binary_sample_is_detected_as_yes_no():
    at = ok(with_sample(app(), "Use the yes/no sample"))
    assert at.selectbox(key="_w_data_outcome").value == "donated"
    assert "binary model" in texts(at, "info")


def test_role_error_is_shown_next_to_the_treatment_control():
    at = ok(with_sample(app()))
    at.selectbox(key="_w_data_treatment").set_value("party")
    at = ok(at.run())
    errors = texts(at, "error")
    assert "'party' has 3 different values" in errors
    assert not at.info                                     # no summary while the roles are wrong


def test_upload_csv_and_bin_a_numeric_column():
    rows = ["age,arm,score,region"]
    for i in range(120):
        rows.append(f"{18 + i % 60},{'treat' if i % 2 else 'control'},{(i * 7) % 11 / 2},"
                    f"{'north' if i % 3 else 'south'}")
    at = app()
    at.file_uploader[0].upload("trial.csv", "\n".join(rows).encode(), "text/csv")
    at = ok(at.run())
    assert "trial.csv" in texts(at, "success")
    assert at.selectbox(key="_w_data_treatment").value == "arm"
    assert at.selectbox(key="_w_data_treated").value == "treat"
    at.multiselect(key="_w_data_bin_cols").set_value(["age"])
    at = ok(at.run())
    assert "**age:** 18-32" in texts(at)
    assert "'age'" in texts(at, "info")                      # binned age is a factor now


def test_upload_renames_result_names_and_releases_the_uploaded_bytes(monkeypatch):
    """A column called 'label' (a column of every results table) is renamed on loading, and the
    uploaded file is dropped from Streamlit's memory once its table is read (issue 11)."""
    from ui import state as ui_state

    released = []
    real = ui_state.release_upload
    monkeypatch.setattr(ui_state, "release_upload", lambda u: released.append(real(u)))
    rows = ["label,arm,score"] + [f"{'ab'[i % 2]},{'treat' if i % 3 else 'control'},{i % 7}"
                                  for i in range(90)]
    at = app()
    at.file_uploader[0].upload("labels.csv", "\n".join(rows).encode(), "text/csv")
    at = ok(at.run())
    assert "labels.csv" in texts(at, "success")
    info = texts(at, "info")
    assert "Renamed so results tables can show them: label → label\\_group" in info
    assert "'label_group' (2 levels)" in info  # it is a factor under its new name
    assert released == [True]
    at = ok(at.run())  # the table stays loaded without the file
    assert "labels.csv" in texts(at, "success")


def test_unreadable_upload_shows_the_engine_message_next_to_the_uploader():
    at = app()
    at.file_uploader[0].upload("empty.csv", b"", "text/csv")
    at = ok(at.run())
    assert "is empty" in texts(at, "error")
    assert "Nothing is loaded yet" in texts(at, "info")


# -- model ----------------------------------------------------------------------------------------

def _model_page_with_tiny_settings() -> AppTest:
    at = ok(with_sample(app()))
    at = ok(at.switch_page("app_pages/model.py").run())
    at.multiselect(key="_w_model_model_factors").set_value(["gender", "race", "party"])
    at = ok(at.run())
    at.multiselect(key="_w_model_interactions").set_value(["gender:race"])
    for name, value in (("chains", 2), ("warmup", 300), ("draws", 300), ("seed", 1)):
        at.number_input(key=f"_w_model_{name}").set_value(value)
    return ok(at.run())


def test_model_page_shows_formula_cells_and_suggested_pairs():
    at = _model_page_with_tiny_settings()
    assert at.code[0].value == ("support ~ treatment + (1 + treatment || gender) + "
                                "(1 + treatment || race) + (1 + treatment || party) + "
                                "(1 + treatment || gender:race)")
    body = texts(at)
    assert "**48 cells**" in body
    assert "Suggested (every combination has at least 30 people): gender × race" in texts(
        at, "caption")
    assert "δ = 0.1" in body and "practically zero" in body
    radio = at.radio(key="_w_model_prior")
    assert radio.value == "moderate"


def test_model_page_family_override_error_sits_under_the_outcome_type():
    at = ok(with_sample(app()))
    at = ok(at.switch_page("app_pages/model.py").run())
    at.radio(key="_w_model_family").set_value("binary")
    at = ok(at.run())
    assert "support" in texts(at, "error")
    assert not at.code                                       # nothing further is drawn


def test_fit_button_fits_caches_and_opens_the_effects_page():
    at = _model_page_with_tiny_settings()
    next(b for b in at.button if b.label == "Fit the model").click()
    at = ok(at.run(timeout=900))
    fit = at.session_state["hte_fit"]
    assert fit.settings.chains == 2 and fit.settings.draws == 300
    assert fit.spec.interactions == (("gender", "race"),)
    assert at.title[0].value == "3 · Effects"                # switched to the results
    assert "chance the treatment" in texts(at)

    # Back on the Model page the same choices are recognised as fitted; fitting again is a
    # cache hit that returns the very same object, without running the sampler.
    at = ok(at.switch_page("app_pages/model.py").run())
    assert "This model is fitted" in texts(at, "success")
    next(b for b in at.button if b.label == "Fit the model").click()
    start = time.perf_counter()
    at = ok(at.run())
    assert time.perf_counter() - start < 30
    assert at.session_state["hte_fit"] is fit


def test_sampler_compiles_in_the_background_while_the_user_chooses(monkeypatch, sample_table):
    from hte.api import model_spec
    from hte.data import Roles, prepare
    from hte.fitting import precompile_for
    from hte.spec import SamplerSettings
    from ui import fitting

    monkeypatch.setenv("HTE_WARM_UP", "on")
    at = _model_page_with_tiny_settings()
    at.number_input(key="_w_model_warmup").set_value(250)   # a shape no other test compiles
    at.number_input(key="_w_model_seed").set_value(3)
    at = ok(at.run())
    assert fitting.warm_ups().join(timeout=900)

    # Loading the sample compiled the Model page's first proposal (every factor, defaults) ...
    default = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                          treated="treatment", factors=tuple(FACTORS)))
    assert precompile_for(default.cells, model_spec(default), SamplerSettings()) == 0
    # ... and the choices on the Model page compiled theirs: the fit starts sampling at once.
    next(b for b in at.button if b.label == "Fit the model").click()
    at = ok(at.run(timeout=900))
    fit = at.session_state["hte_fit"]
    assert (fit.settings.warmup, fit.settings.seed) == (250, 3)
    assert fit.diagnostics.seconds_compile == 0


def test_warm_ups_run_one_at_a_time_newest_first_and_drop_stale_requests():
    import threading

    from ui.fitting import WarmUps

    ran: list[str] = []
    release = threading.Event()
    warm = WarmUps(pending=2)
    assert warm.start("a", lambda: (release.wait(10), ran.append("a")))
    time.sleep(0.2)                                    # "a" is running and holds the worker
    for key in "bcd":
        assert warm.start(key, lambda k=key: ran.append(k))
    assert not warm.start("d", lambda: ran.append("again"))    # queued already
    assert not warm.join(timeout=0.1)                  # still busy
    release.set()
    assert warm.join(timeout=10)
    assert ran == ["a", "d", "c"]                      # "b" was stale: dropped
    assert not warm.start("a", lambda: ran.append("again"))    # each key once
    assert warm.start("b", lambda: ran.append("b"))    # a dropped request can come back
    assert warm.join(timeout=10) and ran[-1] == "b"


def test_fit_reports_progress_and_engine_errors_on_the_page(monkeypatch, gaussian_fit):
    import hte.api
    from hte.errors import SpecError

    seen = []

    def fake_fit(data, **kwargs):
        for fraction in (0.0, 0.5, 1.0):
            kwargs["progress"](fraction, f"Sampling: {fraction:.0%} done")
            seen.append(fraction)
        if kwargs["seed"] == 777:
            raise SpecError("The sampler could not start: try a stronger prior.")
        return gaussian_fit

    monkeypatch.setattr(hte.api, "fit", fake_fit)
    at = _model_page_with_tiny_settings()
    at.number_input(key="_w_model_seed").set_value(777)     # a key no other test fits
    at = ok(at.run())
    next(b for b in at.button if b.label == "Fit the model").click()
    at = ok(at.run())
    assert seen == [0.0, 0.5, 1.0]
    assert "try a stronger prior" in texts(at, "error")      # shown on the Model page
    assert "hte_fit" not in at.session_state
    at.number_input(key="_w_model_seed").set_value(778)
    next(b for b in at.button if b.label == "Fit the model").click()
    at = ok(at.run())
    assert at.session_state["hte_fit"] is gaussian_fit
    assert at.title[0].value == "3 · Effects"


# -- results --------------------------------------------------------------------------------------

def test_effects_page_headline_forest_table_and_downloads(gaussian_fit):
    at = ok(page("app_pages/effects.py", hte_fit=gaussian_fit))
    headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert "chance the treatment" in headline and "support" in headline
    assert "(90% interval)" in headline
    assert at.number_input(key="_w_effects_threshold").value == pytest.approx(0.1)
    charts = at.get("plotly_chart")
    assert len(charts) == 3                                   # forest, densities, shrinkage
    assert len(at.dataframe) == 1
    table = at.dataframe[0].value
    assert list(table.columns[:6]) == ["Group", "Verdict", "n", "n treated", "n control",
                                       "Raw estimate"]
    assert table["Group"].iloc[0] == "Everyone" and len(table) == 1 + 2 + 4 + 3
    downloads = [d.proto.label for d in at.get("download_button")]
    assert downloads.count("Download figure (HTML)") == 3
    assert "Download table (CSV)" in downloads
    assert "partial pooling" in texts(at, "subheader").lower() or "pooling" in texts(at)


def test_changing_delta_and_interval_updates_without_refitting(gaussian_fit):
    at = ok(page("app_pages/effects.py", hte_fit=gaussian_fit))
    before = at.dataframe[0].value["P(> δ)"].iloc[0]
    at.number_input(key="_w_effects_threshold").set_value(0.3)
    at.select_slider(key="_w_effects_interval").set_value(0.5)
    at = ok(at.run())
    headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert "0.3" in headline and "(50% interval)" in headline
    assert at.dataframe[0].value["P(> δ)"].iloc[0] < before
    assert at.session_state["hte_fit"] is gaussian_fit
    # the choice follows the user to the other result pages
    at = ok(at.switch_page("app_pages/compare.py").run())
    assert at.number_input(key="_w_compare_threshold").value == pytest.approx(0.3)


def test_binary_effects_are_in_percentage_points(binary_fit):
    at = ok(page("app_pages/effects.py", hte_fit=binary_fit))
    headline = next(m.value for m in at.markdown if m.value.startswith("#### "))
    assert "percentage points" in headline and "donated" in headline
    assert at.number_input(key="_w_effects_threshold").value == pytest.approx(2.0)
    assert "Effects in percentage points (pp)" in texts(at, "caption")


def test_intersections_page_heatmap_cell_and_table(gaussian_fit):
    at = ok(page("app_pages/intersections.py", hte_fit=gaussian_fit))
    assert at.selectbox(key="_w_intersections_ix_rows").value == "gender"
    assert at.selectbox(key="_w_intersections_ix_cols").value == "race"
    assert "is modelled as an intersection" in texts(at, "caption")
    assert len(at.get("plotly_chart")) == 2                   # heatmap and the cell's posterior
    at.selectbox(key="_w_intersections_ix_cell").set_value("gender = Male, race = Black")
    at = ok(at.run())
    assert "among people with gender = Male and race = Black" in texts(at)
    at.selectbox(key="_w_intersections_ix_cols").set_value("party")
    at.radio(key="_w_intersections_ix_color").set_value("mean")
    at = ok(at.run())
    assert "is not modelled as an intersection" in texts(at, "caption")
    assert len(at.dataframe[0].value) == 6


def test_compare_page_difference_of_two_groups(gaussian_fit):
    at = ok(page("app_pages/compare.py", hte_fit=gaussian_fit))
    body = texts(at)
    assert "for people with gender = Female (A) than for people with gender = Male (B)" in body
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="_w_compare_cmp_a_race").set_value("Black")
    at.selectbox(key="_w_compare_cmp_a_gender").set_value("Male")
    at.selectbox(key="_w_compare_cmp_b_gender").set_value("(anyone)")
    at = ok(at.run())
    assert "gender = Male and race = Black (A) than for everybody (B)" in texts(at)
    assert len(at.dataframe[0].value) == 2
    at.selectbox(key="_w_compare_cmp_b_gender").set_value("Male")
    at.selectbox(key="_w_compare_cmp_b_race").set_value("Black")
    at = ok(at.run())
    assert "The two groups are the same" in texts(at, "info")


def test_diagnostics_page_verdict_traces_and_predictive_check(gaussian_fit):
    at = ok(page("app_pages/diagnostics.py", hte_fit=gaussian_fit))
    verdict = texts(at, "success") + texts(at, "warning")
    assert "sampler" in verdict
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) >= {"Largest R-hat", "Smallest bulk ESS", "Divergent transitions"}
    params = at.multiselect(key="_w_diagnostics_trace_params").value
    assert params[0].startswith("tau") and "sigma_effect[gender × race]" in params
    assert len(at.get("plotly_chart")) == 2                   # traces and predictive check
    assert "cells" in texts(at)
    tables = {d.value.columns[0]: d.value for d in at.dataframe}
    assert "sigma_effect[gender × race]" in set(tables["parameter"]["parameter"])
    # every group effect shown on the result pages, with R-hat, ESS and the probabilities' MCSE
    effects = tables["Group"]
    assert len(effects) == 1 + 2 + 4 + 3 + 2 * 4
    assert effects["R-hat"].max() < 1.1 and (effects["bulk ESS"] > 0).all()
    assert "Monte Carlo standard error" in texts(at)
    assert "Attempt" not in tables                            # one attempt: no attempts table


def test_diagnostics_page_shows_every_attempt(gaussian_fit):
    d = gaussian_fit.diagnostics
    log = [{"attempt": 1, "target_accept": 0.8, "seed": 1, "divergences": 3,
            "tree_depth_hits": 0, "seconds": 2.0},
           {**d.attempts_log[0], "attempt": 2, "target_accept": 0.95, "seed": 7920}]
    retried = dataclasses.replace(gaussian_fit, diagnostics=dataclasses.replace(
        d, attempts=2, attempts_log=log, target_accept=0.95))
    at = ok(page("app_pages/diagnostics.py", hte_fit=retried))
    boxes = [b.value for b in [*at.success, *at.warning]]   # the verdict, the predictive check
    assert any(b.startswith("The first attempt met 3 divergent transitions at target "
                            "acceptance 0.8; the fit was repeated at 0.95") for b in boxes)
    assert "**The sampler ran 2 times.**" in texts(at)
    attempts = next(t.value for t in at.dataframe if "Attempt" in t.value.columns)
    assert list(attempts["Divergent transitions"]) == [3, d.divergences]
    assert list(attempts["Results shown"]) == [False, True]


def test_sidebar_status_once_fitted(gaussian_fit):
    at = ok(app(hte_fit=gaussian_fit))
    status = texts(at.sidebar)
    assert "**Model:** fitted by gender, race, party, gender × race" in status
    assert "Practically zero:** within ±0.1" in status


def test_extrapolated_groups_get_no_verdict_on_the_result_pages(extrapolated_fit):
    at = ok(page("app_pages/effects.py", hte_fit=extrapolated_fit))
    warning = texts(at, "warning")
    assert "2 groups are extrapolated" in warning and "region = E" in warning
    verdicts = at.dataframe[0].value.set_index("Group")["Verdict"]
    assert verdicts["region = E"] == "extrapolated — too few treated people (0 of 10 needed)"
    assert verdicts["region = D"] == "extrapolated — too few treated people (3 of 10 needed)"
    assert verdicts["region = A"] == "likely positive"
    called = next(m for m in texts(at).splitlines() if "Here the effect is" in m)
    assert "likely positive for region A, B, C;" in called     # not D or E

    at = ok(page("app_pages/intersections.py", hte_fit=extrapolated_fit))
    cell = at.selectbox(key="_w_intersections_ix_cell")
    assert not cell.value.startswith(("region = D", "region = E"))   # default: a cell with data
    cell.set_value("region = E, size = small")
    at = ok(at.run())
    assert "This cell is extrapolated: nobody was treated" in texts(at, "warning")
    assert "nobody was treated" in texts(at) and "chance" not in next(
        m.value for m in at.markdown if m.value.startswith("**Among"))

    at = ok(page("app_pages/compare.py", hte_fit=extrapolated_fit))
    at.selectbox(key="_w_compare_cmp_a_region").set_value("E")
    at.selectbox(key="_w_compare_cmp_b_region").set_value("A")
    at = ok(at.run())
    assert "No verdict on the difference" in texts(at)


# -- the fitting queue ----------------------------------------------------------------------------

def test_fits_take_turns_first_come_first_served_and_waiters_hear_their_place():
    import threading

    from ui.fitting import FitQueue

    queue = FitQueue(1)
    order, places, running, peak = [], {}, [0], [0]
    lock = threading.Lock()
    gate = threading.Event()

    def analyst(name: str) -> None:
        with queue.turn(lambda ahead: places.setdefault(name, []).append(ahead)):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(name)
            gate.wait(5) if name == "a" else time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = []
    for name in "abc":
        threads.append(threading.Thread(target=analyst, args=(name,)))
        threads[-1].start()
        time.sleep(0.3)  # a, then b, then c join the queue
    assert order == ["a"] and queue.running == 1
    gate.set()
    for t in threads:
        t.join(10)
    assert order == ["a", "b", "c"] and peak[0] == 1
    assert places["b"][0] == 1 and places["c"][0] == 2  # a running; a and b ahead of c
    assert "a" not in places  # nobody was ahead of a


def test_a_waiter_who_leaves_gives_up_its_place():
    import threading

    from ui.fitting import FitQueue

    queue = FitQueue(1)
    release = threading.Event()

    def hold() -> None:
        with queue.turn():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)

    class Left(BaseException):
        pass

    def leave(_ahead: int) -> None:
        raise Left  # as Streamlit's stop or rerun would, from the progress bar

    with pytest.raises(Left), queue.turn(leave):
        pass
    assert queue._waiting == []
    release.set()
    holder.join(5)
    with queue.turn(lambda ahead: pytest.fail("nobody is ahead")):
        assert queue.running == 1


def test_analyst_pages_escape_names_from_the_data_in_sentences(sample_table):
    """Outcome, factor and level names come from the user's file: sentences show them literally
    (Markdown escaped), never as links or formatting (issue 11)."""
    from conftest import FAST

    import hte

    evil = "[click](http://evil.example)"
    table = sample_table.rename(columns={"support": "support *now*"}).assign(
        gender=sample_table["gender"].replace({"Male": evil}))
    fit = hte.fit(table, outcome="support *now*", treatment="treatment", treated="treatment",
                  by=["gender", "race"], interactions=["gender:race"], **FAST)
    shown = []
    for path in ("app_pages/effects.py", "app_pages/intersections.py", "app_pages/compare.py"):
        at = ok(page(path, hte_fit=fit))
        shown.append(texts(at))
    everything = "\n".join(shown)
    assert "support \\*now\\*" in everything   # the outcome in the headline, escaped
    assert evil not in everything            # a level never becomes a live link
    assert "\\[click\\]" in shown[1] or "\\[click\\]" in shown[2]


def test_a_failing_page_shows_a_sentence_and_logs_the_traceback(caplog):
    """No traceback reaches a browser: Streamlit is told to show none, and app.py's page runner
    turns a bug into a sentence with a reference that is in the server's log (issue 11)."""
    import logging
    import tomllib

    from hte.errors import SpecError
    from ui import page as ui_page

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"

    shown = []

    class Failing:
        def __init__(self, error):
            self.error = error

        def run(self):
            raise self.error

    real = ui_page.st.error
    ui_page.st.error = lambda text, **_: shown.append(text)
    try:
        with caplog.at_level(logging.ERROR, logger="ui.page"):
            ui_page.run_page(Failing(KeyError("label")))
            ui_page.run_page(Failing(SpecError("Choose a factor.")))
    finally:
        ui_page.st.error = real
    reference = shown[0].split("**")[1]
    assert "Something went wrong" in shown[0] and len(reference) == 8
    assert shown[1] == "Choose a factor."            # a user's problem: its own sentence
    assert f"reference {reference}" in caplog.text and "KeyError" in caplog.text
