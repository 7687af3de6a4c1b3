"""Step 2: choose the model (factors, intersections, threshold, prior) and fit it with NUTS."""

import itertools

import streamlit as st

from hte.api import left_out_factors, model_notices, model_spec
from hte.errors import HteError
from hte.spec import DEFAULT_TARGET_ACCEPT, PRIOR_STRENGTH_HELP, PRIOR_STRENGTHS, SamplerSettings
from ui import decision, fitting, page, state
from ui import formatting as fmt

page.page_header("model", "2 · Model",
                 "Choose what the treatment effect may vary by. The model estimates an effect for "
                 "every group at once and **partially pools** them: small groups borrow strength "
                 "from the rest, so a noisy difference is not mistaken for a finding.")

table = page.need_data()
try:
    base = state.prepared(table, state.roles())
except HteError as err:
    st.error(str(err), icon=":material/error:")
    st.page_link(state.PAGES["data"], label="Fix the roles on the Data page",
                 icon=":material/table_view:")
    st.stop()

p = state.prefs()
outcome = base.outcome

# -- outcome type ---------------------------------------------------------------------------------
KINDS = {"gaussian": "continuous", "binary": "yes/no"}
st.subheader("Outcome")
family = state.persistent(
    st.radio, f"What kind of outcome is '{outcome}'?", "family", "auto",
    options=["auto", "gaussian", "binary"], horizontal=True,
    format_func=lambda v: {"auto": f"As detected ({KINDS[base.family]})",
                           "gaussian": "Continuous: compare means",
                           "binary": "Yes/no: compare the chance of yes"}[v])
family_error = st.container()

# -- factors --------------------------------------------------------------------------------------
st.subheader("Factors and intersections")
candidates = [*dict.fromkeys([*(p.get("factors") or []), *(p.get("bin_cols") or [])])]
if not candidates:
    st.info("No candidate factors were chosen on the Data page, so the model estimates only the "
            "average effect. Add factors there to see who the treatment works for.")
factors = state.persistent(st.multiselect, "Factors", "model_factors",
                           candidates[:fitting.DEFAULT_FACTORS], options=candidates,
                           help="Each factor gets its own varying effect per level.")
factor_error = st.container()
try:
    data = state.prepared(table, state.roles(factors, family))
except HteError as err:
    page.show_error(err, {f: factor_error for f in factors}, family_error)
    st.stop()

sizes = state.pair_sizes(data)
varying = [f for f in factors if f not in left_out_factors(data)]   # one value: left out
pairs = [f"{a}:{b}" for a, b in itertools.combinations(varying, 2)]
enough = [f"{a}:{b}" for (a, b), n in sizes.items() if n >= 30 and f"{a}:{b}" in pairs]


def pair_label(pair: str) -> str:
    a, b = pair.split(":")
    n = sizes.get((a, b), 0)
    note = "✓ suggested" if n >= 30 else "few people in some combination"
    return f"{a} × {b} (smallest combination: {n:,} people; {note})"


interactions = state.persistent(
    st.multiselect, "Intersections to model (optional)", "interactions", [], options=pairs,
    format_func=pair_label,
    help="An intersection (e.g. gender × race) lets a combination such as Black men have an "
         "effect of its own, beyond what gender and race each contribute.")
if len(varying) >= 2:
    if enough:
        names = ", ".join(e.replace(":", " × ") for e in enough)
        st.caption(f"Suggested (every combination has at least 30 people): {names}. Model an "
                   "intersection when you expect a combination to differ from what its parts "
                   "predict; every pair can still be explored on the Intersections page.")
    else:
        st.caption("No pair of factors has at least 30 people in every combination, so no "
                   "intersection is suggested.")

# -- threshold and prior --------------------------------------------------------------------------
binary = data.family == "binary"
st.subheader("What size of effect matters?")
c1, c2 = st.columns([1, 2], vertical_alignment="center")
with c1:
    threshold = decision.threshold_input(outcome, binary, decision.default_threshold(data.cells))
