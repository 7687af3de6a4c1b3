"""Shared pieces of the dashboard pages: session state, cached engine calls, notices, downloads.

State that must outlive a page lives under three session-state keys:

- ``hte_data``: the loaded table (:class:`LoadedTable`: the rows, their name and a token);
- ``hte_prefs``: the user's choices (roles, model, decision rule) as a plain dict, so widgets can
  be dropped when the user leaves a page and come back with the same values (:func:`persistent`);
- ``hte_fit``: the fitted model shown on the result pages (a :class:`hte.result.Fit`).

Fits are cached for the whole server in :func:`fit_store`, keyed on the data fingerprint, the model
specification and the sampler settings: the same choices never refit, whichever page asks.
Effects are recomputed from the stored draws (cached per fit and decision rule), so changing the
threshold or the interval level is instant. Nothing here computes statistics: the engine does.

Shared reports: :func:`report_store` is one :class:`hte.report_store.ReportStore` per storage URL
for the whole server (``HTE_REPORTS_URL`` from the app's secrets, else the environment, else the
store's SQLite default). Report links are ``<app address>/?report=<token>`` (:func:`report_link`);
app.py sends such a link to ``pages/report.py`` alone. Text that came from users is escaped with
:func:`md` before Markdown renders it, and with :func:`hte.reports.plot_table` before Plotly does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hte import plots
from hte.data import (
    PreparedData,
    Roles,
    RoleSuggestion,
    as_text,
    prepare,
    read_table,
    suggest_roles,
)
from hte.decisions import MIN_ARM, SMALL_ARM, DecisionRule, verdict_text
from hte.report_store import ENV_URL, ReportStore
from hte.reports import PlotTable, Snapshot
from hte.result import Fit
from hte.spec import SamplerSettings

ROOT = Path(__file__).resolve().parent
SAMPLES = {
    "experiment.csv": "4,000 people; outcome 'support', a 0–10 attitude score",
    "experiment_binary.csv": "4,000 people; outcome 'donated', yes (1) or no (0)",
}
PAGES = {
    "data": "pages/data.py",
    "model": "pages/model.py",
    "effects": "pages/effects.py",
    "intersections": "pages/intersections.py",
    "compare": "pages/compare.py",
    "diagnostics": "pages/diagnostics.py",
    "share": "pages/share.py",
    "report": "pages/report.py",
}
#: The query parameter that opens a published report instead of the app.
REPORT_PARAM = "report"
#: The URL path of the Share page (app.py), stripped from the page's URL to build report links.
SHARE_PATH = "share"

DATA = "hte_data"
PREFS = "hte_prefs"
FIT = "hte_fit"
PAGE = "hte_page"   # the page being run (set by page_header), to scope widget keys
_MEMO = "hte_memo"
_WIDGET = "_w_"

INTERVALS = (0.5, 0.8, 0.9, 0.95, 0.99)
CUTOFFS = (0.75, 0.8, 0.9, 0.95, 0.99)
#: The Model page starts with the first this many candidate factors chosen.
DEFAULT_FACTORS = 8
#: The Model page's default prior strength.
DEFAULT_PRIOR = "moderate"
#: Fits kept in memory by the server-wide cache.
MAX_FITS = 12


# -- loaded data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedTable:
    """The table the user loaded: its rows, where it came from, and role suggestions."""

    frame: pd.DataFrame
    name: str
    token: str          # identifies the content for caching ("sample:<name>" or a hash)
    source: str         # "sample" or "upload"
    suggestion: RoleSuggestion


def loaded() -> LoadedTable | None:
    return st.session_state.get(DATA)


@st.cache_resource(show_spinner=False, max_entries=4)
def _read_sample(name: str) -> pd.DataFrame:
    return read_table(ROOT / "sample_data" / name)


def load_sample(name: str) -> LoadedTable:
    """Load a bundled sample and propose roles for it."""
    st.session_state.pop("hte_upload_error", None)
    return set_data(_read_sample(name), name, f"sample:{name}", "sample")


def load_upload(data: bytes | BinaryIO, name: str, token: str | None = None) -> LoadedTable:
    """Read an uploaded file (raises :class:`HteError` with a message for the user).

    ``token`` identifies the upload for caching (default: a hash of the bytes).
    """
    if token is None:
        raw = data if isinstance(data, bytes) else data.read()
        token, data = hashlib.sha256(raw).hexdigest(), raw
    return set_data(read_table(data, filename=name), name, token, "upload")


def set_data(frame: pd.DataFrame, name: str, token: str, source: str) -> LoadedTable:
    """Make ``frame`` the current table: reset the choices to fresh suggestions, drop the fit."""
    table = LoadedTable(frame=frame, name=name, token=token, source=source,
                        suggestion=suggest_roles(frame))
    st.session_state[DATA] = table
    st.session_state.pop(FIT, None)
    choices = roles_from_suggestion(table.suggestion)
    if choices["treatment"] and not choices["treated"]:
        choices["treated"] = guess_treated(treatment_levels(frame, choices["treatment"]))
    st.session_state[PREFS] = choices
    for key in [k for k in st.session_state if str(k).startswith(_WIDGET)]:
        del st.session_state[key]
    return table


def roles_from_suggestion(s: RoleSuggestion) -> dict:
    return {"outcome": s.outcome, "treatment": s.treatment, "treated": s.treated,
            "factors": list(s.factors), "bin_cols": [], "bins": {}}


def prefs() -> dict:
    """The user's choices that outlive a page (a plain dict in session state)."""
    if PREFS not in st.session_state:
        st.session_state[PREFS] = {}
    return st.session_state[PREFS]


