"""Figures for people: every chart the dashboard (and a report) draws, as pure functions.

Each function takes a summary table (a DataFrame with the columns of :meth:`hte.result.Fit.effects`,
:func:`hte.checks.cell_check`, ...) or plain arrays and returns a ``plotly.graph_objects.Figure``;
nothing here reads a :class:`~hte.result.Fit`, so a stored table redraws the same figure.

Conventions shared by all figures:

- effects of a binary outcome arrive as differences in probability (0.05) and are drawn in
  percentage points (5), with axis titles saying so; ``threshold`` is given in the same units as
  the effects (probability for binary outcomes);
- verdicts have fixed, colour-blind safe colours (Okabe–Ito) and marker shapes, so colour is never
  the only cue: likely positive is a blue up-triangle, likely negative a vermillion down-triangle,
  practically zero a green square, uncertain a grey circle; an *extrapolated* group (too few
  people in an arm for a verdict) a hollow light-grey circle;
- a group with a small arm (fewer than :data:`hte.decisions.SMALL_ARM` people) is marked ⚠ next to
  its name and with a dark ring round its point, with a legend entry saying so;
- the band of practically-zero effects (-threshold, +threshold) is shaded green.

:func:`csv_bytes` writes tables for download with spreadsheet formulas neutralized.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from hte.decisions import (
    EXTRAPOLATED,
    LIKELY_NEGATIVE,
    LIKELY_POSITIVE,
    PRACTICALLY_ZERO,
    SMALL_ARM,
    UNCERTAIN,
    VERDICTS,
    arm_phrase,
    effect_decimals,
    format_effect,
    format_number,
)

# -- palette and shared layout --------------------------------------------------------------------

BLUE = "#0072B2"
VERMILLION = "#D55E00"
GREEN = "#009E73"
ORANGE = "#E69F00"
SKY = "#56B4E9"
PURPLE = "#CC79A7"
GREY = "#7A7A7A"
INK = "#262730"
LIGHT = "#F4F4F4"

VERDICT_COLORS: dict[str, str] = {
    LIKELY_POSITIVE: BLUE,
    LIKELY_NEGATIVE: VERMILLION,
    PRACTICALLY_ZERO: GREEN,
    UNCERTAIN: GREY,
    EXTRAPOLATED: "#A6A6A6",
}
VERDICT_SYMBOLS: dict[str, str] = {
    LIKELY_POSITIVE: "triangle-up",
    LIKELY_NEGATIVE: "triangle-down",
    PRACTICALLY_ZERO: "square",
    UNCERTAIN: "circle",
    EXTRAPOLATED: "circle-open",
}
#: Legend names of the verdicts where they need more words than the verdict itself.
VERDICT_NAMES: dict[str, str] = {EXTRAPOLATED: "extrapolated (too few people in an arm)"}
#: The mark of a group with a small arm, next to its name.
SMALL_MARK = "⚠"
SMALL_ARM_NAME = f"{SMALL_MARK} fewer than {SMALL_ARM} people in an arm"
#: Categorical colours (Okabe–Ito, yellow last: it is hard to read on white).
PALETTE = (BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILLION, "#000000", "#F0E442")
DASHES = ("solid", "dash", "dot", "dashdot")
ARM_COLORS = {"treated": BLUE, "control": ORANGE}
BAND_COLOR = GREEN
BAND_OPACITY = 0.13

_FONT = {"family": "Source Sans Pro, Helvetica Neue, Arial, sans-serif", "size": 15,
         "color": INK}
#: plotly's "simple_white", except that shapes are not filled or faded unless asked to be (the
#: stock template fills every shape with 30% black, which darkens outlined heatmap cells).
TEMPLATE = go.layout.Template(pio.templates["simple_white"])
TEMPLATE.layout.shapedefaults = {"fillcolor": "rgba(0,0,0,0)", "opacity": 1,
                                 "line": {"color": INK, "width": 1}}


def _layout(fig: go.Figure, *, height: int | None = None, title: str | None = None,
            **kwargs) -> go.Figure:
    """Large type, white background, light grid: readable on a projector.

    The legend sits in one row above the plot; a title, if any, above the legend.
    """
    top = 60 if not title else 95
    fig.update_layout(
        template=TEMPLATE, font=_FONT, height=height,
        margin={"l": 10, "r": 20, "t": top, "b": 10},
        hoverlabel={"font_size": 14, "align": "left"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        **kwargs,
    )
    if title:
        fig.update_layout(title={"text": title, "x": 0, "xanchor": "left", "xref": "paper",
                                 "y": 1, "yanchor": "top", "yref": "container",
                                 "pad": {"t": 12}, "font": {"size": 18}})
    fig.update_xaxes(showgrid=True, gridcolor="#E6E6E6", zeroline=False)
    fig.update_yaxes(showgrid=False, zeroline=False)
    return fig


# -- units and numbers ----------------------------------------------------------------------------

def unit_factor(binary: bool) -> float:
    """Multiplier from engine units to displayed units (percentage points for binary)."""
    return 100.0 if binary else 1.0


def effect_axis_title(outcome: str, binary: bool, what: str = "Effect") -> str:
    """'Effect on donated (percentage points)' or 'Effect on support (difference in means)'."""
    if binary:
        return f"{what} on {outcome} (percentage points)"
    return f"{what} on {outcome} (difference in mean {outcome})"


def format_probability(p: float) -> str:
    """'94%', with '<1%' and '>99%' at the ends so certainty is never overstated."""
    if p is None or not np.isfinite(p):
        return "–"
    if p > 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{p:.0%}"


def level_text(row: Mapping, by: str | None = None) -> str:
    """The levels of a group row: 'Female', 'Black · Male', or 'Everyone'."""
    by = row["by"] if by is None else by
    if by == "Everyone":
        return "Everyone"
    return " · ".join(str(row[f]) for f in by.split(" × "))


def arm_marks(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(extrapolated, small_arm) of each row: the table's flag columns, or, for a table without
    them, the verdict and the people per arm."""
    n = len(table)
    if "extrapolated" in table.columns:
        extrapolated = table["extrapolated"].fillna(False).to_numpy(dtype=bool)
    elif "verdict" in table.columns:
        extrapolated = (table["verdict"] == EXTRAPOLATED).to_numpy()
    else:
        extrapolated = np.zeros(n, dtype=bool)
    if "small_arm" in table.columns:
        small = table["small_arm"].fillna(False).to_numpy(dtype=bool)
    elif {"n_treated", "n_control"} <= set(table.columns):
        small = (np.minimum(table["n_treated"], table["n_control"]) < SMALL_ARM).to_numpy()
    else:
        small = np.zeros(n, dtype=bool)
    return extrapolated, small | extrapolated


