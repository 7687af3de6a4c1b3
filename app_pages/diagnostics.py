"""Step 6: can the results be trusted? Sampler convergence and a posterior predictive check."""

import pandas as pd
import streamlit as st

from hte import plots
from hte.diagnostics import MAX_R_HAT, MIN_ESS_PER_CHAIN
from ui import decision, fitting, page, state
from ui import formatting as fmt

page.page_header("diagnostics", "6 · Diagnostics",
                 "Before believing the results, check two things: that the sampler explored the "
                 "posterior properly (convergence), and that the model reproduces the data it was "
                 "fitted to (predictive check).")

fit = page.need_fit()
d = fit.diagnostics
outcome, binary = fit.spec.outcome, fit.binary

# -- convergence ----------------------------------------------------------------------------------
st.subheader("Did the sampler converge?")
if d.ok:
    st.success(d.verdict(), icon=":material/check_circle:")
else:
    st.warning(d.verdict(), icon=":material/warning:")
if d.attempts > 1:
    st.markdown(f"**The sampler ran {d.attempts} times.** An attempt with divergent transitions "
                "is repeated at a higher target acceptance with a new seed; every attempt is "
                "listed here, and the results shown are from the last.")
    st.dataframe(d.attempts_table(), hide_index=True,
                 column_config={"Seconds": st.column_config.NumberColumn(format="%.1f")})
want_ess = MIN_ESS_PER_CHAIN * d.chains
no_r_hat = "cannot compare chains: run 2 or more chains"
st.markdown("**Model parameters** (scales and coefficients)")


def convergence_metrics(columns, r_hat: float, ess_bulk: float, ess_tail: float) -> None:
    """Largest R-hat and smallest bulk and tail ESS in the first three of ``columns``."""
    columns[0].metric("Largest R-hat", f"{r_hat:.3f}" if d.chains_compared else "–",
                      help=f"Want at most {MAX_R_HAT}: chains agree." if d.chains_compared
                      else f"With one chain, R-hat {no_r_hat}.")
    columns[1].metric("Smallest bulk ESS", f"{ess_bulk:,.0f}", help="Effective draws for the "
                      f"centre of the posterior; want at least {want_ess:,}.")
    columns[2].metric("Smallest tail ESS", f"{ess_tail:,.0f}",
                      help=f"Effective draws for intervals; want at least {want_ess:,}.")


m1, m2, m3, m4, m5 = st.columns(5)
convergence_metrics((m1, m2, m3), d.max_r_hat, d.min_ess_bulk, d.min_ess_tail)
m4.metric("Divergent transitions", f"{d.divergences:,}",
          help="Want none." + (f" In the attempt shown; all attempts: "
                               f"{', '.join(str(a['divergences']) for a in d.attempts_log)}."
                               if d.attempts > 1 else ""))
m5.metric("Time", f"{fit.seconds_total:,.1f} s",
          help=f"{d.chains} chains × {d.draws:,} draws; sampling {d.seconds:,.1f} s, compiling "
               f"{d.seconds_compile:,.1f} s" + (f", {d.attempts} attempts" if d.attempts > 1
                                                  else ""))
if d.effects_checked:
    st.markdown(f"**Group effects reported** (everybody, every level, every pair of factors: "
                f"{d.effects_checked:,} effects)")
    convergence_metrics(st.columns(5), d.effects_max_r_hat, d.effects_min_ess_bulk,
                        d.effects_min_ess_tail)
with st.expander("What these numbers mean"):
    st.markdown(
        f"- **R-hat** compares the chains with each other: near 1 means they agree. Above "
        f"{MAX_R_HAT}, run longer. The chains start spread wider than the posterior, so chains "
        "that have not forgotten where they started show up here.\n"
        f"- **ESS** (effective sample size) is how many independent draws the correlated draws "
        f"are worth; the probabilities on the result pages need at least {MIN_ESS_PER_CHAIN} "
        f"per chain.\n"
        "- **Divergent transitions** mean the sampler could not follow the posterior somewhere; "
        "even a few can bias results. Raise the target acceptance or use a stronger prior.\n"
        "- **Monte Carlo error** (MCSE) of a probability is how much it would move if the "
        "sampler were run again with another seed: about ±2 MCSE.\n"
        f"- The sampler ran {d.chains} chains of {d.draws:,} draws after warm-up.")

# -- the numbers reported --------------------------------------------------------------------------
st.subheader("Are the reported numbers precise?")
rule = decision.rule_of(fit)
effects = fitting.effect_table(fit, rule, pairs=[tuple(t) for t in fit.spec.interactions])
mcse_cols = ["mcse_p_above", "mcse_p_practically_zero", "mcse_p_below"]
worst_mcse = effects[mcse_cols].max(axis=1)
at = int(worst_mcse.to_numpy().argmax())
delta = fmt.fmt_effect(rule.threshold, binary)
st.markdown(
    f"Each probability on the result pages (P(> δ), P(≈ 0), P(< −δ) with δ = {delta}) comes from "
    f"{fit.n_draws:,} correlated draws. Its Monte Carlo standard error is at most "
    f"**±{worst_mcse.iloc[at] * 100:.1f} percentage points** (for "
    f"{effects['label'].iloc[at]}), so a probability shown as 90% could be about "
    f"{2 * worst_mcse.iloc[at] * 100:.1f} points higher or lower on a rerun with another seed.")