def treatment_levels(frame: pd.DataFrame, column: str, limit: int = 50) -> list[str]:
    """The first ``limit`` distinct values of a column, as text (how the engine compares them)."""
    return list(as_text(frame[column].head(200_000)).dropna().unique()[:limit])


def guess_treated(levels: Sequence[str]) -> str | None:
    """A default treated level: a word that means treated, else the last level."""
    words = ("1", "treatment", "treated", "treat", "yes", "true", "intervention")
    for w in words:
        for lev in levels:
            if lev.casefold() == w:
                return lev
    return levels[-1] if levels else None


def roles(extra_factors: Sequence[str] | None = None, family: str = "auto") -> Roles:
    """:class:`Roles` from the saved choices; ``extra_factors`` replaces the candidate factors.

    Binned columns are cut into their number of groups wherever they are used as factors.
    """
    p = prefs()
    bin_cols = list(p.get("bin_cols") or [])
    if extra_factors is None:  # the candidates: chosen factors and binned columns
        factors = [*dict.fromkeys([*(p.get("factors") or []), *bin_cols])]
    else:
        factors = list(extra_factors)
    bins = {c: int(k) for c, k in (p.get("bins") or {}).items() if c in bin_cols}
    return Roles(outcome=p.get("outcome") or "", treatment=p.get("treatment") or "",
                 treated=str(p.get("treated") or ""), factors=tuple(factors), family=family,
                 bins=bins)


def prepared(table: LoadedTable, r: Roles) -> PreparedData:
    """:func:`hte.data.prepare`, remembered per session for the last few role choices."""
    key = (table.token, repr(r))
    memo: OrderedDict = st.session_state.setdefault(_MEMO, OrderedDict())
    if key in memo:
        memo.move_to_end(key)
        return memo[key]
    result = prepare(table.frame, r)
    memo[key] = result
    while len(memo) > 4:
        memo.popitem(last=False)
    return result


# -- widgets that remember their value across pages -----------------------------------------------

def widget_key(name: str) -> str:
    """The session-state key of the widget saving ``name`` on the current page.

    Keys differ per page: a widget Streamlit meets on a new page starts from its default unless
    seeded, and a key unique to the page is absent (hence seeded) whenever the page is entered.
    """
    return f"{_WIDGET}{st.session_state.get(PAGE, '')}_{name}"


def reset_widget(name: str) -> None:
    """Forget the widget's own state so it is seeded from :func:`prefs` on this run."""
    st.session_state.pop(widget_key(name), None)


def persistent(widget: Callable[..., Any], label: str, name: str, default: Any = None, *,
               options: Sequence[Any] | None = None, **kwargs: Any) -> Any:
    """Draw ``widget`` with a value saved in :func:`prefs` under ``name``.

    Streamlit forgets a widget's value when its page is left; this seeds the widget from the saved
    value and saves what the user picks. With ``options``, a saved value that is no longer an
    option (the data changed) falls back to ``default``.
    """
    p = prefs()
    wkey = widget_key(name)
    is_multi = widget in (st.multiselect, st.pills) and kwargs.get("selection_mode",
                                                                   "multi") == "multi"

    def valid(value: Any) -> bool:
        if options is None:
            return True
        if is_multi:
            return isinstance(value, list | tuple) and all(v in options for v in value)
        return value is None or value in options

    saved = p.get(name)
    if saved is None:
        saved = default
    if not valid(saved):
        saved = [v for v in saved if v in options] if is_multi else default
    if not valid(saved):
        saved = None
    if wkey not in st.session_state or not valid(st.session_state[wkey]):
        st.session_state[wkey] = list(saved) if is_multi and saved is not None else saved
    if options is not None:
        value = widget(label, options, key=wkey, **kwargs)
    else:
        value = widget(label, key=wkey, **kwargs)
    p[name] = value
    return value


# -- fitting --------------------------------------------------------------------------------------

class FitStore:
    """Fits by key (data fingerprint, spec, settings), most recent last, thread-safe."""

    def __init__(self, size: int = MAX_FITS) -> None:
        self.size = size
        self._fits: OrderedDict[str, Fit] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Fit | None:
        with self._lock:
            fit = self._fits.get(key)
            if fit is not None:
                self._fits.move_to_end(key)
            return fit

    def put(self, key: str, fit: Fit) -> None:
        with self._lock:
            self._fits[key] = fit
            self._fits.move_to_end(key)
            while len(self._fits) > self.size:
                self._fits.popitem(last=False)

    def __len__(self) -> int:
        return len(self._fits)


@st.cache_resource(show_spinner=False)
def fit_store() -> FitStore:
    """The server-wide fit cache (shared by all sessions)."""
    return FitStore()