def _arm_note(row: Mapping) -> str | None:
    """A hover line on an extrapolated group or a small arm, or None."""
    if "n_treated" not in row or "n_control" not in row or pd.isna(row.get("n_treated")):
        return None
    n_t, n_c = int(row["n_treated"]), int(row["n_control"])
    if bool(row.get("extrapolated", False)) or row.get("verdict") == EXTRAPOLATED:
        # the arm(s) below the rule's minimum are unknown here; name the smaller one
        words = arm_phrase(n_t, n_c, min(n_t, n_c) + 1)
        return (f"<b>Extrapolated</b>: {words}, so the estimate is borrowed from other groups; "
                "no verdict")
    if bool(row.get("small_arm", False)):
        arm = f"{n_t:,} treated" if n_t <= n_c else f"{n_c:,} in the control group"
        return f"{SMALL_MARK} Small arm: only {arm}; the estimate leans on other groups"
    return None


def _hover(row: Mapping, *, threshold: float, binary: bool, decimals: int,
           interval: float | None = None) -> str:
    d = format_effect(threshold, binary)
    lines = [
        f"<b>{row.get('label', '')}</b>",
        f"Effect {format_effect(row['mean'], binary, decimals)}",
    ]
    if "lower" in row and "upper" in row:
        level = f"{interval:.0%} " if interval else ""
        lines.append(f"{level}interval {format_effect(row['lower'], binary, decimals)} to "
                     f"{format_effect(row['upper'], binary, decimals)}")
    if "p_above" in row:
        lines += [
            f"P(effect > {d}) = {format_probability(row['p_above'])}",
            f"P(practically zero, within ±{d}) = "
            f"{format_probability(row['p_practically_zero'])}",
            f"P(effect < −{d}) = {format_probability(row['p_below'])}",
        ]
    if "n" in row and pd.notna(row.get("n")):
        arms = ""
        if "n_treated" in row and "n_control" in row:
            arms = f" ({int(row['n_treated']):,} treated, {int(row['n_control']):,} control)"
        lines.append(f"n = {int(row['n']):,}{arms}")
    if "raw_mean" in row and pd.notna(row.get("raw_mean")):
        lines.append(f"Raw difference in means {format_effect(row['raw_mean'], binary, decimals)}")
    if "verdict" in row:
        lines.append(f"Verdict: {row['verdict']}")
    note = _arm_note(row)
    if note:
        lines.append(note)
    return "<br>".join(lines)


def _band(fig: go.Figure, threshold: float, binary: bool, *, vertical: bool = True,
          label: bool = True, **where) -> None:
    """Shade the practically-zero band and draw the zero line."""
    d = threshold * unit_factor(binary)
    if d > 0:
        kwargs = {"fillcolor": BAND_COLOR, "opacity": BAND_OPACITY, "line_width": 0,
                  "layer": "below", **where}
        if label:
            kwargs |= {"annotation_text": "practically zero",
                       "annotation_position": "inside top",
                       "annotation_font": {"size": 12, "color": GREEN}}
        if vertical:
            fig.add_vrect(x0=-d, x1=d, **kwargs)
        else:
            fig.add_hrect(y0=-d, y1=d, **kwargs)
    line = {"line_color": "#666666", "line_width": 1.2, **where}
    if vertical:
        fig.add_vline(x=0, **line)
    else:
        fig.add_hline(y=0, **line)


