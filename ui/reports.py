"""Shared reports: the report store, report links, and what the Share page and the report view
show of a published snapshot.

:func:`report_store` is one :class:`hte.report_store.ReportStore` per storage URL for the whole
server (``HTE_REPORTS_URL`` from the app's secrets, else the environment, else the store's SQLite
default). Report links are ``<app address>/?report=<token>`` (:func:`report_link`); app.py sends
such a link to ``app_pages/report.py`` alone.
"""

from __future__ import annotations

import math
import os
import secrets
import urllib.parse
from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hte import plots
from hte.decisions import DecisionRule
from hte.report_store import ENV_URL, ReportStore, token_hash
from hte.reports import PlotTable, Snapshot
from hte.result import Fit

from .fitting import fit_token

#: The query parameter that opens a published report instead of the app.
REPORT_PARAM = "report"
_PUBLISHER = "hte_publisher"
#: The URL path of the Share page (app.py), stripped from the page's URL to build report links.
SHARE_PATH = "share"


# -- the store ------------------------------------------------------------------------------------

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
    """The published report behind ``token``; the store's one message for any token that does
    not work. Whether it was withdrawn or has expired is checked on every run; the snapshot
    itself is kept in memory by the store for a short while (``HTE_REPORT_CACHE_SECONDS``)."""
    return report_store().open(token)


@st.cache_resource(show_spinner=False, ttl=600, max_entries=512)
def _report_figure(report: str, part: str, args: tuple, _build: Callable[[], go.Figure]
                   ) -> go.Figure:
    return _build()


def report_figure(token: str, part: str, args: tuple, build: Callable[[], go.Figure]
                  ) -> go.Figure:
    """The figure ``build()`` makes, shared by every reader of the report behind ``token`` who
    asks for the same ``part`` with the same ``args`` (everything the figure depends on besides
    the report). Figures take most of a report view's time; readers of one report often choose
    the same δ. Keyed by the token's hash, so no figure can be served for another report.
    Streamlit does not change a figure it draws, so one object serves every session."""
    return _report_figure(token_hash(str(token)), part, args, build)


def publisher_id() -> str:
    """A random id of this browser session, which the store's publish rate limit counts by."""
    return st.session_state.setdefault(_PUBLISHER, secrets.token_hex(16))


# -- links ----------------------------------------------------------------------------------------

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


# -- what a report shows --------------------------------------------------------------------------

def report_effects(snapshot: Snapshot, rule: DecisionRule) -> pd.DataFrame:
    """Every published group's summary under ``rule``, from the stored draws."""
    return snapshot.effects(rule.threshold, rule.interval, rule.cutoff)


def report_heatmap(shown: PlotTable, mask: pd.Series, rows: str, cols: str, *, color: str,
                   rule: DecisionRule, binary: bool, min_cell: int) -> go.Figure:
    """:func:`hte.plots.heatmap` of one stored pair of factors (shown names). A combination
    missing from a report may have nobody in it or have been withheld: the report does not
    say which (that would reveal that a small group exists), and neither does its cell."""
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
                                   "Not in this report: nobody in the data, or fewer than "
                                   f"{min_cell:,} people in an arm<br>(or it would reveal "
                                   "such a group)")
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
        return (f"No group was withheld: every group has at least {min_cell:,} people in each "
                "arm (groups with fewer are never published).")
    groups = "1 group was" if withheld == 1 else f"{withheld:,} groups were"
    return (f"{groups} withheld for small-cell protection: groups with fewer than {min_cell:,} "
            "people in an arm, and groups whose numbers would let someone recompute those by "
            "sums and differences.")


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