def fit_key(data: PreparedData, interactions: Sequence[str], prior: str,
            settings: SamplerSettings) -> str:
    """The cache key of a fit: data fingerprint, model specification, sampler settings.

    Equal to :func:`fit_token` of the fit these choices produce.
    """
    from hte.api import model_spec

    spec = model_spec(data, interactions, prior)
    return "|".join([data.fingerprint, repr(spec), repr(settings)])


def fit_model(data: PreparedData, interactions: Sequence[str], prior: str,
              settings: SamplerSettings,
              progress: Callable[[float, str], None] | None = None) -> tuple[Fit, bool]:
    """The fit for these choices: from the cache, or run NUTS now. Returns (fit, was_cached)."""
    from hte.api import fit as run_fit

    key = fit_key(data, interactions, prior, settings)
    store = fit_store()
    cached = store.get(key)
    if cached is not None:
        return cached, True
    fit = run_fit(data, interactions=list(interactions), prior_strength=prior,
                  chains=settings.chains, warmup=settings.warmup, draws=settings.draws,
                  seed=settings.seed, target_accept=settings.target_accept, progress=progress)
    store.put(key, fit)
    return fit, False


class WarmUps:
    """Background compilations, one at a time in one thread, the latest request first.

    Choosing a model passes through intermediate choices (a factor removed, then another; a
    number typed digit by digit), each a request. Only the last one or two matter: at most
    ``pending`` requests wait, older ones are dropped (and may be requested again), and the
    newest is compiled next. Each key is compiled once per server.
    """

    def __init__(self, pending: int = 2) -> None:
        self.pending = pending
        self._waiting: OrderedDict[str, Callable[[], Any]] = OrderedDict()
        self._started: set[str] = set()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()

    def start(self, key: str, work: Callable[[], Any]) -> bool:
        """Queue ``work`` unless ``key`` was queued or run before. True if queued."""
        with self._cond:
            if key in self._started or key in self._waiting:
                return False
            self._waiting[key] = work
            while len(self._waiting) > self.pending:
                self._waiting.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="hte-warm-up")
                self._thread.start()
            self._cond.notify_all()
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._waiting))
                key, work = self._waiting.popitem(last=True)
                self._started.add(key)
                self._busy = True
            try:
                work()
            except Exception:  # a failed warm-up only means the fit compiles for itself
                logging.getLogger(__name__).warning("sampler warm-up failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running (tests, benchmarks). False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout)


@st.cache_resource(show_spinner=False)
def warm_ups() -> WarmUps:
    return WarmUps()


def warm_up(data: PreparedData, interactions: Sequence[str], prior: str,
            settings: SamplerSettings) -> bool:
    """Compile, in the background, the sampler a fit of these choices will use.

    Compiling takes 10-20 s on a small machine the first time a model shape is seen; started
    while the user reads the Model page, it is done (or well along) when they click Fit: the
    fit waits for it instead of compiling again. Keyed by what the compiled code depends on
    (family, factors' level counts, intersections, number of cells, chains, warm-up length,
    draws, target acceptance), so a new seed or outcome values do not start another. Set
    ``HTE_WARM_UP=off`` to disable. Returns True when a compilation was started.
    """
    if os.environ.get("HTE_WARM_UP", "on").lower() in {"off", "0", "false", "no"}:
        return False
    from hte.api import model_spec
    from hte.fitting import precompile_for

    spec = model_spec(data, interactions, prior)
    levels = tuple(len(data.cells.levels[f]) for f in spec.factors)
    shape = dataclasses.replace(settings, seed=0)
    key = "|".join([repr(spec.family), repr(spec.factors), repr(levels), repr(spec.interactions),
                    str(len(data.cells.cells)), repr(shape)])
    return warm_ups().start(key, lambda: precompile_for(data.cells, spec, shape))


def current_fit() -> Fit | None:
    return st.session_state.get(FIT)


def set_fit(fit: Fit) -> None:
    st.session_state[FIT] = fit
    st.session_state["hte_fit_time"] = time.time()


def fit_token(fit: Fit) -> str:
    """Identifies a fit's results: same data, spec and settings give the same draws."""
    return "|".join([str(fit.data_info.get("fingerprint", id(fit))), repr(fit.spec),
                     repr(fit.settings)])


# -- decision rule --------------------------------------------------------------------------------

def nice_round(x: float) -> float:
    """The nearest of 1, 2 or 5 times a power of ten (on a log scale)."""
    if not x > 0 or not math.isfinite(x):
        return 0.0
    exp = math.floor(math.log10(x))
    best = min((1, 2, 5, 10), key=lambda m: abs(math.log(x / (m * 10.0 ** exp))))
    return best * 10.0 ** exp


def outcome_sd(cells) -> float:
    """The outcome's standard deviation over everybody (in outcome units or probability)."""
    c = cells.cells
    if cells.family == "binary":
        p = float(c["successes"].sum() / c["n"].sum())
        return math.sqrt(p * (1 - p))
    from hte.fitting import outcome_scale

    return outcome_scale(cells)[1]


def default_threshold(cells) -> float:
    """A starting threshold: a twentieth of the outcome's sd, rounded (engine units)."""
    return nice_round(0.05 * outcome_sd(cells)) or 0.1


def _threshold_tag(outcome: str, binary: bool) -> str:
    return f"{outcome}|{binary}"


def threshold_input(outcome: str, binary: bool, default: float, *, help_text: bool = True,
                    label: str | None = None) -> float:
    """Number input for the practical-significance threshold; returns it in engine units.

    Shown in percentage points for binary outcomes. The value is shared by every page and reset
    to ``default`` (engine units) when the outcome or its type changes.
    """
    p = prefs()
    tag = _threshold_tag(outcome, binary)
    k = plots.unit_factor(binary)
    if p.get("threshold_for") != tag:
        p["threshold_for"] = tag
        p["threshold"] = round(default * k, 6)
        reset_widget("threshold")
    shown = p["threshold"] or default * k
    step = 0.5 if binary else float(nice_round(shown / 2) or 0.01)
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    unit = "percentage points" if binary else f"units of {outcome}"
    value = persistent(
        st.number_input, label or f"Practically zero: effects within ± this many {unit}",
        "threshold", p["threshold"], min_value=0.0, step=step, format=f"%.{decimals}f",
        help="δ, the smallest effect that would matter in practice. Effects between −δ and +δ "
             "count as practically zero." if help_text else None,
    )
    return float(value or 0.0) / k


def threshold_sentence(threshold: float, outcome: str, binary: bool) -> str:
    d = plots.format_effect(threshold, binary)
    if binary:
        change = f"a change of less than {d} in the chance that {outcome} is 1"
    else:
        change = f"a change of less than {d} in {outcome}"
    return (f"With δ = {d}, {change} (up or down) counts as **practically zero**: too small to "
            f"matter. Each effect then gets three chances that add up to 100%: above +{d}, "
            f"within ±{d}, and below −{d}.")


def rule_controls(fit: Fit) -> DecisionRule:
    """The decision-rule row of a result page: threshold, interval level, verdict cut-off."""
    return decision_controls(fit.spec.outcome, fit.binary, default_threshold(fit.cells))


def decision_controls(outcome: str, binary: bool, threshold: float, interval: float = 0.9,
                      cutoff: float = 0.9, min_arm: int = MIN_ARM) -> DecisionRule:
    """The decision-rule row: threshold, interval level, verdict cut-off (defaults as given;
    the threshold in engine units; ``min_arm`` is kept as given). Used by the result pages and
    the report view."""
    with st.container(border=True):
        c1, c2, c3 = st.columns([1.4, 1, 1])
        with c1:
            threshold = threshold_input(outcome, binary, threshold,
                                        label="Practically zero within ±"
                                              + (" (percentage points)" if binary else ""))
        with c2:
            interval = persistent(st.select_slider, "Credible interval", "interval",
                                  interval, options=sorted({*INTERVALS, float(interval)}),
                                  format_func=lambda v: f"{v:.0%}",
                                  help="The range that holds the effect with this probability.")
        with c3:
            cutoff = persistent(st.select_slider, "A verdict needs at least", "cutoff",
                                cutoff, options=sorted({*CUTOFFS, float(cutoff)}),
                                format_func=lambda v: f"{v:.0%}",
                                help="How sure the model must be before an effect is called "
                                     "likely positive, likely negative or practically zero; "
                                     "otherwise it is uncertain.")
    return DecisionRule(threshold=threshold, interval=float(interval), cutoff=float(cutoff),
                        min_arm=min_arm)


def rule_of(fit: Fit) -> DecisionRule:
    """The saved decision rule for ``fit`` without drawing controls (the sidebar uses it)."""
    p = prefs()
    k = plots.unit_factor(fit.binary)
    if p.get("threshold_for") == _threshold_tag(fit.spec.outcome, fit.binary):
        threshold = float(p.get("threshold") or 0.0) / k
    else:
        threshold = default_threshold(fit.cells)
    return DecisionRule(threshold, float(p.get("interval", 0.9)), float(p.get("cutoff", 0.9)))


# -- cached effects -------------------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=64)
def _effects(token: str, by: tuple[str, ...] | None, threshold: float, interval: float,
             cutoff: float, min_arm: int, _fit: Fit) -> pd.DataFrame:
    return _fit.effects(list(by) if by else None, threshold, interval, cutoff, min_arm=min_arm)


def effects(fit: Fit, by: Sequence[str] | str | None, rule: DecisionRule) -> pd.DataFrame:
    """:meth:`Fit.effects`, cached per fit and rule."""
    key = (by,) if isinstance(by, str) else (tuple(by) if by else None)
    return _effects(fit_token(fit), key, rule.threshold, rule.interval, rule.cutoff,
                    rule.min_arm, fit)


def effect_table(fit: Fit, rule: DecisionRule, pairs: Sequence[tuple[str, str]] = ()
                 ) -> pd.DataFrame:
    """Everyone, each level of each factor, then each combination of the given pairs."""
    parts = [effects(fit, None, rule), *(effects(fit, f, rule) for f in fit.factors),
             *(effects(fit, list(pair), rule) for pair in pairs)]
    return pd.concat(parts, ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=64)
def _draws(token: str, groups: tuple[tuple[tuple[str, str], ...], ...], _fit: Fit) -> np.ndarray:
    return _fit.effect_draws([dict(g) for g in groups])


def effect_draws(fit: Fit, groups: Sequence[dict]) -> np.ndarray:
    """Posterior draws (draws x groups) of each group's effect, cached per fit."""
    key = tuple(tuple(g.items()) for g in groups)
    return _draws(fit_token(fit), key, fit)


@st.cache_data(show_spinner=False, max_entries=8)
def _predictive_check(token: str, interval: float, _fit: Fit):
    from hte.checks import predictive_check

    return predictive_check(_fit, interval=interval)


def predictive_check(fit: Fit, interval: float = 0.9):
    """:func:`hte.checks.predictive_check` of ``fit``, cached per fit."""
    return _predictive_check(fit_token(fit), interval, fit)


def cell_check(fit: Fit, interval: float = 0.9) -> pd.DataFrame:
    return predictive_check(fit, interval).cells


def outcome_note(data: PreparedData) -> str | None:
    """How a mostly-zero or skewed continuous outcome is modelled, in words (None otherwise)."""
    from hte.cells import GAUSSIAN
    from hte.variance import outcome_note as note
    from hte.variance import outcome_shape

    if data.family != GAUSSIAN or data.frame is None:
        return None
    return note(outcome_shape(data.frame["_y"].to_numpy()), data.outcome)


def page_header(name: str, title: str, intro: str) -> None:
    """The page's title and a plain-words introduction; scopes the page's widget keys."""
    st.session_state[PAGE] = name
    st.title(title)
    st.markdown(intro)


# -- notices --------------------------------------------------------------------------------------

def need_data() -> LoadedTable:
    """The loaded table, or a notice linking to the Data page (and stop the page)."""
    table = loaded()
    if table is None:
        st.info("No data is loaded yet. Load your experiment's table, or try the bundled sample "
                "with one click, on the Data page.")
        st.page_link(PAGES["data"], label="Go to Data: load a table", icon=":material/upload:")
        st.stop()
    return table


def need_fit() -> Fit:
    """The fitted model, or a notice linking to the missing step (and stop the page)."""
    fit = current_fit()
    if fit is None:
        if loaded() is None:
            st.info("Nothing to show yet: first load a table (or the sample), then fit the "
                    "model. The results appear here.")
            st.page_link(PAGES["data"], label="Go to Data: load a table",
                         icon=":material/upload:")
        else:
            st.info("The data are loaded but no model is fitted yet. Choose the factors and "
                    "click **Fit the model** on the Model page; the results appear here.")
            st.page_link(PAGES["model"], label="Go to Model: fit the model",
                         icon=":material/tune:")
        st.stop()
    return fit


def need_factors(fit: Fit, count: int, why: str) -> None:
    """Stop the page with ``why`` and a link to the Model page unless the fit has ``count``
    factors or more."""
    if len(fit.factors) < count:
        st.info(why + " Choose factors on the Model page and fit again.")
        st.page_link(PAGES["model"], label="Go to Model", icon=":material/tune:")
        st.stop()


def diagnostics_notice(fit: Fit) -> None:
    """One line warning that the sampler showed problems, with a link to the details."""
    if not fit.diagnostics.ok:
        st.warning("The sampler showed warning signs, so read these results with caution. "
                   + " ".join(fit.diagnostics.advice()))
        st.page_link(PAGES["diagnostics"], label="See the diagnostics",
                     icon=":material/monitor_heart:")


# -- display --------------------------------------------------------------------------------------

def effect_columns(binary: bool, decimals: int) -> dict:
    """column_config for an effects table shown with :func:`display_effects`."""
    unit = " (pp)" if binary else ""
    num = st.column_config.NumberColumn
    fmt = f"%.{decimals}f"
    pct = "%.0f%%"
    return {
        "Group": st.column_config.TextColumn("Group", width="medium"),
        "n": num("n", format="%d", help="People in the group (both arms)"),
        "n treated": num("n treated", format="%d"),
        "n control": num("n control", format="%d"),
        "Raw estimate": num("Raw estimate" + unit, format=fmt,
                            help="Difference in means within the group alone, no pooling"),
        "Effect": num("Effect" + unit, format=fmt, help="Posterior mean (partially pooled)"),
        "Lower": num("Lower" + unit, format=fmt, help="Lower end of the credible interval"),
        "Upper": num("Upper" + unit, format=fmt, help="Upper end of the credible interval"),
        "P(> δ)": num("P(> δ)", format=pct, help="Chance the effect is above +δ"),
        "P(≈ 0)": num("P(≈ 0)", format=pct, help="Chance the effect is within ±δ"),
        "P(< −δ)": num("P(< −δ)", format=pct, help="Chance the effect is below −δ"),
        "Verdict": st.column_config.TextColumn(
            "Verdict",
            help="Extrapolated: too few treated or control people for a verdict, so the estimate "
                 f"is borrowed from other groups. Small arm: fewer than {SMALL_ARM} people in "
                 "an arm; the estimate leans on the other groups."),
    }


def display_effects(table: pd.DataFrame, binary: bool,
                    min_arm: int = MIN_ARM) -> tuple[pd.DataFrame, dict]:
    """An effects table for reading (display units, rounded by column_config) and its config.

    The verdict is in plain words, with an extrapolated group's or a small arm's counts
    (:func:`hte.decisions.verdict_text`)."""
    k = plots.unit_factor(binary)
    out = pd.DataFrame({
        "Group": table["label"],
        # second, so its plain words (an extrapolated group, a small arm) are never scrolled away
        "Verdict": [verdict_text(r, min_arm) for _, r in table.iterrows()],
        "n": table["n"], "n treated": table["n_treated"], "n control": table["n_control"],
        "Raw estimate": table["raw_mean"] * k,
        "Effect": table["mean"] * k, "Lower": table["lower"] * k, "Upper": table["upper"] * k,
        "P(> δ)": table["p_above"] * 100, "P(≈ 0)": table["p_practically_zero"] * 100,
        "P(< −δ)": table["p_below"] * 100,
    })
    decimals = plots.effect_decimals(table["mean"], binary)
    return out, effect_columns(binary, decimals)


def table_height(rows: int, limit: int = 25) -> int:
    """Pixels for a dataframe showing all of its rows (up to ``limit``, then it scrolls)."""
    return 38 + 35 * min(max(rows, 1), limit)


def show_figure(fig: go.Figure, name: str, *, key: str, **kwargs: Any) -> Any:
    """Draw a figure with a download button for it (interactive HTML)."""
    event = st.plotly_chart(fig, key=key, theme=None, config={"displaylogo": False}, **kwargs)
    st.download_button("Download figure (HTML)", data=lambda: plots.figure_html(fig),
                       file_name=f"{name}.html", mime="text/html", key=f"{key}_html",
                       icon=":material/download:", on_click="ignore")
    return event


def download_table(table: pd.DataFrame, name: str, *, key: str,
                   label: str = "Download table (CSV)") -> None:
    """A CSV download of ``table`` at full precision, safe to open in a spreadsheet."""
    st.download_button(label, data=plots.csv_bytes(table), file_name=f"{name}.csv",
                       mime="text/csv", key=key, icon=":material/download:", on_click="ignore")


def fmt_range(lower: float, upper: float, binary: bool, decimals: int | None = None) -> str:
    """'0.2 to 4.9 pp' (the unit once) or '0.119 to 0.268'."""
    k = plots.unit_factor(binary)
    if decimals is None:
        decimals = plots.effect_decimals([lower, upper], binary)
    text = (f"{plots.format_number(lower * k, decimals)} to "
            f"{plots.format_number(upper * k, decimals)}")
    return text + (" pp" if binary else "")


def headline(row, rule: DecisionRule, outcome: str, binary: bool, who: str = "") -> str:
    """:func:`hte.decisions.sentence` for a table row."""
    from hte.decisions import sentence

    return sentence(row, rule, outcome, binary, who=who)


def who(group: dict[str, str]) -> str:
    """'people with gender = Male and race = Black' for a sentence."""
    parts = [f"{k} = {v}" for k, v in group.items()]
    if not parts:
        return "everybody"
    return "people with " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1
                             else parts[0])


