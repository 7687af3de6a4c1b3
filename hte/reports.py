"""Shareable read-only reports: an immutable snapshot of a fit, and its HTML and CSV exports.

A :class:`Snapshot` holds what a report view needs and nothing about individual people: the model
(formula, family, roles, factors), the data's fingerprint and counts, the sampler diagnostics, one
row per published group (its size per arm and the raw difference in means) and thinned joint
posterior draws of every published group's effect. Summaries for any threshold, interval level
and cut-off are recomputed from those draws (:meth:`Snapshot.effects`, :meth:`Snapshot.contrast`)
the same way :class:`hte.result.Fit` computes them from the full posterior.

Small-cell protection (:mod:`hte.disclosure`). A group with fewer than ``min_cell`` (k, default
10) treated people or fewer than k control people is withheld: its row, its level names and its
draws are not stored. So are complementary groups, chosen first by the usual cell-suppression
rule along each partition of a group by one more factor, then by an exact check: a group's
counts and people-weighted effect draws are linear sums over the model's finest cells, and more
groups are withheld until no withheld group's membership over those cells (the cells with
treated people, and the cells with control people) is a linear combination of the published
groups'. Guaranteed: every published group has at least k people in each arm, and no withheld
group's counts, raw difference or effect draws are a fixed combination (sums and differences)
of the published ones, whatever the cells hold. Not guaranteed: the cells' effects are tied
together by the model (where it leaves out an interaction, a cell's effect is a sum of terms
shared with other cells), so someone who knows the formula can use the joint draws to solve for
withheld cell sizes; the posterior of published groups depends on a small group's outcomes
through the model's pooling (inference from the model, not disclosure of the group's numbers);
sums of several withheld groups are only checked where they make up the withheld part of a
published group; and there is no integer or linear-programming audit of the counts' bounds. Raw
differences in means are also withheld where an arm has fewer than k people (under the rule
above, no published group has).

Exports: :func:`report_html` writes one self-contained HTML file (Plotly inlined, opens offline;
every user-provided string escaped) and :func:`report_csv` the summary table, with spreadsheet
formulas neutralized (:func:`safe_csv`). Storage and links live in :mod:`hte.report_store`.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hte.decisions import (
    EXTRAPOLATED,
    LIKELY_NEGATIVE,
    LIKELY_POSITIVE,
    MIN_ARM,
    PRACTICALLY_ZERO,
    SMALL_ARM,
    UNCERTAIN,
    DecisionRule,
    sentence,
    summarize,
    verdict_text,
)
from hte.disclosure import membership_matrix, withheld_groups
from hte.effects import group_label
from hte.errors import ReportError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hte.result import Fit

#: Version of the snapshot payload (:meth:`Snapshot.to_payload`).
PAYLOAD_FORMAT = 1
#: Groups with fewer people than this are withheld from published reports.
MIN_CELL = 10
#: At most this many posterior draws are kept per group.
MAX_DRAWS = 1000
#: Draws are thinned further so draws x groups stays below this (4 bytes each)...
MAX_VALUES = 5_000_000
#: ...but never below this many draws.
MIN_DRAWS = 200
MAX_TITLE = 300
MAX_NOTE = 20_000
EVERYONE = "Everyone"

#: Columns of :meth:`Snapshot.effects` after the factor columns (as in ``Fit.effects``).
EFFECT_COLUMNS = ["n", "n_treated", "n_control", "mean", "median", "sd", "lower", "upper",
                  "p_above", "p_practically_zero", "p_below", "verdict", "extrapolated",
                  "small_arm", "raw_mean", "raw_se"]
_COUNTS = ["n", "n_treated", "n_control"]
_RAW = ["raw_mean", "raw_se"]
#: What a snapshot keeps of ``Fit.data_info``; anything else a fit records is left behind.
_DATA_KEYS = ("fingerprint", "n_input_rows", "n_used", "dropped", "columns_used", "treatment",
              "success")


# --------------------------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything a report view needs; no person-level rows.

    ``groups`` has one row per published group: ``by`` (e.g. "gender × race", or "Everyone"),
    ``label``, one column per factor (the group's level, or None), ``n``, ``n_treated``,
    ``n_control``, ``raw_mean``, ``raw_se``. ``draws`` is (draws x groups), float32, the joint
    posterior draws of the groups' effects in ``groups`` order. ``threshold``, ``interval``,
    ``cutoff`` and ``min_arm`` are the analyst's choices at publishing, the defaults of the view;
    the flags ``extrapolated`` and ``small_arm`` are recomputed from the stored people per arm with
    the same rule as :meth:`hte.result.Fit.effects`.
    """

    title: str
    note: str
    created: datetime
    expires: datetime | None
    formula: str
    family: str
    outcome: str
    treated: str
    control: str
    factors: tuple[str, ...]
    data: dict[str, Any]
    diagnostics: dict[str, Any]
    groups: pd.DataFrame
    draws: np.ndarray
    min_cell: int = MIN_CELL
    withheld: int = 0
    threshold: float = 0.0
    interval: float = 0.9
    cutoff: float = 0.9
    min_arm: int = MIN_ARM

    def __post_init__(self) -> None:
        draws = np.array(self.draws, dtype=np.float32)  # a private, read-only copy
        if draws.ndim != 2 or draws.shape[1] != len(self.groups) or draws.shape[0] < 1:
            raise ReportError("The report's draws do not match its groups.")
        draws.flags.writeable = False
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "factors", tuple(self.factors))

    # -- building --------------------------------------------------------------------------
    @classmethod
    def from_fit(cls, fit: Fit, *, title: str = "", note: str = "", min_cell: int = MIN_CELL,
                 max_draws: int = MAX_DRAWS, expires: datetime | date | None = None,
                 threshold: float = 0.0, interval: float = 0.9, cutoff: float = 0.9,
                 pairs: bool = True, min_arm: int = MIN_ARM) -> Snapshot:
        """The report of ``fit``: everyone, each factor level and (``pairs``) each pair of factors.

        Groups with fewer than ``min_cell`` treated or control people, and the complementary
        groups that would give them away, are left out (:func:`hte.disclosure.withheld_groups`).
        At most ``max_draws`` draws are kept, evenly spaced over the chains. ``expires`` is a
        time (naive means UTC) or a date (the link works until the end of that day, UTC).
        """
        rule = DecisionRule(threshold, interval, cutoff, min_arm)  # validates, user's message
        title, note = _clean_text(title, "title", MAX_TITLE), _clean_text(note, "note", MAX_NOTE)
        if isinstance(min_cell, bool) or not isinstance(min_cell, int | np.integer) \
                or min_cell < 1:
            raise ReportError("The smallest group size to publish must be a whole number of at "
                              "least 1, such as 10.")
        if isinstance(max_draws, bool) or not isinstance(max_draws, int | np.integer) \
                or max_draws < 10:
            raise ReportError("Keep at least 10 draws in a report (the default is 1000).")
        expiry = as_expiry(expires)
        now = datetime.now(UTC)
        if expiry is not None and expiry <= now:
            raise ReportError("The expiry date has already passed. Choose a later date, or none.")

        factors = tuple(fit.factors)
        groupings: list[tuple[str, ...]] = [(), *((f,) for f in factors)]
        if pairs:
            groupings += list(itertools.combinations(factors, 2))
        keys: list[dict[str, str]] = []
        rows: list[pd.DataFrame] = []
        for by in groupings:
            table = fit.effects(by or None)  # one row per fit.groups(by), in that order
            keys += [dict(g) for g in fit.groups(by)]
            rows.append(table[["by", "label", *factors, *_COUNTS, *_RAW]])
        head = pd.concat(rows, ignore_index=True)
        if int(head["n"].iloc[0]) < min_cell:
            raise ReportError(f"The data hold fewer than {min_cell} people, so nothing can be "
                              "published without singling someone out.")
        for arm, col in ((fit.spec.treated, "n_treated"), (fit.spec.control, "n_control")):
            if int(head[col].iloc[0]) < min_cell:
                raise ReportError(
                    f"Only {int(head[col].iloc[0]):,} people in the data are in the '{arm}' arm. "
                    f"A report shows only groups with at least {min_cell} people in each arm, so "
                    "nothing can be published without singling someone out.")
        cells = fit.covariate
        membership = membership_matrix(keys, cells)
        if not ((membership @ cells["n_treated"].to_numpy() == head["n_treated"].to_numpy()).all()
                and (membership @ cells["n_control"].to_numpy()
                     == head["n_control"].to_numpy()).all()):
            raise ReportError("The report's groups do not add up over the data's cells, so it "
                              "cannot be checked for small groups and is not published.")
        hidden = withheld_groups(keys, membership, cells["n_treated"], cells["n_control"],
                                 min_cell)
        if hidden[0]:
            raise ReportError("Publishing the effect on everyone would reveal a small group, so "
                              "nothing can be published. Try a smaller 'smallest group' size.")
        kept = [k for k, h in zip(keys, hidden, strict=True) if not h]
        groups = head.loc[~hidden].reset_index(drop=True)
        small_arm = (groups["n_treated"] < min_cell) | (groups["n_control"] < min_cell)
        groups.loc[small_arm, _RAW] = np.nan
        draws = fit.effect_draws(kept)
        keep = min(max_draws, max(MIN_DRAWS, MAX_VALUES // max(len(kept), 1)))
        draws = draws[thin_index(draws.shape[0], keep)]
        data = {k: fit.data_info[k] for k in _DATA_KEYS if k in fit.data_info}
        return cls(
            title=title, note=note, created=now.replace(microsecond=0), expires=expiry,
            formula=fit.formula, family=fit.family, outcome=fit.spec.outcome,
            treated=fit.spec.treated, control=fit.spec.control, factors=factors,
            data=json.loads(json.dumps(data)), diagnostics=_public(fit.diagnostics),
            groups=groups, draws=draws, min_cell=int(min_cell), withheld=int(hidden.sum()),
            threshold=float(threshold), interval=float(interval), cutoff=float(cutoff),
            min_arm=rule.min_arm,
        )

    # -- reading ---------------------------------------------------------------------------
    @property
    def binary(self) -> bool:
        return self.family == "binary"

    @property
    def n_draws(self) -> int:
        return int(self.draws.shape[0])

    @property
    def groupings(self) -> list[str]:
        """The ``by`` values present, in report order ("Everyone", "gender", "gender × race"...)."""
        return list(dict.fromkeys(self.groups["by"]))

    def rule(self, threshold: float | None = None, interval: float | None = None,
             cutoff: float | None = None) -> DecisionRule:
        """The decision rule, with the analyst's published choices as defaults (``min_arm`` is
        always the analyst's)."""
        return DecisionRule(self.threshold if threshold is None else float(threshold),
                            self.interval if interval is None else float(interval),
                            self.cutoff if cutoff is None else float(cutoff), self.min_arm)

    @cached_property
    def _members(self) -> list[frozenset[tuple[str, str]]]:
        levels = self.groups[list(self.factors)]
        return [frozenset((f, str(v)) for f, v in zip(self.factors, row, strict=True)
                          if v is not None and not (isinstance(v, float) and np.isnan(v)))
                for row in levels.itertuples(index=False, name=None)]

    def _rows(self, by: str | Sequence[str] | None) -> list[int]:
        if by is None:
            return list(range(len(self.groups)))
        if isinstance(by, str):
            if by in self.factors:
                wanted = {by}
            elif by in set(self.groups["by"]):
                return [i for i, b in enumerate(self.groups["by"]) if b == by]
            else:
                raise ReportError(f"'{by}' is not a grouping in this report. Choose one of: "
                                  f"{', '.join(self.groupings)}.")
        else:
            wanted = set(by)
            unknown = sorted(wanted - set(self.factors))
            if unknown:
                raise ReportError(f"'{unknown[0]}' is not one of the report's factors "
                                  f"({', '.join(self.factors) or 'none'}).")
        return [i for i, m in enumerate(self._members) if {f for f, _ in m} == wanted]

    def index_of(self, group: str | Mapping[str, str]) -> int:
        """Row of ``group`` (a label such as "gender = Female", or ``{"gender": "Female"}``)."""
        if isinstance(group, Mapping):
            want = frozenset((str(f), str(v)) for f, v in group.items())
            hits = [i for i, m in enumerate(self._members) if m == want]
            shown = group_label({str(f): str(v) for f, v in group.items()})
        else:
            hits = [i for i, lab in enumerate(self.groups["label"]) if lab == group]
            shown = str(group)
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise ReportError(f"More than one group is called '{shown}'; choose it by its "
                              "factor levels instead.")
        raise ReportError(f"There is no group '{shown}' in this report. Groups with fewer than "
                          f"{self.min_cell} people in an arm are not published.")

    def draws_of(self, group: str | Mapping[str, str]) -> np.ndarray:
        """The stored effect draws of one group."""
        return self.draws[:, self.index_of(group)]

    def effects(self, threshold: float | None = None, interval: float | None = None,
                cutoff: float | None = None,
                by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The summary table, recomputed from the stored draws; columns as ``Fit.effects``.

        ``by=None`` gives every published group; a factor name, a list of factors (``[]`` for
        everyone) or a ``by`` value such as "gender × race" gives that grouping only.
        """
        rule = self.rule(threshold, interval, cutoff)
        rows = self._rows(by)
        head = self.groups.iloc[rows].reset_index(drop=True)
        head = head[["by", "label", *self.factors, *_COUNTS]]
        if rows:
            summary = summarize(self.draws[:, rows], rule, head["n_treated"], head["n_control"])
        else:
            summary = pd.DataFrame({c: pd.Series(dtype=float) for c in EFFECT_COLUMNS[3:-5]})
            summary["verdict"] = pd.Series(dtype=str)
            for c in ("extrapolated", "small_arm"):
                summary[c] = pd.Series(dtype=bool)
        out = pd.concat([head, summary], axis=1)
        for col in _RAW:
            out[col] = self.groups[col].to_numpy()[rows]
        return out[["by", "label", *self.factors, *EFFECT_COLUMNS]]

    def contrast(self, a: str | Mapping[str, str], b: str | Mapping[str, str],
                 threshold: float | None = None, interval: float | None = None,
                 cutoff: float | None = None) -> tuple[dict[str, Any], np.ndarray]:
        """Posterior of effect(a) - effect(b), draw by draw from the stored joint draws.

        Returns the summary (as :func:`hte.decisions.summarize`, plus the labels ``a``, ``b``)
        and the draws of the difference, like :meth:`hte.result.Fit.contrast`.
        """
        from hte.result import contrast_row

        i, j = self.index_of(a), self.index_of(b)
        diff = self.draws[:, i].astype(np.float64) - self.draws[:, j].astype(np.float64)
        counts = [(int(self.groups["n_treated"].iloc[k]), int(self.groups["n_control"].iloc[k]))
                  for k in (i, j)]
        row = contrast_row(diff, self.rule(threshold, interval, cutoff), counts,
                           str(self.groups["label"].iloc[i]), str(self.groups["label"].iloc[j]))
        return row, diff

    # -- serialization ---------------------------------------------------------------------
    def to_payload(self) -> tuple[dict[str, Any], bytes]:
        """JSON-ready metadata (strings, settings) and the compressed arrays (``.npz`` bytes)."""
        levels = self.groups[list(self.factors)].astype(object)
        meta = {
            "format": PAYLOAD_FORMAT, "title": self.title, "note": self.note,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "formula": self.formula, "family": self.family, "outcome": self.outcome,
            "treated": self.treated, "control": self.control, "factors": list(self.factors),
            "data": self.data, "diagnostics": self.diagnostics, "min_cell": self.min_cell,
            "withheld": self.withheld, "threshold": self.threshold, "interval": self.interval,
            "cutoff": self.cutoff, "min_arm": self.min_arm,
            "groups": {
                "by": [str(x) for x in self.groups["by"]],
                "label": [str(x) for x in self.groups["label"]],
                "levels": [[None if _missing(v) else str(v) for v in row]
                           for row in levels.itertuples(index=False, name=None)],
            },
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf, draws=self.draws,
            **{c: self.groups[c].to_numpy(dtype=np.int64) for c in _COUNTS},
            **{c: self.groups[c].to_numpy(dtype=np.float64) for c in _RAW},
        )
        return meta, buf.getvalue()

    @classmethod
    def from_payload(cls, meta: Mapping[str, Any], blob: bytes) -> Snapshot:
        """The snapshot written by :meth:`to_payload`; :class:`ReportError` if it is damaged."""
        try:
            if meta.get("format") != PAYLOAD_FORMAT:
                raise ValueError(f"payload format {meta.get('format')!r}")
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("draws", *_COUNTS, *_RAW)}
            factors = tuple(str(f) for f in meta["factors"])
            g = meta["groups"]
            head = pd.DataFrame([list(row) for row in g["levels"]], columns=list(factors),
                                index=range(len(g["by"])), dtype=object)
            head.insert(0, "label", [str(x) for x in g["label"]])
            head.insert(0, "by", [str(x) for x in g["by"]])
            for c in (*_COUNTS, *_RAW):
                if arrays[c].shape != (len(head),):
                    raise ValueError(f"column {c} has the wrong length")
                head[c] = arrays[c]
            expires = meta.get("expires")
            return cls(
                title=str(meta["title"]), note=str(meta["note"]),
                created=datetime.fromisoformat(meta["created"]),
                expires=datetime.fromisoformat(expires) if expires else None,
                formula=str(meta["formula"]), family=str(meta["family"]),
                outcome=str(meta["outcome"]), treated=str(meta["treated"]),
                control=str(meta["control"]), factors=factors, data=dict(meta["data"]),
                diagnostics=dict(meta["diagnostics"]), groups=head, draws=arrays["draws"],
                min_cell=int(meta["min_cell"]), withheld=int(meta["withheld"]),
                threshold=float(meta["threshold"]), interval=float(meta["interval"]),
                cutoff=float(meta["cutoff"]), min_arm=int(meta.get("min_arm", MIN_ARM)),
            )
        except ReportError:
            raise
        except (KeyError, TypeError, ValueError, OSError, AttributeError,
                zipfile.BadZipFile) as err:
            raise ReportError("The stored report is damaged and cannot be shown.") from err


def _public(diagnostics: Any) -> dict[str, Any]:
    """The diagnostics to publish: without the names of the worst group effects, which may
    name a group the report withholds."""
    return {k: v for k, v in diagnostics.to_dict().items() if k != "effects_worst"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _clean_text(value: Any, what: str, limit: int) -> str:
    text = "" if value is None else str(value).strip()
    if len(text) > limit:
        raise ReportError(f"The {what} is too long ({len(text):,} characters); keep it under "
                          f"{limit:,}.")
    return text


def as_expiry(value: datetime | date | None) -> datetime | None:
    """An expiry as an aware UTC time; a date means the end of that day (UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value + timedelta(days=1), time(0), tzinfo=UTC)
    raise ReportError("The expiry must be a date or a time, or nothing for a link that does "
                      "not expire.")


def thin_index(total: int, keep: int) -> np.ndarray:
    """At most ``keep`` indices of ``range(total)``, evenly spaced (all of them if fewer)."""
    if total <= keep:
        return np.arange(total)
    return np.floor(np.arange(keep) * (total / keep)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

VERDICT_COLORS = {LIKELY_POSITIVE: "#1a7f37", PRACTICALLY_ZERO: "#3b6bb5",
                  LIKELY_NEGATIVE: "#c62828", UNCERTAIN: "#8a8a8a", EXTRAPOLATED: "#c8c8c8"}
_PLOT_LABEL = 60


def plot_text(text: Any, limit: int | None = None) -> str:
    """A user string for Plotly text: shortened to ``limit`` characters, then HTML-escaped.

    Plotly renders a subset of HTML in labels, so user strings are escaped to show literally.
    """
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


def forest_figure(table: pd.DataFrame, threshold: float = 0.0, binary: bool = False,
                  title: str = "", outcome: str = "") -> go.Figure:
    """Points with interval bars, one row per group of ``table`` (``Snapshot.effects`` columns),
    coloured by verdict, with the band of practically-zero effects (+/- ``threshold``) shaded.

    Rows are labelled by ``table["tick"]`` if present, else by ``label``; hover shows ``label``.
    """
    import plotly.graph_objects as go

    k = 100.0 if binary else 1.0
    unit = " (percentage points)" if binary else ""
    fig = go.Figure()
    pos = np.arange(len(table))
    verdicts = table["verdict"].astype(str).to_numpy()
    for name in (*VERDICT_COLORS, *sorted(set(verdicts) - set(VERDICT_COLORS))):
        sel = verdicts == name
        if not sel.any():
            continue
        part = table.loc[sel]
        mean, lower, upper = (part[c].to_numpy(dtype=float) * k for c in ("mean", "lower", "upper"))
        hover = [f"{plot_text(lab, 300)}<br>{m:.3g} [{lo:.3g}, {hi:.3g}]<br>{plot_text(name)}"
                 for lab, m, lo, hi in zip(part["label"], mean, lower, upper, strict=True)]
        fig.add_trace(go.Scatter(
            x=mean, y=pos[sel], mode="markers", name=plot_text(name),
            marker={"color": VERDICT_COLORS.get(name, "#444444"), "size": 9},
            error_x={"type": "data", "symmetric": False, "array": upper - mean,
                     "arrayminus": mean - lower, "thickness": 1.5},
            hovertext=hover, hoverinfo="text"))
    if threshold > 0:
        fig.add_vrect(x0=-threshold * k, x1=threshold * k, fillcolor="#9e9e9e", opacity=0.18,
                      line_width=0, layer="below")
    fig.add_vline(x=0, line={"color": "#555555", "width": 1, "dash": "dot"})
    ticks = table["tick"] if "tick" in table.columns else table["label"]
    fig.update_yaxes(tickmode="array", tickvals=pos.tolist(),
                     ticktext=[plot_text(x, _PLOT_LABEL) for x in ticks], autorange="reversed")
    fig.update_layout(
        title={"text": plot_text(title, 70)}, template="plotly_white",
        height=140 + 26 * max(len(table), 1), margin={"l": 20, "r": 20, "t": 60, "b": 50},
        xaxis_title=plot_text(f"Effect on {outcome}{unit}" if outcome else f"Effect{unit}", 120),
        showlegend=True, legend={"orientation": "h", "y": -0.15 if len(table) > 4 else -0.4},
    )
    return fig


#: Characters of a factor or level name shown in a figure (the tables have the full names).
PLOT_NAME = 40
#: Characters of a group's label in a figure's hover text.
PLOT_HOVER = 300


@dataclass(frozen=True, eq=False)
class PlotTable:
    """An effects table with every user string made safe and short for :mod:`hte.plots`.

    ``table`` keeps the index and numbers of the original; its factor columns are renamed, and
    ``by``, ``label``, the factor names and levels are shortened (kept distinct) and
    HTML-escaped, since Plotly renders a subset of HTML in its text. ``factors`` maps each
    original factor name to its shown name, ``names`` each original factor and level to the
    shown level, ``levels`` each shown factor to its shown levels (in table order), and
    ``outcome`` is the outcome's shown name.
    """

    table: pd.DataFrame
    factors: dict[str, str]
    names: dict[str, dict[str, str]]
    outcome: str

    @property
    def levels(self) -> dict[str, list[str]]:
        return {self.factors[f]: list(names.values()) for f, names in self.names.items()}


def short_names(names: Sequence[Any], limit: int = PLOT_NAME) -> dict[str, str]:
    """Each distinct name shortened to ``limit`` characters, kept distinct, HTML-escaped."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in dict.fromkeys(str(n) for n in names):
        candidate, k = _short(name, limit), 2
        while candidate in used:
            suffix = f" #{k}"
            candidate, k = _short(name, max(limit - len(suffix), 2)) + suffix, k + 1
        used.add(candidate)
        out[name] = html.escape(candidate, quote=False)
    return out


def plot_table(table: pd.DataFrame, factors: Sequence[str], outcome: str = "",
               limit: int = PLOT_NAME) -> PlotTable:
    """:class:`PlotTable` of ``table`` (columns of :meth:`Snapshot.effects` or ``Fit.effects``).

    Shortened names are chosen over the whole table, so subsets of it agree with each other.
    """
    factors = [str(f) for f in factors]
    fnames = short_names(factors, limit)
    values = table[factors].astype(object) if factors else pd.DataFrame(index=table.index)
    lnames = {f: short_names([v for v in values[f] if not _missing(v)], limit) for f in factors}
    out = table.copy()
    for f in factors:
        out[f] = [None if _missing(v) else lnames[f][str(v)] for v in values[f]]
    out = out.rename(columns=fnames)
    members = values.to_numpy(dtype=object)
    out["by"] = [" × ".join(fnames[f] for f, v in zip(factors, row, strict=True)
                            if not _missing(v)) or EVERYONE for row in members]
    out["label"] = [plot_text(x, PLOT_HOVER) for x in table["label"]]
    return PlotTable(table=out, factors=fnames, names=lnames, outcome=plot_text(outcome, 80))


def report_figures(snapshot: Snapshot, threshold: float | None = None,
                   interval: float | None = None,
                   cutoff: float | None = None) -> list[tuple[str, go.Figure]]:
    """Forest plots (:func:`hte.plots.forest_plot`, as in the app): everyone and each factor
    together, then one per pair of factors. Returns (heading, figure) pairs."""
    from hte import plots

    rule = snapshot.rule(threshold, interval, cutoff)
    table = snapshot.effects(rule.threshold, rule.interval, rule.cutoff)
    shown = plot_table(table, snapshot.factors, snapshot.outcome)
    singles = [EVERYONE, *(b for b in snapshot.groupings if b in snapshot.factors)]
    parts = [("Everyone and each factor", table["by"].isin(singles))]
    parts += [(b, table["by"] == b) for b in snapshot.groupings if b not in singles]
    out = []
    for name, mask in parts:
        if not mask.any():
            continue
        fig = plots.forest_plot(shown.table.loc[mask], threshold=rule.threshold,
                                binary=snapshot.binary, outcome=shown.outcome,
                                interval=rule.interval)
        rows = fig.layout.yaxis.tickvals   # every row, headings too (a pair's has no point)
        fig.update_yaxes(autorange=False, range=[max(rows) + 0.6, min(rows) - 0.6])
        out.append((name, fig))
    return out


def _short(text: Any, limit: int) -> str:
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------

#: Leading characters that make a spreadsheet treat a cell as a formula (with their full-width
#: forms, which some spreadsheets fold to ASCII).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
#: What a spreadsheet may skip before it looks for a formula: spaces, controls, NUL.
_SKIPPED = " \t\r\n\x00\x0b\x0c\u00a0\u3000"


def neutralize(value: Any) -> Any:
    """A text cell that a spreadsheet could run as a formula, with a leading single quote.

    NUL characters are dropped (some readers stop at them); a formula character after leading
    spaces or control characters counts too.
    """
    if not isinstance(value, str):
        return value
    value = value.replace("\x00", "")
    if value.startswith(FORMULA_START) or value.lstrip(_SKIPPED).startswith(FORMULA_START):
        return "'" + value
    return value


def safe_csv(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV (with a byte-order mark, for Excel), formulas neutralized.

    Text cells and column names starting with =, +, -, @ (or their full-width forms), a tab or
    a carriage return, also after leading spaces, get a leading single quote; NULs are dropped;
    numbers are written as numbers.
    """
    out = df.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or
                pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].astype(object).map(neutralize)
    out.columns = [neutralize(str(c)) for c in out.columns]
    return out.to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig")


def report_csv(snapshot: Snapshot, threshold: float | None = None, interval: float | None = None,
               cutoff: float | None = None) -> bytes:
    """The summary table of every published group as safe CSV (:func:`safe_csv`)."""
    return safe_csv(snapshot.effects(threshold, interval, cutoff))


def fingerprint_label(fingerprint: Any) -> str:
    """What a data fingerprint is: a published one is keyed with the report's owner key
    (:func:`hte.report_store.keyed_fingerprint`), an unpublished one is a plain SHA-256."""
    keyed = str(fingerprint).startswith("hmac-sha256:")
    return "Data fingerprint (keyed with the owner key)" if keyed else "Data fingerprint (SHA-256)"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_effect(value: float, binary: bool) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value * 100:.1f} pp" if binary else f"{value:.3g}"


def _fmt_p(value: float) -> str:
    return f"{value:.0%}" if np.isfinite(value) else "–"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:2rem auto;padding:0 1rem;color:#1f2328;line-height:1.45}
h1{margin-bottom:.2rem} .muted{color:#59636e;font-size:.92rem}
.note{white-space:pre-wrap;background:#f6f8fa;border-left:4px solid #8c959f;padding:.6rem .9rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border-bottom:1px solid #d1d9e0;padding:.25rem .45rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td:first-child{overflow-wrap:anywhere;min-width:12rem}
code{background:#f6f8fa;padding:.1rem .3rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem} dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
"""


def report_html(snapshot: Snapshot, threshold: float | None = None,
                interval: float | None = None, cutoff: float | None = None) -> str:
    """One self-contained HTML document of the report: opens offline (Plotly inlined).

    Every user-provided string is escaped; figures carry their text escaped inside Plotly's
    JSON, which Plotly itself encodes so that it cannot close the script element.
    """
    from hte.diagnostics import Diagnostics

    rule = snapshot.rule(threshold, interval, cutoff)
    table = snapshot.effects(rule.threshold, rule.interval, rule.cutoff)
    title = snapshot.title or "Treatment-effect report"
    binary = snapshot.binary
    d = snapshot.data
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<meta name="referrer" content="no-referrer">',
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>"]
    stamp = f"Published {snapshot.created:%Y-%m-%d %H:%M} UTC"
    if snapshot.expires:
        stamp += f"; the link expires {snapshot.expires:%Y-%m-%d %H:%M} UTC"
    parts.append(f'<p class="muted">{_e(stamp)}. A read-only snapshot: no individual data.</p>')
    if snapshot.note:
        parts.append(f'<div class="note">{_e(snapshot.note)}</div>')
    everyone = table[table["by"] == EVERYONE]
    if len(everyone):
        parts.append(f"<p><strong>{_e(sentence(everyone.iloc[0], rule, snapshot.outcome, binary))}"
                     "</strong></p>")

    unit = "percentage points" if binary else f"units of {snapshot.outcome}"
    delta = rule.threshold * 100 if binary else rule.threshold
    parts.append("<h2>Decision rule</h2><p>"
                 + _e(f"Effects within ±{delta:g} {unit} count as practically zero; intervals "
                      f"are {rule.interval:.0%} credible intervals; a verdict needs a "
                      f"{rule.cutoff:.0%} posterior probability and at least {rule.min_arm:,} "
                      "people in each arm; a group with fewer treated or control people is "
                      "extrapolated: its estimate is borrowed from the other groups and gets no "
                      f"verdict. ⚠ marks groups with fewer than {SMALL_ARM} people in an arm.")
                 + "</p>")

    parts.append("<h2>Effects</h2>")
    for i, (name, fig) in enumerate(report_figures(snapshot, rule.threshold, rule.interval,
                                                   rule.cutoff)):
        parts.append(f"<h3>{_e(name)}</h3>")
        parts.append(fig.to_html(include_plotlyjs=(i == 0), full_html=False,
                                 config={"displaylogo": False}))

    parts.append("<h2>Summary table</h2><table><thead><tr>")
    heads = ["Group", "People", "Treated", "Control", "Mean effect", "Lower", "Upper",
             f"P(> {delta:g})", "P(practically zero)", f"P(< −{delta:g})", "Verdict",
             "Raw difference", "Raw s.e."]
    parts.append("".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>")
    at = {c: 2 + len(snapshot.factors) + j for j, c in enumerate(EFFECT_COLUMNS)}
    for r in table.itertuples(index=False, name=None):  # by position: factor names may clash
        cells = [f"<td>{_e(r[1])}</td>"]
        cells += [f'<td class="num">{int(r[at[c]]):,}</td>' for c in _COUNTS]
        cells += [f'<td class="num">{_fmt_effect(r[at[c]], binary)}</td>'
                  for c in ("mean", "lower", "upper")]
        cells += [f'<td class="num">{_fmt_p(r[at[c]])}</td>'
                  for c in ("p_above", "p_practically_zero", "p_below")]
        flags = {c: r[at[c]] for c in ("verdict", "extrapolated", "small_arm", "n_treated",
                                         "n_control")}
        cells.append(f"<td>{_e(verdict_text(flags, rule.min_arm))}</td>")
        cells += [f'<td class="num">{_fmt_effect(r[at[c]], binary)}</td>' for c in _RAW]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    if snapshot.withheld:
        parts.append(f'<p class="muted">{snapshot.withheld:,} group(s) with fewer than '
                     f"{snapshot.min_cell:,} people in an arm, or whose numbers would reveal such "
                     "a group, are not shown.</p>")
    else:
        parts.append(f'<p class="muted">Groups with fewer than {snapshot.min_cell:,} people '
                     "in an arm are never shown.</p>")

    parts.append("<h2>Model and data</h2><dl>")
    dropped = d.get("dropped") or {}
    items = [
        ("Model", f"{snapshot.family} (" + ("yes/no outcome, logit link" if binary
                                              else "continuous outcome") + ")"),
        ("Formula", snapshot.formula),
        ("Outcome", snapshot.outcome),
        ("Arms", f"treated = {snapshot.treated}; control = {snapshot.control}"),
        ("Factors", ", ".join(snapshot.factors) or "none"),
        ("Rows used", f"{d.get('n_used', '?'):,} of {d.get('n_input_rows', '?'):,}"
         if isinstance(d.get("n_used"), int) and isinstance(d.get("n_input_rows"), int)
         else "?"),
        ("Rows dropped", "; ".join(f"{k}: {v:,}" for k, v in dropped.items()) or "none"),
        ("Columns used", ", ".join(str(c) for c in d.get("columns_used", []))),
        (fingerprint_label(d.get("fingerprint", "")), d.get("fingerprint", "")),
        ("Posterior draws kept", f"{snapshot.n_draws:,}"),
    ]
    for k, v in items:
        tag = "code" if k.startswith(("Formula", "Data fingerprint")) else "span"
        parts.append(f"<dt>{_e(k)}</dt><dd><{tag}>{_e(v)}</{tag}></dd>")
    parts.append("</dl><h2>Sampler diagnostics</h2>")
    try:
        verdict = Diagnostics.from_dict(snapshot.diagnostics).verdict()
    except (TypeError, ValueError):
        verdict = "Diagnostics are not available."
    parts.append(f"<p>{_e(verdict)}</p>")
    parts.append('<p class="muted">Made with hte.</p></body></html>')
    return "\n".join(parts)