# -- forest plot ----------------------------------------------------------------------------------

def forest_plot(table: pd.DataFrame, *, threshold: float, binary: bool, outcome: str,
                interval: float = 0.9) -> go.Figure:
    """Every group's effect with its credible interval, grouped by factor.

    ``table`` has the columns of :meth:`Fit.effects` (``by``, ``label``, the factor columns,
    ``mean``, ``lower``, ``upper``, ``verdict``, ``n``, probabilities), rows in display order
    (e.g. :meth:`Fit.effect_table`). Each factor gets a bold heading row; points are coloured and
    shaped by verdict; the band of practically-zero effects is shaded.
    """
    k = unit_factor(binary)
    decimals = effect_decimals(table["mean"], binary)
    extrapolated, small = arm_marks(table)
    marked = pd.Series(small, index=table.index)
    ticks: list[tuple[float, str]] = []
    ys: dict = {}
    separators: list[float] = []
    y = 0.0
    for by, block in table.groupby("by", sort=False):
        if by != "Everyone":
            if ys:
                separators.append(y - 0.5)
            ticks.append((y, f"<b>{by}</b>"))
            y += 1
        for idx, row in block.iterrows():
            text = level_text(row, by) + (f" {SMALL_MARK}" if marked[idx] else "")
            ticks.append((y, f"<b>{text}</b>" if by == "Everyone" else text))
            ys[idx] = y
            y += 1
    frame = table.assign(_y=pd.Series(ys), extrapolated=extrapolated, small_arm=small)
    frame.loc[extrapolated, "verdict"] = EXTRAPOLATED
    fig = go.Figure()
    for verdict in VERDICTS:
        rows = frame[frame["verdict"] == verdict]
        if rows.empty:
            continue
        hollow = verdict == EXTRAPOLATED
        ring = rows["small_arm"].to_numpy() & (not hollow)
        fig.add_trace(go.Scatter(
            x=rows["mean"] * k, y=rows["_y"], mode="markers",
            name=VERDICT_NAMES.get(verdict, verdict),
            marker={"color": VERDICT_COLORS[verdict], "symbol": VERDICT_SYMBOLS[verdict],
                    "size": [16 if b == "Everyone" else 12 for b in rows["by"]],
                    "line": {"width": 2 if hollow else [2.5 if r else 1 for r in ring],
                             "color": VERDICT_COLORS[verdict] if hollow
                             else [INK if r else "white" for r in ring]}},
            error_x={"type": "data", "symmetric": False,
                     "array": (rows["upper"] - rows["mean"]) * k,
                     "arrayminus": (rows["mean"] - rows["lower"]) * k,
                     "color": VERDICT_COLORS[verdict], "thickness": 1.5 if hollow else 2.5,
                     "width": 0},
            text=[_hover(r, threshold=threshold, binary=binary, decimals=decimals,
                         interval=interval) for _, r in rows.iterrows()],
            hovertemplate="%{text}<extra></extra>",
        ))
    if small.any():
        _small_arm_legend(fig)
    _band(fig, threshold, binary)
    for s in separators:
        fig.add_hline(y=s, line_color="#E4E4E4", line_width=1)
    fig.update_yaxes(tickvals=[t for t, _ in ticks], ticktext=[s for _, s in ticks],
                     autorange="reversed", range=None, ticks="", showline=False)
    fig.update_xaxes(title_text=effect_axis_title(outcome, binary) +
                     f" — points: mean, bars: {interval:.0%} interval")
    _layout(fig, height=int(max(320, 30 * len(ticks) + 140)),
            legend_title_text="Verdict: ", showlegend=True)   # even with a single verdict
    return fig


def _small_arm_legend(fig: go.Figure) -> None:
    """A legend entry (no data) explaining the small-arm mark: a white point with a dark ring."""
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", name=SMALL_ARM_NAME, hoverinfo="skip",
        marker={"color": "white", "symbol": "circle", "size": 12,
                "line": {"width": 2.5, "color": INK}}))


# -- densities ------------------------------------------------------------------------------------