def md_who(group: dict[str, str]) -> str:
    """:func:`who` with the factor names and levels escaped for Markdown (:func:`md`)."""
    return who({md(k): md(v) for k, v in group.items()})


def parameter_labels(fit: Fit) -> dict[str, str]:
    """Readable names for the scale parameters: sigma_effect[0] -> sigma_effect[gender]."""
    terms = [" × ".join(t) for t in fit.spec.terms]
    out = {}
    for name in ("sigma_effect", "sigma_baseline"):
        arr = fit.draws.get(name)
        if arr is not None and arr.ndim == 3 and arr.shape[2] == len(terms):
            out |= {f"{name}[{k}]": f"{name}[{t}]" for k, t in enumerate(terms)}
    sigma = fit.draws.get("sigma")
    if sigma is not None and sigma.ndim == 3 and sigma.shape[2] == 2:  # residual sd per arm
        typical = " (typical over its groups)" if "sigma_group" in fit.draws else ""
        out |= {"sigma[0]": f"sigma[control]{typical}", "sigma[1]": f"sigma[treated]{typical}"}
    if "sigma_group" in fit.draws:
        from hte.variance import variance_groups

        groups = variance_groups(fit.cells)
        if groups.n_groups == fit.draws["sigma_group"].shape[2]:
            out |= {f"sigma_group[{g}]": f"sigma[{label}]"
                    for g, label in enumerate(groups.labels)}
    return out


