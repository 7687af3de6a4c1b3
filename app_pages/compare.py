"""Step 5: compare two groups: the posterior of the difference of their effects."""

import pandas as pd
import streamlit as st

from hte import plots
from hte.errors import HteError
from ui import decision, fitting, page, state
from ui import formatting as fmt

ANYONE = "(anyone)"

page.page_header("compare", "5 · Compare two groups",
                 "Is the effect really larger for one group than another? Pick two groups (a level "
                 "of one factor, or a combination such as Black men) and see the difference of "
                 "their effects, computed draw by draw from the same model.")

fit = page.need_fit()
page.need_factors(fit, 1, "The model has no factors, so there are no groups to compare.")

rule = decision.rule_controls(fit)
page.diagnostics_notice(fit)
outcome, binary = fit.spec.outcome, fit.binary


def group_picker(side: str, default: dict[str, str]) -> dict[str, str]:
    group = {}
    for f in fit.factors:
        level = state.persistent(st.selectbox, f, f"cmp_{side}_{f}", default.get(f, ANYONE),
                                 options=[ANYONE, *fit.levels[f]])
        if level != ANYONE:
            group[f] = level
    return group


f0 = fit.factors[0]
levels0 = fit.levels[f0]
left, right = st.columns(2, gap="large")
with left, st.container(border=True):
    st.markdown("**Group A**")
    a = group_picker("a", {f0: levels0[0]})
with right, st.container(border=True):
    st.markdown("**Group B**")
    b = group_picker("b", {f0: levels0[min(1, len(levels0) - 1)]})

try:
    summary, diff = fit.contrast(a, b, rule.threshold, rule.interval, rule.cutoff,
                                 min_arm=rule.min_arm)
    both = pd.DataFrame([fitting.group_row(fit, a, rule), fitting.group_row(fit, b, rule)])
except HteError as err:
    st.error(str(err), icon=":material/error:")
    st.stop()

name_a, name_b = summary["a"], summary["b"]
if a == b:
    st.info("The two groups are the same; pick different levels to compare.")
for text in fmt.contrast_text(summary, rule, binary, a, b):
    st.markdown(text)

fig = plots.posterior_plot(diff, summary, threshold=rule.threshold, binary=binary,
                           outcome=outcome, label="A − B", what="Difference in effect",
                           title=f"Effect for {name_a} minus effect for {name_b}"
                                 + (" (extrapolated)" if summary["extrapolated"] else ""))
page.show_figure(fig, "difference", key="difference")

st.subheader("The two groups")
shown, config = fmt.display_effects(both, binary, rule.min_arm)
st.dataframe(shown, column_config=config, hide_index=True)
diff_row = {"by": "difference (A − B)", "label": f"{name_a} minus {name_b}",
            **{k: v for k, v in summary.items() if k not in ("a", "b")}}
page.download_table(pd.concat([both, pd.DataFrame([diff_row])], ignore_index=True),
                    "comparison", key="compare_csv")
