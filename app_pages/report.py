"""A published report, read-only: what a shared link (``?report=<token>``) opens, and nothing else.

Everything is recomputed from the snapshot's stored draws, so changing δ or the interval level is
instant. Every string that came from the analyst or their data (title, note, names of the outcome,
factors and levels) is escaped before Streamlit or Plotly renders it.
"""

import streamlit as st

from hte import plots
from hte.decisions import SMALL_ARM, sentence
from hte.diagnostics import Diagnostics
from hte.errors import HteError
from hte.reports import EVERYONE, fingerprint_label, plot_table, report_csv, report_html
from ui import decision, page, reports, state
from ui import formatting as fmt

st.session_state[state.PAGE] = "report"
token = st.query_params.get(reports.REPORT_PARAM, "")
try:
    snap = reports.open_report(token)
except HteError as err:   # unknown, malformed, expired, withdrawn: the store's one message
    st.error(str(err), icon=":material/link_off:")
    st.stop()

binary, factors = snap.binary, list(snap.factors)
outcome = fmt.md(snap.outcome)
title = snap.title or "Treatment-effect report"
st.set_page_config(page_title=" ".join(title.split())[:80])
st.title(fmt.md(title), anchor=False)
people = snap.data.get("n_used")
st.caption(fmt.md(reports.report_expiry(snap)) + ". "
           + (f"{people:,} people analysed. " if isinstance(people, int) else "")
           + "A read-only snapshot: it holds no individual data.")
if snap.note:
    with st.container(border=True):
        st.text(snap.note)

rule = decision.decision_controls(snap.outcome, binary, snap.threshold, snap.interval, snap.cutoff,
                                  snap.min_arm)
table = reports.report_effects(snap, rule)
shown = plot_table(table, factors, snap.outcome)
interval = f"{rule.interval:.0%}"
d = fmt.fmt_effect(rule.threshold, binary)

# -- headline -------------------------------------------------------------------------------------
overall = table[table["by"] == EVERYONE].iloc[0]
st.markdown("#### " + sentence(overall, rule, outcome, binary))
m1, m2, m3, m4 = st.columns(4)
digits = plots.effect_decimals(overall[["mean", "lower", "upper"]].astype(float), binary)
m1.metric("Average effect", plots.format_effect(overall["mean"], binary, digits),
          help="Posterior mean of the average treatment effect over everybody in the data.")
m2.metric(f"{interval} interval", fmt.fmt_range(overall["lower"], overall["upper"], binary, digits))
m3.metric(f"Chance it is above +{d}", fmt.fmt_prob(overall["p_above"]))
m4.metric("Verdict", overall["verdict"].capitalize())

try:
    diagnostics = Diagnostics.from_dict(snap.diagnostics)
except (TypeError, ValueError):
    st.info("The sampler's diagnostics are not available for this report.")
else:
    if diagnostics.ok:
        st.success(diagnostics.verdict(), icon=":material/check_circle:")
    else:
        st.warning("When this model was fitted: " + diagnostics.verdict(),
                   icon=":material/warning:")
    if diagnostics.attempts > 1:
        st.dataframe(diagnostics.attempts_table(), hide_index=True,
                     column_config={"Seconds": st.column_config.NumberColumn(format="%.1f")})

# -- forest plot ----------------------------------------------------------------------------------
st.subheader("Effects by group")
singles = table["by"].isin([EVERYONE, *factors])
st.markdown(f"Each point is a group's average effect and the bar its {interval} credible "
            f"interval. The green band is the practically-zero zone (±{d}). Colour and shape give "
            f"the verdict: likely positive, likely negative or practically zero when the model is "
            f"at least {rule.cutoff:.0%} sure, and uncertain otherwise. A group with fewer than "
            f"{rule.min_arm} treated or control people is **extrapolated** (a hollow grey "
            "circle): its estimate is borrowed from the other groups and gets no verdict. ⚠ "
            f"marks groups with fewer than {SMALL_ARM} people in an arm.")
page.show_figure(reports.report_figure(
    token, "forest", (rule,), lambda: plots.forest_plot(
        shown.table.loc[singles], threshold=rule.threshold, binary=binary, outcome=shown.outcome,
        interval=rule.interval)), "effects_by_group", key="report_forest")
st.caption(fmt.md(reports.withheld_sentence(snap.withheld, snap.min_cell)))

st.subheader("Table of effects")
st.caption("n per arm, the raw difference in means within each group, the model's estimate with "
           f"its {interval} interval, and the chances that the effect is above +δ, practically "
           "zero, or below −δ." + (" Effects in percentage points (pp)." if binary else "")
           + " The CSV download at the end has every group at full precision."
           + (f" Raw estimates are left out where an arm has fewer than {snap.min_cell:,} people."
              if table["raw_mean"].isna().any() else ""))
display, config = fmt.display_effects(table.loc[singles], binary, rule.min_arm)
st.dataframe(display, column_config=config, hide_index=True,
             height=fmt.table_height(len(display)))