def fmt_effect(value: float, binary: bool) -> str:
    return plots.format_effect(value, binary)


def fmt_prob(p: float, words: bool = False) -> str:
    """'94%'; at the ends '>99%' / '<1%', or 'more than 99%' / 'less than 1%' with ``words``."""
    text = plots.format_probability(p)
    if words:
        text = text.replace(">", "more than ").replace("<", "less than ")
    return text


# -- sidebar --------------------------------------------------------------------------------------

def sidebar_status() -> None:
    """What is loaded and fitted, in a few lines (drawn by app.py on every page)."""
    table = loaded()
    fit = current_fit()
    st.markdown("**Status**")
    if table is None:
        st.markdown(":grey[○] **Data:** nothing loaded yet")
    else:
        rows, cols = table.frame.shape
        st.markdown(f":green[●] **Data:** {table.name} — {rows:,} rows, {cols} columns")
        p = prefs()
        if p.get("outcome") and p.get("treatment"):
            st.markdown(f":green[●] **Roles:** outcome *{p['outcome']}*, treatment "
                        f"*{p['treatment']}* (treated = '{p.get('treated')}')")
    if fit is None:
        st.markdown(":grey[○] **Model:** not fitted yet")
    else:
        d = fit.diagnostics
        health = ":green[converged]" if d.ok else ":orange[warning signs]"
        factors = ", ".join(" × ".join(t) for t in fit.spec.terms) or "no factors"
        st.markdown(f":green[●] **Model:** fitted by {factors}; {d.chains} chains × {d.draws:,} "
                    f"draws in {fit.seconds_total:,.0f} s; sampler {health}")
        rule = rule_of(fit)
        st.markdown(f"**Practically zero:** within ±{fmt_effect(rule.threshold, fit.binary)}; "
                    f"{rule.interval:.0%} intervals")


