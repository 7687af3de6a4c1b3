"""The frame of a page: its header, notices that stop it when a step is missing, the sidebar
status, errors shown next to their control (and a sentence for any failure: :func:`run_page`),
and figures and tables with their downloads."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hte import plots
from hte.errors import HteError
from hte.result import Fit

from .decision import rule_of
from .fitting import current_fit
from .formatting import fmt_effect
from .state import PAGE, PAGES, LoadedTable, loaded, prefs

_log = logging.getLogger(__name__)


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


# -- errors, figures and tables -------------------------------------------------------------------

def run_page(chosen: Any) -> None:
    """Run the chosen page; a failure shows a sentence, never a traceback.

    A user's problem (:class:`hte.errors.HteError`) shows its message. Anything else is a bug:
    it is logged on the server with a short reference, and the page shows the reference, so
    whoever runs the server can find the traceback. Streamlit's own control flow (rerun, stop)
    is not an ``Exception`` and passes through.
    """
    try:
        chosen.run()
    except HteError as err:
        st.error(str(err), icon=":material/error:")
    except Exception:
        ref = secrets.token_hex(4)
        _log.exception("Page failed (reference %s)", ref)
        st.error("Something went wrong on this page, and it is not something you did. Try "
                 "again, or change the last choice you made; if it keeps happening, tell whoever "
                 f"runs this dashboard and give them the reference **{ref}**.",
                 icon=":material/error:")


def show_error(err: Exception, places: dict[str, Any], fallback: Any) -> None:
    """Show an engine error next to the control it is about.

    ``places`` maps a column name to the container under its control; the first column named in
    quotes in the message wins, else ``fallback``.
    """
    message = str(err)
    target = next((c for name, c in places.items() if f"'{name}'" in message), fallback)
    target.error(message, icon=":material/error:")


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
    st.download_button(label, data=lambda: plots.csv_bytes(table), file_name=f"{name}.csv",
                       mime="text/csv", key=key, icon=":material/download:", on_click="ignore")