# -- intersections --------------------------------------------------------------------------------
members = {i: [f for f in factors if reports.present(row[f])] for i, row in table.iterrows()}
pairs = {b: members[i] for i, b in table["by"].items() if len(members[i]) == 2}
if pairs:
    st.subheader("Intersections")
    c1, c2 = st.columns([1, 1])
    with c1:
        pair = state.persistent(st.selectbox, "Pair of factors", "pair", next(iter(pairs)),
                                options=list(pairs))
    with c2:
        color = state.persistent(st.radio, "Colour the cells by", "color", "p_above",
                                 options=["p_above", "mean"], horizontal=True,
                                 format_func=lambda v: {"p_above": "Chance above +δ",
                                                        "mean": "Mean effect"}[v])
    rows, cols = (shown.factors[f] for f in pairs[pair])
    shows = f"the chance that the effect is above +{d}" if color == "p_above" else "the mean"
    st.caption(f"Each cell shows {shows} and the number of people. A cell marked 'not shown' "
               "has nobody in it, or too few people to publish. Hover over a cell for details.")
    in_pair = table["by"] == pair
    page.show_figure(reports.report_figure(
        token, "heatmap", (rule, pair, color), lambda: reports.report_heatmap(
            shown, in_pair, rows, cols, color=color, rule=rule, binary=binary,
            min_cell=snap.min_cell)), "intersection", key="report_heatmap")
    display, config = fmt.display_effects(table.loc[in_pair], binary, rule.min_arm)
    st.dataframe(display, column_config=config, hide_index=True,
                 height=fmt.table_height(len(display)))

# -- densities ------------------------------------------------------------------------------------
published = [f for f in factors if (table["by"] == f).any()]
if published:
    st.subheader("How sure are we? The whole posterior")
    factor = state.persistent(st.selectbox, "Show the posterior of each group of", "density_factor",
                              published[0], options=published)
    idx = table.index[table["by"] == factor]
    curves = {shown.table.loc[i, shown.factors[factor]]
              + (" (extrapolated)" if table.loc[i, "extrapolated"] else
                 " ⚠" if table.loc[i, "small_arm"] else ""): snap.draws[:, i] for i in idx}
    st.caption("Each curve shows how plausible each size of effect is for one group. Wide, flat "
               "curves mean little information (few people); curves inside the green band mean "
               "a practically-zero effect.")
    page.show_figure(reports.report_figure(
        token, "densities", (rule.threshold, factor), lambda: plots.density_plot(
            curves, threshold=rule.threshold, binary=binary, outcome=shown.outcome,
            title=f"Effect by {shown.factors[factor]}")),
        "posterior_by_factor", key="report_densities")

# -- compare two groups ---------------------------------------------------------------------------
if factors and len(table) > 1:
    st.subheader("Compare two groups")
    st.markdown("Is the effect really larger for one group than another? The difference of their "
                "effects is computed draw by draw from the same model.")
    options = list(table.index)
    first = [i for i in options if table.loc[i, "by"] == factors[0]] or options
    c1, c2 = st.columns(2, gap="large")
    with c1:
        a = state.persistent(st.selectbox, "Group A", "cmp_a", first[0], options=options,
                             format_func=lambda i: table.loc[i, "label"])
    with c2:
        b = state.persistent(st.selectbox, "Group B", "cmp_b", first[min(1, len(first) - 1)],
                             options=options, format_func=lambda i: table.loc[i, "label"])
    group_a = {f: str(table.loc[a, f]) for f in members[a]}
    group_b = {f: str(table.loc[b, f]) for f in members[b]}
    summary, diff = snap.contrast(group_a, group_b, rule.threshold, rule.interval, rule.cutoff)
    if a == b:
        st.info("The two groups are the same; pick different groups to compare.")
    for text in fmt.contrast_text(summary, rule, binary, group_a, group_b):
        st.markdown(text)
    diff_title = (f"Effect for {fmt.plot_escape(table.loc[a, 'label'], 50)} minus effect for "
                  f"{fmt.plot_escape(table.loc[b, 'label'], 50)}")
    fig = reports.report_figure(token, "difference", (rule, int(a), int(b)), lambda: (
        plots.posterior_plot(diff, summary, threshold=rule.threshold, binary=binary,
                             outcome=shown.outcome, label="A − B", what="Difference in effect",
                             title=diff_title)))
    page.show_figure(fig, "difference", key="report_difference")
    both, config = fmt.display_effects(table.loc[[a, b]], binary, rule.min_arm)
    st.dataframe(both, column_config=config, hide_index=True)

# -- model and data ------------------------------------------------------------------------------
st.subheader("Model and data")
st.code(snap.formula, language=None, wrap_lines=True)
data = snap.data
kind = ("yes/no outcome; effects in percentage points" if binary
        else "continuous outcome; effects are differences in means")
lines = [f"**Outcome:** {outcome} ({kind})",
         f"**Arms:** treated = {fmt.md(snap.treated)}; control = {fmt.md(snap.control)}",
         f"**Factors:** {fmt.md(', '.join(factors) or 'none')}"]
if isinstance(data.get("n_used"), int) and isinstance(data.get("n_input_rows"), int):
    dropped = data.get("dropped") or {}
    lines.append(f"**Rows:** {data['n_used']:,} of {data['n_input_rows']:,} analysed; "
                 + ("dropped: " + fmt.md("; ".join(f"{k}: {v:,}" for k, v in dropped.items()))
                    if dropped else "none dropped"))
lines.append(f"**Posterior draws kept:** {snap.n_draws:,} per group")
if data.get("fingerprint"):
    lines.append(f"**{fingerprint_label(data['fingerprint'])}:** {fmt.md(data['fingerprint'])}")
st.markdown("\n".join(f"- {line}" for line in lines))

# -- exports --------------------------------------------------------------------------------------
st.subheader("Download")
st.caption("The whole report with the decision rule chosen above: one HTML file that opens "
           "offline, and the table of every group as CSV.")
c1, c2 = st.columns(2)
c1.download_button("Download the report (HTML)",
                   data=lambda: report_html(snap, rule.threshold, rule.interval, rule.cutoff),
                   file_name="hte-report.html", mime="text/html", key="report_html",
                   icon=":material/download:", on_click="ignore")
c2.download_button("Download the table (CSV)",
                   data=lambda: report_csv(snap, rule.threshold, rule.interval, rule.cutoff),
                   file_name="hte-report.csv", mime="text/csv", key="report_csv",
                   icon=":material/download:", on_click="ignore")