# -- form helpers ---------------------------------------------------------------------------------

def show_error(err: Exception, places: dict[str, Any], fallback: Any) -> None:
    """Show an engine error next to the control it is about.

    ``places`` maps a column name to the container under its control; the first column named in
    quotes in the message wins, else ``fallback``.
    """
    message = str(err)
    target = next((c for name, c in places.items() if f"'{name}'" in message), fallback)
    target.error(message, icon=":material/error:")


def pair_sizes(data: PreparedData) -> dict[tuple[str, str], int]:
    """For each pair of factors, the fewest people in any combination of their levels."""
    import itertools

    cov = data.cells.covariate_cells()
    out = {}
    for a, b in itertools.combinations(data.factors, 2):
        counts = cov.groupby([a, b], observed=True)["n"].sum()
        combos = len(data.cells.levels[a]) * len(data.cells.levels[b])
        out[(a, b)] = int(counts.min()) if len(counts) == combos else 0
    return out


def group_row(fit: Fit, group: dict[str, str], rule: DecisionRule) -> pd.Series:
    """The effects-table row of one group (any combination of factor levels)."""
    by = [f for f in fit.factors if f in group]
    table = effects(fit, by or None, rule)
    mask = np.ones(len(table), dtype=bool)
    for f in by:
        mask &= (table[f].astype(str) == str(group[f])).to_numpy()
    if not mask.any():
        from hte.errors import SpecError

        raise SpecError(f"Nobody in the data is in the group "
                        f"{', '.join(f'{k} = {v}' for k, v in group.items())}.")
    return table[mask].iloc[0]