def kde_curve(draws: np.ndarray, n_grid: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel density of ``draws`` on a grid (Silverman's bandwidth)."""
    x = np.asarray(draws, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.ptp(x) == 0:
        c = float(x[0]) if len(x) else 0.0
        return np.array([c, c]), np.array([0.0, 1.0])
    sd = x.std(ddof=1)
    iqr = np.subtract(*np.percentile(x, [75, 25]))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    bw = 0.9 * spread * len(x) ** -0.2
    grid = np.linspace(x.min() - 3 * bw, x.max() + 3 * bw, n_grid)
    dens = np.zeros(n_grid)
    for start in range(0, len(x), 2000):
        u = (grid[:, None] - x[None, start:start + 2000]) / bw
        dens += np.exp(-0.5 * u * u).sum(axis=1)
    dens /= len(x) * bw * math.sqrt(2 * math.pi)
    return grid, dens


def density_plot(curves: Mapping[str, np.ndarray], *, threshold: float, binary: bool,
                 outcome: str, title: str | None = None) -> go.Figure:
    """Posterior density of each group's effect (one curve per entry of ``curves``)."""
    k = unit_factor(binary)
    fig = go.Figure()
    decimals = effect_decimals([float(np.mean(v)) for v in curves.values()], binary)
    for i, (label, draws) in enumerate(curves.items()):
        x, dens = kde_curve(np.asarray(draws) * k)
        mean = float(np.mean(draws))
        fig.add_trace(go.Scatter(
            x=x, y=dens, mode="lines", name=label,
            line={"color": PALETTE[i % len(PALETTE)], "width": 3,
                  "dash": DASHES[(i // len(PALETTE)) % len(DASHES)]},
            hovertemplate=f"<b>{label}</b><br>mean {format_effect(mean, binary, decimals)}"
                          "<extra></extra>",
        ))
    _band(fig, threshold, binary)
    fig.update_xaxes(title_text=effect_axis_title(outcome, binary))
    fig.update_yaxes(title_text="Posterior density", showticklabels=False)
    _layout(fig, height=400 if title else 360, title=title, showlegend=True)
    return fig


def posterior_plot(draws: np.ndarray, summary: Mapping, *, threshold: float, binary: bool,
                   outcome: str, label: str = "", what: str = "Effect",
                   title: str | None = None) -> go.Figure:
    """One posterior density split into the three regions below, within and above ±threshold.

    ``summary`` holds ``p_below``, ``p_practically_zero``, ``p_above`` (and optionally ``mean``,
    ``lower``, ``upper``) as from :func:`hte.decisions.summarize`; they label the regions.
    """
    k = unit_factor(binary)
    d = threshold * k
    x, dens = kde_curve(np.asarray(draws) * k, n_grid=400)
    dtext = format_effect(threshold, binary)
    regions = [
        (x < -d, VERMILLION, f"below −{dtext}: {format_probability(summary['p_below'])}"),
        ((x >= -d) & (x <= d), GREEN,
         f"practically zero: {format_probability(summary['p_practically_zero'])}"),
        (x > d, BLUE, f"above {dtext}: {format_probability(summary['p_above'])}"),
    ]
    fig = go.Figure()
    for mask, color, name in regions:
        if not mask.any():
            continue
        idx = np.flatnonzero(mask)
        lo, hi = max(idx[0] - 1, 0), min(idx[-1] + 1, len(x) - 1)  # close the gaps
        xs, ys = x[lo:hi + 1].copy(), dens[lo:hi + 1].copy()
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", fill="tozeroy", name=name,
            line={"color": color, "width": 0.5}, fillcolor=_rgba(color, 0.35),
            hoverinfo="skip",
        ))
    fig.add_trace(go.Scatter(x=x, y=dens, mode="lines", name=label, showlegend=False,
                             line={"color": INK, "width": 2.5},
                             hovertemplate="%{x:.3g}<extra></extra>"))
    _band(fig, threshold, binary, label=False)
    if "mean" in summary:
        mean = float(summary["mean"]) * k
        fig.add_vline(x=mean, line_dash="dash", line_color=INK)
        fig.add_annotation(x=mean, y=1, yref="paper", yanchor="top", xanchor="left",
                           text=" mean", showarrow=False, font={"size": 13})
    fig.update_xaxes(title_text=effect_axis_title(outcome, binary, what))
    fig.update_yaxes(title_text="Posterior density", showticklabels=False)
    _layout(fig, height=420 if title else 380, title=title,
            legend_title_text="Chance the effect is ", showlegend=True)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# -- heatmap --------------------------------------------------------------------------------------

def heatmap(table: pd.DataFrame, rows: str, cols: str, *, levels: Mapping[str, Sequence[str]],
            color: str = "p_above", threshold: float, binary: bool, outcome: str,
            interval: float = 0.9,
            selected: tuple[str, str] | None = None) -> go.Figure:
    """Level combinations of two factors, coloured by P(effect > threshold) or the mean effect.

    ``table`` is :meth:`Fit.effects` with ``by=[rows, cols]`` (either order). Each cell shows
    its value and n. A cell with a small arm (:func:`arm_marks`) gets a dotted outline and ⚠; an
    extrapolated cell (too few people in an arm for a verdict) is not coloured: it is light grey,
    outlined with dashes and says "extrapolated" (its numbers stay in the hover text);
    combinations nobody is in are left blank. ``selected`` (row level, column level) gets a solid
    outline. An invisible marker sits on every cell with people, so a click on the cell selects
    a point (x = column index, y = row index) in apps that listen for selections.
    """
    if color not in ("p_above", "mean"):
        raise ValueError("color must be 'p_above' or 'mean'")
    k = unit_factor(binary)
    r_levels = [str(v) for v in levels[rows]]
    c_levels = [str(v) for v in levels[cols]]
    decimals = effect_decimals(table["mean"], binary)
    extrapolated, small_arm = arm_marks(table)
    flags = table.assign(extrapolated=extrapolated, small_arm=small_arm)
    index = {(str(r[rows]), str(r[cols])): r for _, r in flags.iterrows()}
    z, text, hover = [], [], []
    small: list[tuple[int, int]] = []
    borrowed: list[tuple[int, int]] = []
    present: list[tuple[int, int]] = []
    for i, rl in enumerate(r_levels):
        z_row, t_row, h_row = [], [], []
        for j, cl in enumerate(c_levels):
            r = index.get((rl, cl))
            if r is None or int(r["n"]) == 0:
                z_row.append(None)
                t_row.append("nobody")
                h_row.append(f"<b>{rows} = {rl}, {cols} = {cl}</b><br>Nobody in the data")
                continue
            present.append((i, j))
            n = int(r["n"])
            h_row.append(_hover(r, threshold=threshold, binary=binary, decimals=decimals,
                                interval=interval))
            if r["extrapolated"]:
                z_row.append(None)
                arms = ", ".join(f"{int(r[c]):,} {a}" for c, a in
                                 (("n_treated", "treated"), ("n_control", "control"))
                                 if c in r and int(r[c]) == min(int(r["n_treated"]),
                                                                int(r["n_control"])))
                t_row.append(f"extrapolated<br>n = {n:,} ({arms})")
                borrowed.append((i, j))
                continue
            value = float(r[color]) * (1 if color == "p_above" else k)
            z_row.append(value)
            shown = (format_probability(r["p_above"]) if color == "p_above"
                     else format_effect(r["mean"], binary, decimals))
            note = f" {SMALL_MARK}" if r["small_arm"] else ""
            t_row.append(f"{shown}<br>n = {n:,}{note}")
            if r["small_arm"]:
                small.append((i, j))
        z.append(z_row)
        text.append(t_row)
        hover.append(h_row)
    dtext = format_effect(threshold, binary)
    if color == "p_above":
        scale = [[0.0, "#F7F7F7"], [1.0, BLUE]]
        zmin, zmax, zmid = 0.0, 1.0, None
        bar_title = f"P(effect > {dtext})"
        tickformat = ".0%"
    else:
        values = np.array([v for row in z for v in row if v is not None], dtype=float)
        top = float(np.max(np.abs(values))) if len(values) else 1.0
        top = top or 1.0
        scale = [[0.0, VERMILLION], [0.5, "#F7F7F7"], [1.0, BLUE]]
        zmin, zmax, zmid = -top, top, 0.0
        bar_title = "Mean effect" + (" (pp)" if binary else "")
        tickformat = None
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(c_levels))), y=list(range(len(r_levels))), text=text,
        texttemplate="%{text}", textfont={"size": 14}, hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>", colorscale=scale, zmin=zmin, zmax=zmax,
        zmid=zmid, xgap=3, ygap=3,
        colorbar={"title": {"text": bar_title, "side": "right"}, "tickformat": tickformat},
    ))
    cells = present
    fig.add_trace(go.Scatter(
        x=[j for _, j in cells], y=[i for i, _ in cells], mode="markers", name="cells",
        showlegend=False, text=[hover[i][j] for i, j in cells],
        hovertemplate="%{text}<extra></extra>",
        marker={"size": 70, "symbol": "square", "opacity": 0, "color": INK},
        selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}},
    ))
    for i, j in small:
        fig.add_shape(type="rect", x0=j - 0.47, x1=j + 0.47, y0=i - 0.47, y1=i + 0.47,
                      line={"color": INK, "width": 2, "dash": "dot"})
    for i, j in borrowed:
        fig.add_shape(type="rect", x0=j - 0.47, x1=j + 0.47, y0=i - 0.47, y1=i + 0.47,
                      layer="below", fillcolor="#E3E3E3",
                      line={"color": GREY, "width": 1.5, "dash": "dash"})
    notes = []
    if small:
        notes.append(f"{SMALL_MARK} dotted outline: fewer than {SMALL_ARM} people in an arm")
    if borrowed:
        notes.append("grey, dashed: extrapolated (too few people in an arm for a verdict; the "
                     "estimate is borrowed from other groups)")
    if selected is not None and selected[0] in r_levels and selected[1] in c_levels:
        i, j = r_levels.index(str(selected[0])), c_levels.index(str(selected[1]))
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line={"color": INK, "width": 4})
    fig.update_xaxes(tickvals=list(range(len(c_levels))), ticktext=c_levels, title_text=cols,
                     showgrid=False, side="top", ticks="")
    fig.update_yaxes(tickvals=list(range(len(r_levels))), ticktext=r_levels, title_text=rows,
                     autorange="reversed", ticks="")
    _layout(fig, height=int(max(300, 90 * len(r_levels) + 140 + 22 * len(notes))))
    fig.update_layout(margin={"t": 80, "b": 10 + 22 * len(notes)}, clickmode="event+select",
                      dragmode=False)
    if notes:
        fig.add_annotation(text="<br>".join(notes), xref="paper", yref="paper", x=0, y=0,
                           xanchor="left", yanchor="top", yshift=-4, showarrow=False,
                           align="left", font={"size": 13, "color": INK}, name="arm notes")
    return fig


