"""Step 6: can the results be trusted? Sampler convergence and a posterior predictive check."""

import streamlit as st

import ui
from hte import plots
from hte.diagnostics import MAX_R_HAT, MIN_ESS_PER_CHAIN

ui.page_header("diagnostics", "6 · Diagnostics",
               "Before believing the results, check two things: that the sampler explored the "
               "posterior properly (convergence), and that the model reproduces the data it was "
               "fitted to (predictive check).")

fit = ui.need_fit()
d = fit.diagnostics
outcome, binary = fit.spec.outcome, fit.binary

# -- convergence ----------------------------------------------------------------------------------
st.subheader("Did the sampler converge?")
if d.ok:
    st.success(d.verdict(), icon=":material/check_circle:")
else:
    st.warning(d.verdict(), icon=":material/warning:")
want_ess = MIN_ESS_PER_CHAIN * d.chains
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Largest R-hat", f"{d.max_r_hat:.3f}", help=f"Want at most {MAX_R_HAT}: chains agree.")
m2.metric("Smallest bulk ESS", f"{d.min_ess_bulk:,.0f}",
          help=f"Effective draws for the centre of the posterior; want at least {want_ess:,}.")
m3.metric("Smallest tail ESS", f"{d.min_ess_tail:,.0f}",
          help=f"Effective draws for intervals; want at least {want_ess:,}.")
m4.metric("Divergent transitions", f"{d.divergences:,}", help="Want none.")
m5.metric("Time", f"{fit.seconds_total:,.1f} s",
          help=f"{d.chains} chains × {d.draws:,} draws; sampling {d.seconds:,.1f} s, compiling "
               f"{d.seconds_compile:,.1f} s" + (f", {d.attempts} attempts" if d.attempts > 1
                                                  else ""))
with st.expander("What these numbers mean"):
    st.markdown(
        f"- **R-hat** compares the chains with each other: near 1 means they agree. Above "
        f"{MAX_R_HAT}, run longer.\n"
        f"- **ESS** (effective sample size) is how many independent draws the correlated draws "
        f"are worth; the probabilities on the result pages need at least {MIN_ESS_PER_CHAIN} "
        f"per chain.\n"
        "- **Divergent transitions** mean the sampler could not follow the posterior somewhere; "
        "even a few can bias results. Raise the target acceptance or use a stronger prior.\n"
        f"- The sampler ran {d.chains} chains of {d.draws:,} draws after warm-up"
        + (f" and needed {d.attempts} attempts (it retries with a higher target acceptance "
           "after divergences)" if d.attempts > 1 else "") + ".")

# -- traces ---------------------------------------------------------------------------------------
st.subheader("Trace plots")
st.caption("Each line is one chain. Healthy traces look like overlapping, fuzzy caterpillars "
           "with no trends and no chain stuck apart from the others.")
labels = ui.parameter_labels(fit)
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
chosen = ui.persistent(st.multiselect, "Parameters", "trace_params", defaults,
                       options=list(series),
                       help="sigma_effect[term]: how much the effect varies across that term's "
                            "levels; sigma_baseline[term]: how much the untreated outcome does.")
if chosen:
    ui.show_figure(plots.trace_plot({k: series[k] for k in chosen}), "traces", key="traces")
st.markdown("**All parameters**")
st.caption("Scales are on the model's scale (standard deviations of the outcome"
           + (", log-odds" if binary else "") + "); beta[j] are the coefficients. Worst first.")
params = fit.parameter_table.assign(
    parameter=fit.parameter_table["parameter"].map(lambda v: labels.get(v, v)))
params = params.sort_values("r_hat", ascending=False, kind="stable")
num = st.column_config.NumberColumn
st.dataframe(params, hide_index=True, height=ui.table_height(len(params), 10),
             column_config={"mean": num(format="%.4f"), "sd": num(format="%.4f"),
                            "r_hat": num("R-hat", format="%.3f"),
                            "ess_bulk": num("bulk ESS", format="%.0f"),
                            "ess_tail": num("tail ESS", format="%.0f")})
ui.download_table(params, "parameters", key="params_csv")

# -- predictive check -----------------------------------------------------------------------------
st.subheader("Does the model reproduce the data?")
check = ui.predictive_check(fit, interval=0.9)
st.markdown(
    "The model replicates the data many times; the observed data should look like one of the "
    "replications. Left: cells with similar predictions are pooled into bins (per arm), so each "
    "point averages many people; its observed mean should sit inside the model's interval, on "
    "the diagonal. Right: every cell's observed mean minus the model's, in units of that cell's "
    "own noise, so small and large cells are on one scale; about 90% should fall between the "
    "dashed lines, with no trend.")
(st.success if check.ok else st.warning)(
    check.summary(outcome), icon=":material/check_circle:" if check.ok else ":material/warning:")
ui.show_figure(plots.ppc_plot(check.bins, check.cells, binary=binary, outcome=outcome,
                              factors=fit.cells.factors, interval=check.interval),
               "predictive_check", key="ppc")
ui.download_table(check.cells, "predictive_check", key="ppc_csv")
