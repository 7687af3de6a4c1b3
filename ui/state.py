"""What a session holds: the loaded table, the user's choices, and widgets that remember them.

State that must outlive a page lives under three session-state keys:

- ``hte_data`` (:data:`DATA`): the loaded table (:class:`LoadedTable`: the rows, their name and
  a token);
- ``hte_prefs`` (:data:`PREFS`): the user's choices (roles, model, decision rule) as a plain
  dict, so widgets can be dropped when the user leaves a page and come back with the same values
  (:func:`persistent`);
- ``hte_fit`` (:data:`FIT`): the fitted model shown on the result pages (a
  :class:`hte.result.Fit`; read and set through :mod:`ui.fitting`).

Also here: where the bundled samples and the page files are (:data:`SAMPLES`, :data:`PAGES`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import streamlit as st

from hte.data import (
    RESULT_NAMES,
    PreparedData,
    Roles,
    RoleSuggestion,
    as_text,
    prepare,
    read_table,
    rename_reserved,
    suggest_roles,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "experiment.csv": "4,000 people; outcome 'support', a 0–10 attitude score",
    "experiment_binary.csv": "4,000 people; outcome 'donated', yes (1) or no (0)",
}
PAGES = {
    "data": "app_pages/data.py",
    "model": "app_pages/model.py",
    "effects": "app_pages/effects.py",
    "intersections": "app_pages/intersections.py",
    "compare": "app_pages/compare.py",
    "diagnostics": "app_pages/diagnostics.py",
    "share": "app_pages/share.py",
    "report": "app_pages/report.py",
}
#: Every address a page of the app answers at (file names, and the Share page's url_path).
PAGE_PATHS = tuple(PAGES)
DATA = "hte_data"
PREFS = "hte_prefs"
FIT = "hte_fit"
PAGE = "hte_page"   # the page being run (set by ui.page.page_header), to scope widget keys
_MEMO = "hte_memo"
_WIDGET = "_w_"


# -- loaded data and the user's choices -----------------------------------------------------------

@dataclass(frozen=True)
class LoadedTable:
    """The table the user loaded: its rows, where it came from, and role suggestions."""

    frame: pd.DataFrame
    name: str
    token: str          # identifies the content for caching ("sample:<name>" or a hash)
    source: str         # "sample" or "upload"
    suggestion: RoleSuggestion
    renamed: dict[str, str] = field(default_factory=dict)  # old -> new column name


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


def release_upload(upload: Any) -> bool:
    """Drop an uploaded file's bytes from the server's memory once its table is read.

    Streamlit keeps every upload in memory for the whole session (up to ``server.maxUploadSize``
    each); the session needs only the table read from it. Uses the uploaded-file manager of the
    script's context (``remove_file``, as Streamlit's own chat input does); returns whether the
    file was released (False if this Streamlit has no such call: the file then stays until the
    session ends).
    """
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)
    except (AttributeError, TypeError):
        return False
    return True


def set_data(frame: pd.DataFrame, name: str, token: str, source: str) -> LoadedTable:
    """Make ``frame`` the current table: reset the choices to fresh suggestions, drop the fit.

    Columns named like a column of the results (``label``, ``by``, ``verdict``...) are renamed
    (``label_group``...; :func:`hte.data.rename_reserved`) and listed in ``renamed``.
    """
    frame, renamed = rename_reserved(frame, [c for c in frame.columns if c in RESULT_NAMES])
    table = LoadedTable(frame=frame, name=name, token=token, source=source,
                        suggestion=suggest_roles(frame), renamed=renamed)
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