# -- shrinkage ------------------------------------------------------------------------------------

def shrinkage_plot(table: pd.DataFrame, *, binary: bool, outcome: str,
                   overall: float | None = None) -> go.Figure:
    """Raw difference in means (x) against the partially pooled estimate (y), one point per group.

    Point area grows with the group's n. Levels of one factor are blue circles, combinations of
    factors orange diamonds. A grey stem joins each point to the dashed diagonal, where it would be
    without pooling, so the length of the stem is how far pooling moved it; the horizontal line is
    the overall effect the noisy estimates are pulled towards. Groups without a raw estimate (an
    empty arm) are left out; extrapolated groups are hollow grey circles, and groups with a small
    arm have a dark ring (:func:`arm_marks`).
    """
    k = unit_factor(binary)
    t = table[table["by"] != "Everyone"].dropna(subset=["raw_mean"])
    decimals = effect_decimals(t["mean"] if len(t) else [1.0], binary)
    fig = go.Figure()
    if len(t):
        lo = float(min(t["raw_mean"].min(), t["mean"].min())) * k
        hi = float(max(t["raw_mean"].max(), t["mean"].max())) * k
        pad = 0.05 * (hi - lo or 1.0)
        fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines",
                                 name="no pooling (model = raw)", hoverinfo="skip",
                                 line={"color": GREY, "dash": "dash", "width": 1.5}))
        stems_x = np.repeat(t["raw_mean"].to_numpy(float) * k, 3)
        stems_y = np.column_stack([t["raw_mean"].to_numpy(float) * k,
                                   t["mean"].to_numpy(float) * k,
                                   np.full(len(t), np.nan)]).ravel()
        stems_x[2::3] = np.nan
        fig.add_trace(go.Scatter(x=stems_x, y=stems_y, mode="lines", name="moved by pooling",
                                 hoverinfo="skip", line={"color": "#BBBBBB", "width": 1.5}))
    n_max = float(t["n"].max()) if len(t) else 1.0
    combined = t["by"].str.contains(" × ", regex=False)
    extrapolated, small = arm_marks(t)
    t = t.assign(extrapolated=extrapolated, small_arm=small)
    kinds = (("level of one factor", ~combined & ~extrapolated, BLUE, "circle"),
             ("combination of factors", combined & ~extrapolated, ORANGE, "diamond"),
             (VERDICT_NAMES[EXTRAPOLATED], pd.Series(extrapolated, index=t.index),
              VERDICT_COLORS[EXTRAPOLATED], "circle-open"))
    for name, sel, color, symbol in kinds:
        rows = t[sel.to_numpy()]
        if rows.empty:
            continue
        ring = small[sel.to_numpy()]
        hollow = symbol.endswith("-open")
        fig.add_trace(go.Scatter(
            x=rows["raw_mean"] * k, y=rows["mean"] * k, mode="markers", name=name,
            marker={"color": color, "symbol": symbol,
                    "size": 7 + 28 * np.sqrt(rows["n"].to_numpy(float) / n_max),
                    "line": {"width": 2 if hollow else [2.5 if r else 1 for r in ring],
                             "color": color if hollow else [INK if r else "white"
                                                            for r in ring]},
                    "opacity": 0.85},
            text=[f"<b>{r['label']}</b><br>n = {int(r['n']):,}<br>Raw difference "
                  f"{format_effect(r['raw_mean'], binary, decimals)}<br>Model estimate "
                  f"{format_effect(r['mean'], binary, decimals)}"
                  + (f"<br>{note}" if (note := _arm_note(r)) else "")
                  for _, r in rows.iterrows()],
            hovertemplate="%{text}<extra></extra>",
        ))
    if (small & ~extrapolated).any():
        _small_arm_legend(fig)
    if overall is not None:
        fig.add_hline(y=overall * k, line_color=INK, line_width=1.5,
                      annotation_text="overall effect", annotation_position="bottom right")
    unit = " (pp)" if binary else ""
    fig.update_xaxes(title_text=f"Raw difference in means, each group on its own{unit}")
    fig.update_yaxes(title_text=f"Model estimate (partially pooled){unit}", showgrid=True,
                     gridcolor="#E6E6E6")
    _layout(fig, height=500)
    return fig