# -- text from users ------------------------------------------------------------------------------

_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")   # every ASCII punctuation character
_AUTOLINK = re.compile(r"(?i)(\b(?:https?|ftp|mailto|www)(?=[:.])|(?=@))")
_JOINER = "\u2060"   # WORD JOINER: invisible, but no URL or address runs across it


def md(text: Any) -> str:
    """``text`` for ``st.markdown`` (and titles, captions, alerts), shown literally.

    Every ASCII punctuation character is backslash-escaped (CommonMark shows an escaped one as
    itself), so ``**bold**``, ``<script>``, ``[link](...)``, ``$x$`` and ``:red[x]`` stay text.
    Bare URLs and e-mail addresses, which GitHub-flavoured Markdown turns into links after
    parsing (escapes do not stop it), get an invisible word joiner. Line breaks become spaces;
    for text with line breaks use ``st.text``.
    """
    flat = _AUTOLINK.sub(lambda m: m.group(0) + _JOINER, " ".join(str(text).split()))
    return _MARKDOWN.sub(r"\\\1", flat)


# -- shared reports -------------------------------------------------------------------------------

def reports_url() -> str | None:
    """Where reports are stored: ``HTE_REPORTS_URL`` from the app's secrets, else from the
    environment, else None (the store's default, a SQLite file under ``.hte/``)."""
    try:
        url = st.secrets.get(ENV_URL)
    except (FileNotFoundError, KeyError):   # no secrets file
        url = None
    url = str(url or "").strip() or os.environ.get(ENV_URL, "").strip()
    return url or None


@st.cache_resource(show_spinner=False)
def _report_store(url: str | None) -> ReportStore:
    return ReportStore(url)


def report_store() -> ReportStore:
    """The server's report store: one per storage URL, shared by every session.

    Raises :class:`hte.errors.ReportError` with a message for the user if it cannot be set up.
    """
    return _report_store(reports_url())


def open_report(token: Any) -> Snapshot:
    """The published report behind ``token`` (read on every run, so a withdrawn or expired
    report stops showing at once); the store's one message for any token that does not work."""
    return report_store().open(token)


