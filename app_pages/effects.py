"""Step 3: the effects, overall and for every group, from the stored draws."""

import streamlit as st

from hte import plots
from hte.decisions import SMALL_ARM
from ui import decision, fitting, page, state
from ui import formatting as fmt

page.page_header("effects", "3 · Effects",
                 "Who does the treatment work for? Every number on this page comes from the fitted "
                 "model's draws; changing δ or the interval level updates it at once, without "
                 "refitting.")

fit = page.need_fit()
rule = decision.rule_controls(fit)
page.diagnostics_notice(fit)
outcome, binary = fit.spec.outcome, fit.binary
interval = f"{rule.interval:.0%}"

# -- headline -------------------------------------------------------------------------------------
overall = fitting.effects(fit, None, rule).iloc[0]
st.markdown(f"#### {fmt.headline(overall, rule, fmt.md(outcome), binary)}")
m1, m2, m3, m4 = st.columns(4)
digits = plots.effect_decimals(overall[["mean", "lower", "upper"]].astype(float), binary)
m1.metric("Average effect", plots.format_effect(overall["mean"], binary, digits),
          help="Posterior mean of the average treatment effect over everybody in the data.")
m2.metric(f"{interval} interval", fmt.fmt_range(overall["lower"], overall["upper"], binary, digits))
m3.metric(f"Chance it is above +{fmt.fmt_effect(rule.threshold, binary)}",
          fmt.fmt_prob(overall["p_above"]))
m4.metric("Verdict", overall["verdict"].capitalize())

# -- forest plot ----------------------------------------------------------------------------------
st.subheader("Effects by group")
table = fitting.effect_table(fit, rule)
if not fit.factors:
    st.info("The model has no factors, so there is only the average effect. Choose factors on "
            "the Model page to compare groups.")
    st.page_link(state.PAGES["model"], label="Go to Model", icon=":material/tune:")
else:
    notes = []
    for verdict in ("likely positive", "likely negative"):
        rows = table[(table["by"] != "Everyone") & (table["verdict"] == verdict)]
        if len(rows):
            groups = "; ".join(f"{by} {', '.join(block[by].astype(str))}"
                               for by, block in rows.groupby("by", sort=False))
            notes.append(f"{verdict} for {groups}")
    st.markdown(f"Each point is a group's average effect and the bar its {interval} credible "
                f"interval. The green band is the practically-zero zone (±"
                f"{fmt.fmt_effect(rule.threshold, binary)}). Colour and shape give the verdict: "
                f"the effect is called likely positive, likely negative or practically zero when "
                f"the model is at least {rule.cutoff:.0%} sure, and uncertain otherwise."
                + (f" Here the effect is {' and '.join(notes)}." if notes else ""))
    borrowed = table[table["extrapolated"]]
    if len(borrowed):
        names = ", ".join(borrowed["label"].head(6)) + (", …" if len(borrowed) > 6 else "")
        st.warning(f"**{len(borrowed)} group{'s are' if len(borrowed) > 1 else ' is'} "
                   f"extrapolated** ({names}): fewer than {rule.min_arm} treated or control "
                   "people, so the model borrows the estimate from the other groups instead of "
                   "measuring it. They get no verdict and are drawn as hollow grey circles; "
                   "read them as the model's guess, not as findings.",
                   icon=":material/warning:")
    if (table["small_arm"] & ~table["extrapolated"]).any():
        st.caption(f"⚠ and a dark ring mark groups with fewer than {SMALL_ARM} people in an "
                   "arm: their verdicts stand, but their estimates lean mostly on the other "
                   "groups.")
    fig = plots.forest_plot(table, threshold=rule.threshold, binary=binary, outcome=outcome,
                            interval=rule.interval)
    page.show_figure(fig, "effects_by_group", key="forest")

# -- table ----------------------------------------------------------------------------------------
st.subheader("Table of effects")
shown, config = fmt.display_effects(table, binary, rule.min_arm)
st.caption(f"n per arm, the raw difference in means within each group, the model's estimate with "
           f"its {interval} interval, and the chances that the effect is above +δ, practically "
           f"zero, or below −δ." + (" Effects in percentage points (pp)." if binary else "")
           + " The download has full precision" + (" (effects as differences in probability, "
                                                   "0.05 = 5 points)." if binary else "."))
st.dataframe(shown, column_config=config, hide_index=True, height=fmt.table_height(len(shown)))
page.download_table(table, "effects", key="effects_csv")

# -- densities ------------------------------------------------------------------------------------
if fit.factors:
    st.subheader("How sure are we? The whole posterior")
    factor = state.persistent(st.selectbox, "Show the posterior of each group of", "density_factor",
                              fit.factors[0], options=list(fit.factors))
    groups = fit.groups(factor)
    draws = fitting.effect_draws(fit, groups)
    flags = fitting.effects(fit, factor, rule).set_index(factor)
    curves = {g[factor] + (" (extrapolated)" if flags.loc[g[factor], "extrapolated"] else
                           " ⚠" if flags.loc[g[factor], "small_arm"] else ""): draws[:, i]
              for i, g in enumerate(groups)}
    st.caption("Each curve shows how plausible each size of effect is for one group. Wide, flat "
               "curves mean little information (few people); curves inside the green band mean "
               "a practically-zero effect.")
    page.show_figure(plots.density_plot(curves, threshold=rule.threshold, binary=binary,
                                        outcome=outcome, title=f"Effect by {factor}"),
                   f"posterior_by_{factor}", key="densities")

    # -- shrinkage --------------------------------------------------------------------------------
    st.subheader("What partial pooling did")
    pooled = fitting.effect_table(fit, rule, pairs=[tuple(t) for t in fit.spec.interactions])
    st.markdown("Each point is a group: across, its **raw** difference in means (the group "
                "analysed on its own); up, the **model's** estimate. Small groups (small points) "
                "have noisy raw differences, so the model pulls them toward the overall effect "
                "(the solid line) unless the data clearly disagree; large groups barely move. "
                "That is why a surprising raw difference in a small group is not chased as a "
                "finding.")
    page.show_figure(plots.shrinkage_plot(pooled, binary=binary, outcome=outcome,
                                          overall=float(overall["mean"])),
                   "shrinkage", key="shrinkage")