shown_mc = effects.assign(worst=worst_mcse).sort_values(
    ["r_hat", "worst"], ascending=False, kind="stable")
shown_mc = pd.DataFrame({
    "Group": shown_mc["label"], "R-hat": shown_mc["r_hat"], "bulk ESS": shown_mc["ess_bulk"],
    "tail ESS": shown_mc["ess_tail"],
    "P(> δ)": shown_mc["p_above"] * 100, "± MCSE": shown_mc["mcse_p_above"] * 100,
    "P(≈ 0)": shown_mc["p_practically_zero"] * 100,
    "± MCSE ": shown_mc["mcse_p_practically_zero"] * 100,
    "P(< −δ)": shown_mc["p_below"] * 100, "± MCSE  ": shown_mc["mcse_p_below"] * 100})
num = st.column_config.NumberColumn
pct = {c: num(c.strip(), format="%.1f%%") for c in ("P(> δ)", "P(≈ 0)", "P(< −δ)")}
err = {c: num("± MCSE", format="%.2f pp", help="Monte Carlo standard error of the probability "
                                                "to its left, in percentage points.")
       for c in ("± MCSE", "± MCSE ", "± MCSE  ")}
st.caption("Every group effect on the result pages, worst R-hat first. R-hat and ESS are "
           "computed on each effect's draws; the Monte Carlo errors depend on δ.")
st.dataframe(shown_mc, hide_index=True, height=fmt.table_height(len(shown_mc), 10),
             column_config={"R-hat": num(format="%.3f"), "bulk ESS": num(format="%.0f"),
                            "tail ESS": num(format="%.0f"), **pct, **err})
page.download_table(effects[["by", "label", "p_above", "p_practically_zero", "p_below",
                             "r_hat", "ess_bulk", "ess_tail", *mcse_cols]],
                  "effect_diagnostics", key="effect_diag_csv")

# -- traces ---------------------------------------------------------------------------------------
st.subheader("Trace plots")
st.caption("Each line is one chain. Healthy traces look like overlapping, fuzzy caterpillars "
           "with no trends and no chain stuck apart from the others.")
labels = fmt.parameter_labels(fit)
series = {"tau (average effect, model scale)": fit.draws["beta"][..., 1]}
names = {"effect_scale": "effect_scale (how much effects vary overall)",
         "sigma": "sigma (residual sd, model scale)"}
for name, arr in fit.draws.items():
    if name == "beta":
        continue
    if arr.ndim == 2:
        series[names.get(name, name)] = arr
    else:
        for k in range(arr.shape[2]):
            series[labels.get(f"{name}[{k}]", f"{name}[{k}]")] = arr[:, :, k]
defaults = [s for s in series if not s.startswith("sigma_baseline")][:8]
chosen = state.persistent(st.multiselect, "Parameters", "trace_params", defaults,
                          options=list(series),
                          help="sigma_effect[term]: how much the effect varies across that term's "
                            "levels; sigma_baseline[term]: how much the untreated outcome does.")
if chosen:
    page.show_figure(plots.trace_plot({k: series[k] for k in chosen}), "traces", key="traces")
st.markdown("**All parameters**")
st.caption("Scales are on the model's scale (standard deviations of the outcome"
           + (", log-odds" if binary else "") + "); beta[j] are the coefficients. Worst first.")
params = fit.parameter_table.assign(
    parameter=fit.parameter_table["parameter"].map(lambda v: labels.get(v, v)))
params = params.sort_values("r_hat", ascending=False, kind="stable")
num = st.column_config.NumberColumn
st.dataframe(params, hide_index=True, height=fmt.table_height(len(params), 10),
             column_config={"mean": num(format="%.4f"), "sd": num(format="%.4f"),
                            "r_hat": num("R-hat", format="%.3f"),
                            "ess_bulk": num("bulk ESS", format="%.0f"),
                            "ess_tail": num("tail ESS", format="%.0f")})
page.download_table(params, "parameters", key="params_csv")

# -- predictive check -----------------------------------------------------------------------------
st.subheader("Does the model reproduce the data?")
check = fitting.predictive_check(fit, interval=0.9)
st.markdown(
    "The model replicates the data many times; the observed data should look like one of the "
    "replications. Left: cells with similar predictions are pooled into bins (per arm), so each "
    "point averages many people; its observed mean should sit inside the model's interval, on "
    "the diagonal. Right: every cell's observed mean minus the model's, in units of that cell's "
    "own noise, so small and large cells are on one scale; about 90% should fall between the "
    "dashed lines, with no trend.")
(st.success if check.ok else st.warning)(
    check.summary(outcome), icon=":material/check_circle:" if check.ok else ":material/warning:")
page.show_figure(plots.ppc_plot(check.bins, check.cells, binary=binary, outcome=outcome,
                                factors=fit.cells.factors, interval=check.interval),
               "predictive_check", key="ppc")
page.download_table(check.cells, "predictive_check", key="ppc_csv")