def base_url(url: str | None, page_path: str = SHARE_PATH) -> str | None:
    """The app's address from the address of one of its pages (``.../share`` -> ``...``)."""
    if not url:
        return None
    url = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if page_path and url.endswith("/" + page_path):
        url = url[: -len(page_path) - 1]
    return url or None


def app_url() -> str | None:
    """The app's address as the browser sees it: from ``st.context.url``, else from the request
    headers (behind a proxy, ``X-Forwarded-Proto``/``-Host``), else None."""
    url = getattr(st.context, "url", None)
    if url:
        return base_url(url)
    headers = getattr(st.context, "headers", None) or {}
    host = headers.get("X-Forwarded-Host") or headers.get("Host")
    if not host:
        return None
    proto = headers.get("X-Forwarded-Proto") or (
        "https" if str(headers.get("Origin", "")).startswith("https:") else "http")
    prefix = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"{proto.split(',')[0].strip()}://{host.split(',')[0].strip()}" + (
        f"/{prefix}" if prefix else "")


def report_query(token: str) -> str:
    return f"?{urllib.parse.urlencode({REPORT_PARAM: token})}"


def report_link(token: str) -> str | None:
    """The full link of a report (``<app>/?report=<token>``), or None if the app's address is
    unknown (then show :func:`report_query`, to add to the dashboard's address)."""
    base = app_url()
    return f"{base}/{report_query(token)}" if base else None


def token_from_link(text: str) -> str:
    """The token in a pasted report link (or the text itself, if it is a bare token)."""
    text = (text or "").strip()
    if f"{REPORT_PARAM}=" in text:
        parts = urllib.parse.urlsplit(text)
        for query in (parts.query, text.split("?", 1)[-1]):
            values = urllib.parse.parse_qs(query).get(REPORT_PARAM)
            if values:
                return values[-1].strip()
    return text


def report_effects(snapshot: Snapshot, rule: DecisionRule) -> pd.DataFrame:
    """Every published group's summary under ``rule``, from the stored draws."""
    return snapshot.effects(rule.threshold, rule.interval, rule.cutoff)


def report_heatmap(shown: PlotTable, mask: pd.Series, rows: str, cols: str, *, color: str,
                   rule: DecisionRule, binary: bool, min_cell: int) -> go.Figure:
    """:func:`hte.plots.heatmap` of one stored pair of factors (shown names). A combination
    missing from a report was withheld, not empty, so its cell says so."""
    fig = plots.heatmap(shown.table.loc[mask], rows, cols, levels=shown.levels, color=color,
                        threshold=rule.threshold, binary=binary, outcome=shown.outcome,
                        interval=rule.interval)
    cells = fig.data[0]
    if cells.z is not None:
        r_levels, c_levels = shown.levels[rows], shown.levels[cols]
        part = shown.table.loc[mask]
        published = {(str(a), str(b)) for a, b in zip(part[rows], part[cols], strict=True)}
        text = [list(r) for r in cells.text]
        hover = [list(r) for r in cells.hovertext]
        for i, row in enumerate(cells.z):
            for j, _ in enumerate(row):
                if (str(r_levels[i]), str(c_levels[j])) not in published:
                    text[i][j] = "not shown"
                    hover[i][j] = (f"<b>{rows} = {r_levels[i]}, {cols} = {c_levels[j]}</b><br>"
                                   f"Not published: fewer than {min_cell:,} people, or it "
                                   "would reveal such a group")
        fig.update_traces(text=text, hovertext=hover, selector={"type": "heatmap"})
    return fig


def report_expiry(snapshot: Snapshot) -> str:
    stamp = f"Published {snapshot.created:%Y-%m-%d %H:%M} UTC"
    if snapshot.expires:
        stamp += f"; the link works until {snapshot.expires:%Y-%m-%d %H:%M} UTC"
    return stamp


def withheld_sentence(withheld: int, min_cell: int) -> str:
    """How many groups small-cell protection left out, in words."""
    if not withheld:
        return (f"No group was withheld: every group has at least {min_cell:,} people (groups "
                "with fewer are never published).")
    groups = "1 group was" if withheld == 1 else f"{withheld:,} groups were"
    return (f"{groups} withheld for small-cell protection: groups with fewer than {min_cell:,} "
            "people, and groups whose numbers would reveal them by subtraction.")


def plot_escape(text: Any, limit: int | None = None) -> str:
    """A user string for Plotly text (titles, legend entries): shortened, HTML-escaped."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


@st.cache_data(show_spinner=False, max_entries=32)
def _withheld_preview(token: str, min_cell: int, _fit: Fit) -> tuple[int, int]:
    snapshot = Snapshot.from_fit(_fit, min_cell=min_cell, max_draws=10)
    return snapshot.withheld, snapshot.withheld + len(snapshot.groups)


def withheld_preview(fit: Fit, min_cell: int) -> tuple[int, int]:
    """(groups withheld, groups in all) if ``fit`` were published with this ``min_cell``.

    Raises :class:`hte.errors.ReportError` if nothing could be published.
    """
    return _withheld_preview(fit_token(fit), int(min_cell), fit)


def present(value: Any) -> bool:
    """Whether a group's level for a factor is set (None or NaN: the group spans the factor)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))
