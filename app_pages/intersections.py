"""Step 4: two factors at once: the effect in every combination of their levels."""

import streamlit as st

from hte import plots
from hte.decisions import SMALL_ARM, arm_phrase
from ui import decision, fitting, page, state
from ui import formatting as fmt

page.page_header("intersections", "4 · Intersections",
                 "Choose two factors to see the effect in every combination of their levels, "
                 "such as Black men or young Republicans.")

fit = page.need_fit()
page.need_factors(fit, 2, "Intersections need at least two factors in the model.")

rule = decision.rule_controls(fit)
page.diagnostics_notice(fit)
outcome, binary = fit.spec.outcome, fit.binary
modelled = [t for t in fit.spec.interactions if len(t) == 2]
first = modelled[0] if modelled else fit.factors[:2]

c1, c2, c3 = st.columns([1, 1, 1.3])
with c1:
    rows = state.persistent(st.selectbox, "Rows", "ix_rows", first[0], options=list(fit.factors))
with c2:
    others = [f for f in fit.factors if f != rows]
    cols = state.persistent(st.selectbox, "Columns", "ix_cols",
                            first[1] if first[1] in others else others[0], options=others)
with c3:
    color = state.persistent(st.radio, "Colour the cells by", "ix_color", "p_above",
                             options=["p_above", "mean"], horizontal=True,
                             format_func=lambda v: {"p_above": "Chance above +δ",
                                                    "mean": "Mean effect"}[v])

if any(set(t) == {rows, cols} for t in fit.spec.interactions):
    st.caption(f"{rows} × {cols} is modelled as an intersection: each combination has an effect "
               "of its own, partially pooled toward what the two factors predict.")
else:
    st.caption(f"{rows} × {cols} is not modelled as an intersection, so each cell combines the "
               f"effects of {rows} and {cols} (and the mix of other factors among its people). "
               "To let a combination differ on its own, add the intersection on the Model page "
               "and fit again.")

table = fitting.effects(fit, [rows, cols], rule)
d = fmt.fmt_effect(rule.threshold, binary)
shows = f"the chance that the effect is above +{d}" if color == "p_above" else "the mean effect"
st.markdown(f"Each cell shows {shows} and the number of people. Cells with fewer than "
            f"{SMALL_ARM} people in an arm (treated or control) are outlined with dots and marked "
            f"⚠: their estimates lean mostly on the rest of the data. Cells with fewer than "
            f"{rule.min_arm} are **extrapolated**: grey, uncoloured, with no verdict, because the "
            "model borrows their estimate from the other cells. Hover over a cell for details, "
            "or click it to see its posterior below.")
chart = st.container()   # drawn after the cell is known, so the chosen cell is outlined

labels = list(table["label"])
chart_key = f"heatmap_{rows}_{cols}"   # a new chart (and selection) for another pair
selection = st.session_state.get(chart_key)
points = (selection or {}).get("selection", {}).get("points", []) if selection else []
if points:   # a click on the heatmap picks the cell
    pt = points[0]
    try:
        r_level = str(fit.levels[rows][int(pt["y"])])
        c_level = str(fit.levels[cols][int(pt["x"])])
        picked = table[(table[rows].astype(str) == r_level) & (table[cols].astype(str) == c_level)]
        click = tuple(picked["label"])
    except (KeyError, IndexError, TypeError, ValueError):
        click = ()
    if click and st.session_state.get("hte_ix_click") != (chart_key, click):
        st.session_state["hte_ix_click"] = (chart_key, click)
        state.prefs()["ix_cell"] = click[0]
        state.reset_widget("ix_cell")

by_label = table.set_index("label")
# the default cell: the likeliest positive one among those with data enough for a verdict
likeliest = table.sort_values(["extrapolated", "p_above", "mean"],
                              ascending=[True, False, False])["label"].iloc[0]
cell = state.persistent(st.selectbox, "Cell (or click one above)", "ix_cell", likeliest,
                        options=labels,
                        format_func=lambda v: f"{v} (n = {int(by_label.loc[v, 'n']):,})")
with chart:
    fig = plots.heatmap(table, rows, cols, levels=fit.levels, color=color,
                        threshold=rule.threshold, binary=binary, outcome=outcome,
                        interval=rule.interval,
                        selected=(str(by_label.loc[cell, rows]), str(by_label.loc[cell, cols])))
    page.show_figure(fig, f"intersection_{rows}_{cols}", key=chart_key, on_select="rerun",
                     selection_mode="points")
row = by_label.loc[cell]
group = {rows: str(row[rows]), cols: str(row[cols])}
if row["extrapolated"]:
    arms = arm_phrase(int(row["n_treated"]), int(row["n_control"]), rule.min_arm)
    st.warning(f"This cell is extrapolated: {arms} in it, so the estimate below is the model's "
               "guess from the other cells, not a measurement.", icon=":material/warning:")
elif row["small_arm"]:
    st.warning(f"This cell has a small arm ({int(row['n_treated']):,} treated, "
               f"{int(row['n_control']):,} control), so its estimate leans mostly on the other "
               "cells.", icon=":material/warning:")
st.markdown(f"**{fmt.headline(row, rule, fmt.md(outcome), binary, who=fmt.md_who(group))}**")
draws = fitting.effect_draws(fit, [group])[:, 0]
page.show_figure(plots.posterior_plot(draws, row, threshold=rule.threshold, binary=binary,
                                      outcome=outcome, label=cell,
                                      title=("Extrapolated, no verdict: the model's guess from the "
                                             "other cells" if row["extrapolated"] else None)),
               "cell_posterior", key="cell_posterior")

st.subheader("Table")
shown, config = fmt.display_effects(table, binary, rule.min_arm)
st.dataframe(shown, column_config=config, hide_index=True, height=fmt.table_height(len(shown)))
page.download_table(table, f"effects_{rows}_{cols}", key="ix_csv")