# -- diagnostics ----------------------------------------------------------------------------------

def sample_plot(counts: pd.DataFrame, *, treated: str = "treated",
                control: str = "control") -> go.Figure:
    """Who is in the experiment: people per level of each factor, treated and control stacked.

    ``counts`` has ``factor``, ``level``, ``treated`` and ``control`` columns
    (:meth:`hte.cells.CellTable.level_counts`); one panel per factor. Each bar is labelled with
    its share treated, which randomization keeps about equal across levels.
    """
    factors = list(dict.fromkeys(counts["factor"]))
    sizes = [int((counts["factor"] == f).sum()) for f in factors]
    bars = 30 * sum(sizes) + 50 * max(len(factors) - 1, 0)     # plot area, pixels
    fig = make_subplots(rows=max(len(factors), 1), cols=1, shared_xaxes=True,
                        row_heights=sizes or None, vertical_spacing=50 / max(bars, 1),
                        subplot_titles=[f"<b>{html.escape(str(f), quote=False)}</b>"
                                        for f in factors])
    for r, f in enumerate(factors, start=1):
        part = counts[counts["factor"] == f]
        levels = [html.escape(str(v), quote=False) for v in part["level"]]
        total = (part["treated"] + part["control"]).to_numpy()
        share = np.divide(part["treated"].to_numpy(), total, out=np.full(len(total), np.nan),
                          where=total > 0)
        for arm, name in (("treated", treated), ("control", control)):
            label = html.escape(f"{arm.capitalize()} ({name})", quote=False)
            fig.add_trace(go.Bar(
                y=levels, x=part[arm], orientation="h", name=label, legendgroup=arm,
                showlegend=r == 1, marker_color=ARM_COLORS[arm],
                text=[f"{s:.0%} treated" if arm == "control" and np.isfinite(s) else ""
                      for s in share],
                textposition="outside", cliponaxis=False,
                customdata=np.column_stack([total, share]),
                hovertemplate=(f"<b>%{{y}}</b><br>{label}: %{{x:,}} people<br>"
                               "all: %{customdata[0]:,}, %{customdata[1]:.0%} treated"
                               "<extra></extra>"),
            ), row=r, col=1)
        fig.update_yaxes(autorange="reversed", row=r, col=1)
    fig.update_xaxes(title_text="People", row=max(len(factors), 1), col=1)
    _layout(fig, height=bars + 150, barmode="stack", bargap=0.25)
    fig.update_layout(margin={"t": 90})
    fig.update_annotations(font_size=15, x=0, xanchor="left", yshift=4)
    # room on the right for the "x% treated" labels
    fig.update_xaxes(range=[0, 1.22 * float((counts["treated"] + counts["control"]).max() or 1)])
    return fig