with c2:
    st.markdown(decision.threshold_sentence(threshold, outcome, binary))
    sd = decision.outcome_sd(data.cells)
    scale = (f"For scale: {fmt.fmt_prob(float(data.cells.cells['successes'].sum()) / data.n_rows)}"
             f" of people have {outcome} = 1." if binary else
             f"For scale: the standard deviation of {outcome} is {fmt.fmt_effect(sd, False)}.")
    st.caption(scale + " You can change δ later on every results page without refitting.")

st.subheader("How much should groups borrow from each other?")
prior = state.persistent(st.radio, "Prior strength", "prior", fitting.DEFAULT_PRIOR,
                         options=list(PRIOR_STRENGTHS), horizontal=True,
                         format_func=str.capitalize,
                         captions=[PRIOR_STRENGTH_HELP[k].capitalize() for k in PRIOR_STRENGTHS])

with st.expander("Sampler settings (advanced)"):
    st.caption("NUTS draws from the posterior with several independent chains; more draws give "
               "more precise probabilities but take longer. The defaults suit most analyses.")
    s1, s2, s3, s4, s5 = st.columns(5)
    with s1:
        chains = state.persistent(st.number_input, "Chains", "chains", 4, min_value=1,
                                  max_value=16, step=1)
    with s2:
        warmup = state.persistent(st.number_input, "Warm-up iterations", "warmup", 1000,
                                  min_value=10, max_value=20_000, step=100)
    with s3:
        draws = state.persistent(st.number_input, "Draws per chain", "draws", 1000, min_value=10,
                                 max_value=20_000, step=100)
    with s4:
        seed = state.persistent(st.number_input, "Random seed", "seed", 0, min_value=0, step=1)
    with s5:
        target = state.persistent(st.number_input, "Target acceptance", "target_accept", None,
                                  min_value=0.5, max_value=0.99, step=0.05, format="%.2f",
                                  placeholder="automatic",
                                  help=f"Empty: automatic ({DEFAULT_TARGET_ACCEPT['gaussian']} for "
                                    f"a continuous outcome, {DEFAULT_TARGET_ACCEPT['binary']} for "
                                    "a yes/no one). Raise it (e.g. to 0.95) if the sampler "
                                    "reports divergent transitions.")
    settings_error = st.container()

try:
    spec = model_spec(data, interactions, prior)
    settings = SamplerSettings(chains=int(chains), warmup=int(warmup), draws=int(draws),
                               seed=int(seed),
                               target_accept=None if target is None else float(target))
except HteError as err:
    settings_error.error(str(err), icon=":material/error:")
    st.stop()
fitting.warm_up(data, interactions, prior, settings)   # compile while the user reads on

# -- summary and fit ------------------------------------------------------------------------------
st.subheader("The model")
n_cells = len(data.cells.cells)
st.markdown(f"{spec.describe()} The {data.n_rows:,} people fall into **{n_cells:,} cells** "
            "(combinations of factor levels and arm); the fit works on these cells, so its "
            "cost does not grow with the number of rows.")
for notice in model_notices(data, interactions):
    st.info(fmt.md(notice), icon=":material/info:")
st.code(spec.formula, language="r", wrap_lines=True)
st.caption("The same model in lme4/brms notation (`||`: uncorrelated varying intercepts and "
           "treatment effects" + ("; family = binomial, logit link" if binary else "") + ").")

key = fitting.fit_key(data, interactions, prior, settings)
current = fitting.current_fit()
if current is not None and fitting.fit_token(current) == key:
    st.success("This model is fitted. Its results are on the Effects, Intersections, Compare "
               "and Diagnostics pages.", icon=":material/check_circle:")
    st.page_link(state.PAGES["effects"], label="See the effects", icon=":material/insights:")
elif current is not None:
    st.info("Your choices differ from the fitted model shown on the result pages. Click **Fit "
            "the model** to update them.", icon=":material/info:")

if st.button("Fit the model", type="primary", icon=":material/play_arrow:"):
    bar = st.progress(0.0, text="Starting: the first fit also compiles the sampler, which takes "
                                "a few seconds…")

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        fit, cached = fitting.fit_model(data, interactions, prior, settings, progress=report)
    except HteError as err:
        bar.empty()
        st.error(str(err), icon=":material/error:")
    else:
        fitting.set_fit(fit)
        st.switch_page(state.PAGES["effects"])
