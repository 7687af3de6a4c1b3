"""Figures from hand-made tables: traces, verdict colours, the ±delta band, hover text, units."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from hte import plots
from hte.decisions import LIKELY_NEGATIVE, LIKELY_POSITIVE, PRACTICALLY_ZERO, UNCERTAIN

FACTORS = ["gender", "race"]


def _row(by, label, levels, mean, lower, upper, verdict, n=100, raw=None, p=(0.5, 0.3, 0.2)):
    row = {"by": by, "label": label, **{f: levels.get(f) for f in FACTORS}, "n": n,
           "n_treated": n // 2, "n_control": n - n // 2, "mean": mean, "median": mean, "sd": 0.05,
           "lower": lower, "upper": upper, "p_above": p[0], "p_practically_zero": p[1],
           "p_below": p[2], "verdict": verdict, "raw_mean": mean * 1.5 if raw is None else raw,
           "raw_se": 0.1}
    return row


@pytest.fixture
def effects() -> pd.DataFrame:
    """Everyone, two genders, two races: one row per verdict."""
    return pd.DataFrame([
        _row("Everyone", "Everyone", {}, 0.20, 0.10, 0.30, LIKELY_POSITIVE, n=400,
             p=(0.95, 0.05, 0.0)),
        _row("gender", "gender = Female", {"gender": "Female"}, 0.25, 0.12, 0.38,
             LIKELY_POSITIVE, n=210, p=(0.97, 0.03, 0.0)),
        _row("gender", "gender = Male", {"gender": "Male"}, 0.01, -0.04, 0.05, PRACTICALLY_ZERO,
             n=190, p=(0.0, 0.99, 0.01)),
        _row("race", "race = Black", {"race": "Black"}, -0.30, -0.50, -0.15, LIKELY_NEGATIVE,
             n=60, p=(0.0, 0.02, 0.98)),
        _row("race", "race = White", {"race": "White"}, 0.10, -0.20, 0.40, UNCERTAIN, n=340),
    ])


@pytest.fixture
def pairs() -> pd.DataFrame:
    """gender × race: three of four combinations observed, one with few people."""
    return pd.DataFrame([
        _row("gender × race", "gender = Female, race = Black",
             {"gender": "Female", "race": "Black"}, 0.30, 0.1, 0.5, LIKELY_POSITIVE, n=12,
             p=(0.92, 0.08, 0.0)),
        _row("gender × race", "gender = Female, race = White",
             {"gender": "Female", "race": "White"}, 0.05, -0.1, 0.2, UNCERTAIN, n=198),
        _row("gender × race", "gender = Male, race = White",
             {"gender": "Male", "race": "White"}, -0.02, -0.1, 0.05, PRACTICALLY_ZERO, n=142,
             p=(0.01, 0.95, 0.04)),
    ])


LEVELS = {"gender": ("Female", "Male"), "race": ("Black", "White")}


def _rects(fig: go.Figure) -> list:
    return [s for s in fig.layout.shapes if s.type == "rect"]


def _band(fig: go.Figure):
    bands = [s for s in _rects(fig) if s.fillcolor == plots.BAND_COLOR]
    assert len(bands) == 1
    return bands[0]


# -- forest plot ----------------------------------------------------------------------------------

def test_forest_plot_one_trace_per_verdict_with_its_colour_and_shape(effects):
    fig = plots.forest_plot(effects, threshold=0.1, binary=False, outcome="support")
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {LIKELY_POSITIVE, LIKELY_NEGATIVE, PRACTICALLY_ZERO, UNCERTAIN}
    for verdict, trace in by_name.items():
        assert trace.marker.color == plots.VERDICT_COLORS[verdict]
        assert trace.marker.symbol == plots.VERDICT_SYMBOLS[verdict]
        rows = effects[effects["verdict"] == verdict]
        np.testing.assert_allclose(trace.x, rows["mean"])
        np.testing.assert_allclose(trace.error_x.array, rows["upper"] - rows["mean"])
        np.testing.assert_allclose(trace.error_x.arrayminus, rows["mean"] - rows["lower"])
    assert len(set(plots.VERDICT_COLORS.values())) == 5     # extrapolated has its own
    single = plots.forest_plot(effects[effects["verdict"] == UNCERTAIN], threshold=0.1,
                               binary=False, outcome="support")
    assert single.layout.showlegend is True           # the colour is explained even then


def test_forest_plot_shades_the_band_and_groups_rows_by_factor(effects):
    fig = plots.forest_plot(effects, threshold=0.1, binary=False, outcome="support")
    band = _band(fig)
    assert (band.x0, band.x1) == (-0.1, 0.1)
    ticks = list(fig.layout.yaxis.ticktext)
    assert ticks == ["<b>Everyone</b>", "<b>gender</b>", "Female", "Male", "<b>race</b>",
                     "Black", "White"]
    # each point sits on its own tick, in table order, under its factor's heading
    ys = {t.name: list(t.y) for t in fig.data}
    positions = dict(zip(fig.layout.yaxis.ticktext, fig.layout.yaxis.tickvals, strict=True))
    assert ys[LIKELY_NEGATIVE] == [positions["Black"]]
    assert fig.layout.yaxis.autorange == "reversed"
    assert "Effect on support" in fig.layout.xaxis.title.text
    assert "90% interval" in fig.layout.xaxis.title.text


def test_forest_plot_hover_text_has_interval_probabilities_and_counts(effects):
    fig = plots.forest_plot(effects, threshold=0.1, binary=False, outcome="support")
    trace = next(t for t in fig.data if t.name == LIKELY_NEGATIVE)
    text = trace.text[0]
    assert "race = Black" in text
    assert "90% interval −0.500 to −0.150" in text
    assert "P(effect > 0.1) = <1%" in text
    assert "P(effect < −0.1) = 98%" in text
    assert "n = 60 (30 treated, 30 control)" in text
    assert "Verdict: likely negative" in text
    assert trace.hovertemplate == "%{text}<extra></extra>"


def test_forest_plot_binary_in_percentage_points(effects):
    fig = plots.forest_plot(effects, threshold=0.05, binary=True, outcome="donated")
    band = _band(fig)
    assert (band.x0, band.x1) == (-5.0, 5.0)
    pos = next(t for t in fig.data if t.name == LIKELY_POSITIVE)
    np.testing.assert_allclose(pos.x, [20.0, 25.0])
    assert "percentage points" in fig.layout.xaxis.title.text
    assert "25.0 pp" in pos.text[1]
    assert "P(effect > 5 pp)" in pos.text[1]


def test_forest_plot_without_threshold_has_no_band_but_a_zero_line(effects):
    fig = plots.forest_plot(effects, threshold=0.0, binary=False, outcome="support")
    assert not [s for s in _rects(fig) if s.fillcolor == plots.BAND_COLOR]
    assert any(s.type == "line" and s.x0 == 0 and s.x1 == 0 for s in fig.layout.shapes)


# -- densities ------------------------------------------------------------------------------------

def test_kde_curve_integrates_to_one():
    draws = np.random.default_rng(0).normal(1.0, 0.5, 4000)
    x, dens = plots.kde_curve(draws)
    assert abs(np.trapezoid(dens, x) - 1.0) < 0.02
    assert abs(x[np.argmax(dens)] - 1.0) < 0.15


def test_density_plot_one_curve_per_group_with_band():
    rng = np.random.default_rng(1)
    curves = {"Female": rng.normal(0.02, 0.01, 500), "Male": rng.normal(0.05, 0.01, 500)}
    fig = plots.density_plot(curves, threshold=0.01, binary=True, outcome="donated",
                             title="Effect by gender")
    assert [t.name for t in fig.data] == ["Female", "Male"]
    assert fig.data[0].line.color != fig.data[1].line.color
    assert (_band(fig).x0, _band(fig).x1) == (-1.0, 1.0)
    assert abs(float(np.mean(fig.data[1].x)) - 5.0) < 1.0   # drawn in points
    assert "percentage points" in fig.layout.xaxis.title.text
    assert fig.layout.title.text == "Effect by gender"


def test_posterior_plot_labels_regions_with_the_given_probabilities():
    draws = np.random.default_rng(2).normal(0.15, 0.1, 4000)
    summary = {"p_below": 0.004, "p_practically_zero": 0.31, "p_above": 0.686, "mean": 0.15}
    fig = plots.posterior_plot(draws, summary, threshold=0.1, binary=False, outcome="support",
                               label="Black men")
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == ["below −0.1: <1%", "practically zero: 31%", "above 0.1: 69%"]
    colors = [t.line.color for t in fig.data[:3]]
    assert colors == [plots.VERMILLION, plots.GREEN, plots.BLUE]
    assert (_band(fig).x0, _band(fig).x1) == (-0.1, 0.1)


# -- heatmap --------------------------------------------------------------------------------------

def test_heatmap_cells_values_counts_and_missing_combinations(pairs):
    fig = plots.heatmap(pairs, "gender", "race", levels=LEVELS, threshold=0.1, binary=False,
                        outcome="support")
    hm = fig.data[0]
    assert list(fig.layout.yaxis.ticktext) == ["Female", "Male"]
    assert list(fig.layout.xaxis.ticktext) == ["Black", "White"]
    assert list(hm.z[0]) == [0.92, 0.5] and hm.z[1][0] is None
    assert hm.text[1][0] == "nobody"
    assert hm.text[0][1] == "50%<br>n = 198"
    assert (hm.zmin, hm.zmax) == (0.0, 1.0)
    assert "gender = Female, race = White" in hm.hovertext[0][1]
    assert "P(effect > 0.1) = 50%" in hm.hovertext[0][1]
    assert "Effect 0.050<br>" in hm.hovertext[0][1]


def test_heatmap_marks_cells_with_a_small_arm(pairs):
    fig = plots.heatmap(pairs, "gender", "race", levels=LEVELS, threshold=0.1, binary=False,
                        outcome="support")
    assert fig.data[0].text[0][0].endswith("n = 12 ⚠")     # 6 treated, 6 control
    assert "⚠" not in fig.data[0].text[0][1]
    assert "Small arm: only 6 treated" in fig.data[0].hovertext[0][0]
    outlines = [s for s in fig.layout.shapes if s.type == "rect" and s.line.dash == "dot"]
    assert len(outlines) == 1
    assert (outlines[0].x0 < 0 < outlines[0].x1) and (outlines[0].y0 < 0 < outlines[0].y1)


def test_heatmap_by_mean_is_diverging_around_zero_and_in_points_for_binary(pairs):
    fig = plots.heatmap(pairs, "race", "gender", levels=LEVELS, color="mean", threshold=0.02,
                        binary=True, outcome="donated")
    hm = fig.data[0]
    assert hm.zmid == 0 and hm.zmin == -hm.zmax
    assert hm.z[0][0] == pytest.approx(30.0)            # Black women, in points
    assert hm.text[0][0].startswith("30.0 pp")
    assert "(pp)" in hm.colorbar.title.text
    with pytest.raises(ValueError):
        plots.heatmap(pairs, "gender", "race", levels=LEVELS, color="verdict", threshold=0.1,
                      binary=False, outcome="support")


# -- shrinkage, traces, predictive check ----------------------------------------------------------

def test_shrinkage_plot_raw_against_pooled_sized_by_n(effects, pairs):
    table = pd.concat([effects, pairs], ignore_index=True)
    fig = plots.shrinkage_plot(table, binary=False, outcome="support", overall=0.2)
    traces = {t.name: t for t in fig.data}
    single, combo = traces["level of one factor"], traces["combination of factors"]
    assert len(single.x) == 4 and len(combo.x) == 3       # "Everyone" is left out
    np.testing.assert_allclose(single.x, effects["raw_mean"][1:])
    np.testing.assert_allclose(single.y, effects["mean"][1:])
    sizes = np.asarray(single.marker.size)
    n = effects["n"][1:].to_numpy()
    assert np.argmax(sizes) == np.argmax(n) and np.argmin(sizes) == np.argmin(n)
    diagonal = traces["no pooling (model = raw)"]
    assert list(diagonal.x) == list(diagonal.y)
    assert any(s.type == "line" and s.y0 == 0.2 for s in fig.layout.shapes)
    assert "Raw difference" in fig.layout.xaxis.title.text


def test_trace_plot_one_line_per_chain_and_parameter():
    rng = np.random.default_rng(3)
    fig = plots.trace_plot({"tau": rng.normal(size=(4, 3000)), "sigma": rng.normal(size=(4, 50))},
                           max_points=1000)
    assert len(fig.data) == 8
    assert len(fig.data[0].x) == 1000                      # thinned for drawing
    assert [a.text for a in fig.layout.annotations] == ["tau", "sigma"]
    assert sum(t.showlegend for t in fig.data) == 4


def test_ppc_plot_bins_against_intervals_and_standardized_cells_in_percent_for_binary():
    cells = pd.DataFrame({"gender": ["Female", "Female", "Male", "Male"],
                          "arm": ["treated", "control", "treated", "control"],
                          "n": [10, 12, 9, 11], "observed": [0.5, 0.25, 0.9, 0.1],
                          "predicted": [0.45, 0.3, 0.5, 0.12], "lower": [0.2, 0.1, 0.3, 0.0],
                          "upper": [0.7, 0.5, 0.7, 0.3],
                          "covered": [True, True, False, True],
                          "standardized": [0.3, -0.4, 2.6, 0.1]})
    bins = pd.DataFrame({"arm": ["treated", "control"], "bin": [1, 1], "cells": [2, 2],
                         "n": [19, 23], "predicted": [0.47, 0.2], "observed": [0.69, 0.17],
                         "lower": [0.35, 0.1], "upper": [0.6, 0.3], "covered": [False, True]})
    fig = plots.ppc_plot(bins, cells, binary=True, outcome="donated", factors=["gender"])
    traces = {t.name: t for t in fig.data}
    outside = traces["treated: observed — outside interval"]
    assert list(outside.x) == [47.0] and list(outside.y) == [69.0]     # percent
    assert outside.marker.symbol == "x" and outside.xaxis == "x"
    interval = traces["treated: model's 90% interval"]
    assert list(interval.y[:2]) == [35.0, 60.0]                         # the replicated interval
    flagged = traces["treated cells — outside interval"]
    assert flagged.xaxis == "x2" and list(flagged.y) == [2.6]           # standardized
    assert "gender = Male" in flagged.text[0]
    band = [s.y0 for s in fig.layout.shapes]
    assert any(abs(y - 1.645) < 1e-3 for y in band) and any(abs(y + 1.645) < 1e-3 for y in band)
    assert "%" in fig.layout.xaxis.title.text


# -- numbers and exports --------------------------------------------------------------------------

def test_formatting_for_reading():
    assert plots.format_effect(0.0412, binary=True) == "4.1 pp"
    assert plots.format_effect(-0.2149, binary=False) == "−0.215"
    assert plots.format_effect(0.1, binary=False) == "0.1"
    assert plots.format_effect(1234.5, binary=False) == "1,234"
    assert plots.format_probability(0.999) == ">99%"
    assert plots.format_probability(0.001) == "<1%"
    assert plots.format_probability(0.944) == "94%"
    assert plots.effect_decimals([0.21, 0.05, 0.4]) == 3
    assert plots.effect_decimals([0.021, 0.05]) == 4
    assert plots.effect_decimals([12.0, 30.0]) == 1
    assert plots.effect_decimals([0.01], binary=True) == 1


def test_csv_bytes_neutralizes_spreadsheet_formulas_but_keeps_numbers():
    table = pd.DataFrame({"label": ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "plain",
                                    "\tTAB"],
                          "mean": [-0.5, 0.25, -1e-9, 1.0, 2.0, 3.0],
                          "=cmd": ["a", "b", "c", "d", None, "f"]})
    text = plots.csv_bytes(table).decode("utf-8")
    back = pd.read_csv(io.StringIO(text))
    assert list(back.columns) == ["label", "mean", "'=cmd"]
    assert list(back["label"][:5]) == ["'=HYPERLINK(\"x\")", "'+1", "'-2+3", "'@SUM(A1)", "plain"]
    assert back["label"][5] == "'\tTAB"
    np.testing.assert_array_equal(back["mean"], table["mean"])   # full precision, still numbers
    assert "-1e-09" in text


def test_figure_html_is_a_standalone_page(effects):
    fig = plots.forest_plot(effects, threshold=0.1, binary=False, outcome="support")
    html = plots.figure_html(fig, include_plotlyjs="cdn").decode("utf-8")
    assert "<html>" in html and "cdn.plot.ly" in html
    assert "likely negative" in html


def test_heatmap_outlines_the_selected_cell_and_can_be_clicked(pairs):
    fig = plots.heatmap(pairs, "gender", "race", levels=LEVELS, threshold=0.1, binary=False,
                        outcome="support", selected=("Male", "White"))
    solid = [s for s in fig.layout.shapes if s.type == "rect" and s.line.dash is None
             and s.line.width == 4]
    assert len(solid) == 1 and (solid[0].x0, solid[0].y0) == (0.5, 0.5)
    assert solid[0].fillcolor is None            # outlines only: the template fills nothing
    assert fig.layout.template.layout.shapedefaults.fillcolor == "rgba(0,0,0,0)"
    clicks = fig.data[1]                          # invisible markers, one per cell with people
    assert list(zip(clicks.x, clicks.y, strict=True)) == [(0, 0), (1, 0), (1, 1)]
    assert clicks.marker.opacity == 0 and "gender = Male, race = White" in clicks.text[2]


def test_level_counts_match_a_crosstab_of_the_rows(sample_table):
    from hte.data import Roles, prepare

    factors = ("gender", "race", "party")
    data = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                       treated="treatment", factors=factors))
    counts = data.cells.level_counts()
    assert list(counts["factor"].unique()) == list(factors)
    for f in factors:
        table = pd.crosstab(sample_table[f], sample_table["treatment"])
        part = counts[counts["factor"] == f].set_index("level")
        assert list(part.index) == list(data.cells.levels[f])
        assert part["treated"].to_dict() == table["treatment"].to_dict()
        assert part["control"].to_dict() == table["control"].to_dict()


def test_sample_plot_stacks_arms_per_factor_with_share_treated_and_escaped_names():
    counts = pd.DataFrame({
        "factor": ["<b>grp</b>", "<b>grp</b>", "age"],
        "level": ["<script>x</script>", "B", "18-34"],
        "treated": [30, 10, 0],
        "control": [10, 10, 0],
    })
    fig = plots.sample_plot(counts, treated="yes", control="no")
    assert fig.layout.barmode == "stack"
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 4                                   # 2 factors x 2 arms
    treated = bars[0]
    assert list(treated.x) == [30, 10]
    assert list(treated.y) == ["&lt;script&gt;x&lt;/script&gt;", "B"]
    assert treated.marker.color == plots.ARM_COLORS["treated"]
    control = bars[1]
    assert list(control.text) == ["75% treated", "50% treated"]
    assert list(bars[3].text) == [""]                       # nobody: no share
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["<b>&lt;b&gt;grp&lt;/b&gt;</b>", "<b>age</b>"]
    assert [t.name for t in bars if t.showlegend] == ["Treated (yes)", "Control (no)"]