def trace_plot(series: Mapping[str, np.ndarray], max_points: int = 1000) -> go.Figure:
    """Trace of each parameter, one row per parameter, one line per chain.

    ``series`` maps a parameter name to its draws, shaped (chains, draws). Long chains are thinned
    to at most ``max_points`` points per chain for drawing.
    """
    names = list(series)
    fig = make_subplots(rows=max(len(names), 1), cols=1, shared_xaxes=True,
                        vertical_spacing=min(0.06, 0.3 / max(len(names), 1)),
                        subplot_titles=names)
    for r, name in enumerate(names, start=1):
        arr = np.asarray(series[name], dtype=float)
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr[None, :]
        step = max(1, math.ceil(arr.shape[1] / max_points))
        it = np.arange(arr.shape[1])[::step]
        for c in range(arr.shape[0]):
            fig.add_trace(go.Scatter(
                x=it, y=arr[c, ::step], mode="lines", name=f"chain {c + 1}",
                legendgroup=f"chain {c + 1}", showlegend=r == 1,
                line={"color": PALETTE[c % len(PALETTE)], "width": 1}, opacity=0.8,
                hovertemplate=f"{name}<br>chain {c + 1}, draw %{{x}}: %{{y:.3g}}<extra></extra>",
            ), row=r, col=1)
    fig.update_xaxes(title_text="Draw (after warm-up)", row=max(len(names), 1), col=1)
    _layout(fig, height=int(150 * max(len(names), 1) + 120))
    fig.update_layout(legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1,
                              "yanchor": "top"}, margin={"t": 40})
    fig.update_annotations(font_size=14, x=0, xanchor="left")
    return fig


def ppc_plot(bins: pd.DataFrame, cells: pd.DataFrame, *, binary: bool, outcome: str,
             factors: Sequence[str] = (), interval: float = 0.9) -> go.Figure:
    """The predictive check in two panels that small, noisy cells cannot fake.

    ``bins`` and ``cells`` are :func:`hte.checks.predictive_check`'s tables. Left: per arm, cells
    grouped by the model's predicted mean; each bin's observed mean (marker) against the interval
    of the means the model replicates for it (vertical bar), on the diagonal if the model fits.
    Right: every cell's observed mean minus its predicted mean in units of its own replicated sd,
    against the predicted mean; about ``interval`` of them inside the dashed band if it fits.
    Crosses: outside the interval.
    """
    k = 100.0 if binary else 1.0
    level = f"{interval:.0%}"
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Bins of cells with similar predictions", "Every cell, in units of its own noise"))
    values = pd.concat([bins[["predicted", "observed", "lower", "upper"]],
                        cells[["observed"]]]) if len(bins) else pd.DataFrame({"x": [1.0]})
    decimals = 1 if binary else effect_decimals(values.stack().abs() if len(bins) else [1.0])
    for arm in ("treated", "control"):
        rows = bins[bins["arm"] == arm]
        if rows.empty:
            continue
        xs = np.repeat(rows["predicted"].to_numpy() * k, 3)
        ys = np.column_stack([rows["lower"] * k, rows["upper"] * k,
                              np.full(len(rows), np.nan)]).reshape(-1)
        xs[2::3] = np.nan
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", name=f"{arm}: model's {level} interval",
            legendgroup=arm, line={"color": _rgba(ARM_COLORS[arm], 0.45), "width": 6},
            hoverinfo="skip"), row=1, col=1)
        for covered in (True, False):
            part = rows[rows["covered"] == covered]
            if part.empty:
                continue
            text = [f"<b>{arm}, bin {int(r['bin'])}</b>: {int(r['cells']):,} cells, "
                    f"{int(r['n']):,} people<br>observed "
                    f"{format_number(r['observed'] * k, decimals)}"
                    f"<br>model {format_number(r['predicted'] * k, decimals)} (interval "
                    f"{format_number(r['lower'] * k, decimals)} to "
                    f"{format_number(r['upper'] * k, decimals)})" for _, r in part.iterrows()]
            fig.add_trace(go.Scatter(
                x=part["predicted"] * k, y=part["observed"] * k, mode="markers",
                name=f"{arm}: observed" + ("" if covered else " — outside interval"),
                legendgroup=arm,
                marker={"color": ARM_COLORS[arm], "symbol": "circle" if covered else "x",
                        "size": 10 if covered else 13, "line": {"color": "white", "width": 1}},
                text=text, hovertemplate="%{text}<extra></extra>"), row=1, col=1)
    if len(bins):
        lo = float(min(bins["observed"].min(), bins["lower"].min())) * k
        hi = float(max(bins["observed"].max(), bins["upper"].max())) * k
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="perfect agreement",
                                 hoverinfo="skip", line={"color": GREY, "dash": "dash"}),
                      row=1, col=1)
    for arm in ("treated", "control"):
        for covered in (True, False):
            part = cells[(cells["arm"] == arm) & (cells["covered"] == covered)]
            if part.empty:
                continue
            who = [", ".join(f"{f} = {r[f]}" for f in factors) or "Everyone"
                   for _, r in part.iterrows()]
            text = [f"<b>{w}</b> ({arm})<br>n = {int(r['n']):,}<br>observed "
                    f"{format_number(r['observed'] * k, decimals)}<br>model "
                    f"{format_number(r['predicted'] * k, decimals)} (interval "
                    f"{format_number(r['lower'] * k, decimals)} to "
                    f"{format_number(r['upper'] * k, decimals)})"
                    for w, (_, r) in zip(who, part.iterrows(), strict=True)]
            fig.add_trace(go.Scatter(
                x=part["predicted"] * k, y=part["standardized"], mode="markers",
                name=f"{arm} cells" + ("" if covered else " — outside interval"),
                legendgroup=f"{arm} cells", showlegend=not covered,
                marker={"color": ARM_COLORS[arm], "symbol": "circle" if covered else "x",
                        "size": 5 if covered else 8, "opacity": 0.55 if covered else 0.9},
                text=text, hovertemplate="%{text}<extra></extra>"), row=1, col=2)
    band = float(_normal_quantile(0.5 + interval / 2))
    for y in (-band, band):
        fig.add_hline(y=y, line={"color": GREY, "dash": "dash", "width": 1}, row=1, col=2)
    fig.add_hline(y=0, line={"color": GREY, "width": 1}, row=1, col=2)
    unit = f"share with {outcome} = 1 (%)" if binary else f"mean {outcome}"
    fig.update_xaxes(title_text=f"Model's predicted {unit}", row=1, col=1)
    fig.update_yaxes(title_text=f"Observed {unit}", row=1, col=1)
    fig.update_xaxes(title_text=f"Model's predicted {unit}", row=1, col=2)
    fig.update_yaxes(title_text="(observed − predicted) / replicated sd", row=1, col=2)
    reach = float(np.nanmax(np.abs(cells["standardized"]))) if len(cells) else 0.0
    reach = max(band + 1.0, reach + 0.3)
    fig.update_yaxes(range=[-reach, reach], row=1, col=2)
    _layout(fig, height=620)
    fig.update_layout(margin={"t": 40, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.16, "xanchor": "left",
                              "x": 0})
    fig.update_annotations(font_size=15)
    return fig


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


# -- exports --------------------------------------------------------------------------------------

def csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV, full precision, safe to open in a spreadsheet.

    Text cells (and column names) that a spreadsheet could run as formulas get a leading ``'``
    (:func:`hte.reports.neutralize`). Numbers stay numbers (a negative effect is not text and is
    written as is).
    """
    from hte.reports import neutralize

    out = table.copy()
    out.columns = [neutralize(str(c)) for c in out.columns]
    for col in out.columns:
        s = out[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            out[col] = s.map(neutralize, na_action="ignore")
    return out.to_csv(index=False).encode("utf-8")


def figure_html(fig: go.Figure, include_plotlyjs: bool | str = True) -> bytes:
    """A self-contained HTML page of the figure (works offline with ``include_plotlyjs=True``)."""
    return fig.to_html(include_plotlyjs=include_plotlyjs, full_html=True).encode("utf-8")
