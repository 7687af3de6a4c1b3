"""Step 1: load the experiment's table and say which column is what."""

import pandas as pd
import streamlit as st

from hte import plots
from hte.api import left_out_factors
from hte.data import bin_numeric
from hte.errors import HteError
from hte.spec import SamplerSettings
from ui import fitting, page, state
from ui import formatting as fmt

page.page_header("data", "1 · Data",
                 "Load the experiment as a table with **one row per person**: the **outcome** "
                 "measured after treatment, a **treatment** column saying who was treated, and "
                 "characteristics recorded *before* treatment (**factors**, such as gender or "
                 "party) that the effect may vary by.")

# -- load -----------------------------------------------------------------------------------------
left, right = st.columns([3, 2], gap="large")
with left:
    upload = st.file_uploader(
        "Upload a table (CSV, TSV, Parquet or Excel; up to 1 GB)",
        type=["csv", "tsv", "txt", "parquet", "pq", "xlsx", "xlsm"], key="upload")
    upload_error = st.container()
with right:
    st.markdown("**No data at hand? Try a simulated experiment**")
    fresh = state.loaded() is None
    st.button("Use the sample experiment", type="primary" if fresh else "secondary",
              icon=":material/science:", on_click=state.load_sample, args=("experiment.csv",),
              help=state.SAMPLES["experiment.csv"])
    st.button("Use the yes/no sample", icon=":material/science:", on_click=state.load_sample,
              args=("experiment_binary.csv",), help=state.SAMPLES["experiment_binary.csv"])
    st.caption("Both have a planted finding: the treatment helps a little on average and a lot "
               "for Black men.")

if upload is not None and upload.file_id != st.session_state.get("hte_upload_id"):
    st.session_state["hte_upload_id"] = upload.file_id
    with upload_error, st.spinner(f"Reading {upload.name}…"):
        try:
            state.load_upload(upload, upload.name, token=f"upload:{upload.file_id}")
        except HteError as err:
            st.session_state["hte_upload_error"] = str(err)
        else:
            st.session_state.pop("hte_upload_error", None)
            state.release_upload(upload)  # the table is read: the file's bytes are not needed
            st.rerun()  # so the sidebar status shows the new table
if st.session_state.get("hte_upload_error"):
    upload_error.error(st.session_state["hte_upload_error"], icon=":material/error:")

table = state.loaded()
if table is None:
    st.info("Nothing is loaded yet. Upload a file, or click **Use the sample experiment** to try "
            "the dashboard right away.")
    st.stop()

if table.renamed:
    st.info("Renamed so results tables can show them: "
            + "; ".join(f"{fmt.md(a)} → {fmt.md(b)}" for a, b in table.renamed.items())
            + " (these names are columns of every results table).", icon=":material/edit:")
frame = table.frame
rows, cols = frame.shape
source = "sample" if table.source == "sample" else "file"
st.success(f"Loaded the {source} **{table.name}**: {rows:,} rows and {cols} columns.",
           icon=":material/check_circle:")
with st.expander(f"Preview: the first {min(rows, 100)} rows", expanded=True):
    st.dataframe(frame.head(100), height=240)

# -- roles ----------------------------------------------------------------------------------------
st.subheader("Which column is what?")
st.caption("Suggested from the table. Correct anything that is wrong.")
columns = [str(c) for c in frame.columns]
c1, c2, c3 = st.columns(3)
with c1:
    outcome = state.persistent(st.selectbox, "Outcome (measured after treatment)", "outcome",
                               table.suggestion.outcome, options=columns, index=None,
                               placeholder="Choose a column")
    outcome_error = st.container()
with c2:
    treatment = state.persistent(st.selectbox, "Treatment (who was treated)", "treatment",
                                 table.suggestion.treatment, options=columns, index=None,
                                 placeholder="Choose a column")
    treatment_error = st.container()
with c3:
    levels = state.treatment_levels(frame, treatment) if treatment else []
    treated = state.persistent(st.selectbox, "Value that means treated", "treated",
                               state.guess_treated(levels), options=levels, index=None,
                               placeholder="Choose the treatment column first",
                               help="The other value is the control group.")
    treated_error = st.container()

# -- factors --------------------------------------------------------------------------------------
st.subheader("Factors the effect may vary by")
others = [c for c in columns if c not in (outcome, treatment)]
numeric = [c for c in others if pd.api.types.is_numeric_dtype(frame[c])
           and frame[c].head(100_000).nunique() > 12]
suggested = [c for c in table.suggestion.binnable if c in numeric]
numeric = suggested + [c for c in numeric if c not in suggested]  # ids last
p = state.prefs()
bin_cols = state.persistent(st.multiselect, "Numeric columns to cut into groups", "bin_cols", [],
                            options=numeric,
                            help="A number with many values (such as age or income) becomes a "
                              "factor once it is cut into a few groups of about equal size.")
bins: dict[str, int] = dict(p.get("bins") or {})
bin_error = st.container()
for col in bin_cols:
    b1, b2 = st.columns([1, 3], vertical_alignment="bottom")
    with b1:
        k = state.persistent(st.number_input, f"Groups for {col}", f"bins_{col}",
                             int(bins.get(col, 4)), min_value=2, max_value=10, step=1)
    bins[col] = int(k)
    with b2:
        try:
            groups = bin_numeric(frame[col], int(k)).value_counts(sort=False)
            st.markdown(f"**{col}:** " + " · ".join(f"{lev} ({n:,})" for lev, n in
                                                    groups.items()))
        except HteError as err:
            st.error(str(err), icon=":material/error:")
p["bins"] = bins

factor_options = [c for c in others if c not in bin_cols]
factors = state.persistent(st.multiselect, "Candidate factors (choose the ones used on the Model "
                           "page)", "factors", [], options=factor_options,
                           help="Characteristics measured before treatment, with a few levels each "
                             "(at most 50). Never use something the treatment could change.")
factor_error = st.container()
if bin_cols:
    st.caption("Also factors, after binning: " + ", ".join(bin_cols) + ".")

# -- validation -----------------------------------------------------------------------------------
places = {**{f: factor_error for f in [*factors, *bin_cols]},
          **{b: bin_error for b in bin_cols}}
if treatment:
    places[treatment] = treated_error if treated is None else treatment_error
if outcome:
    places[outcome] = outcome_error
try:
    data = state.prepared(table, state.roles())
except HteError as err:
    message = str(err)
    if "treated value" in message or "means treated" in message:
        treated_error.error(message, icon=":material/error:")
    else:
        page.show_error(err, places, factor_error)
    st.stop()

st.info(data.describe(), icon=":material/fact_check:")
for notice in left_out_factors(data).values():
    st.warning(fmt.md(notice), icon=":material/info:")
shape_note = fmt.outcome_note(data)
if shape_note:
    st.info(shape_note, icon=":material/bar_chart:")
if data.factors:
    st.subheader("Who is in the experiment")
    st.caption("People in each group, treated and control. Randomization should give every group "
               "about the same share treated (the percentage beside each bar); a group with few "
               "people will have an uncertain effect.")
    page.show_figure(plots.sample_plot(data.cells.level_counts(), treated=data.treated,
                                       control=data.control), "people_per_group", key="data_people")
if len(data.factors) <= fitting.DEFAULT_FACTORS:  # the Model page's first proposal: compile it now
    fitting.warm_up(data, [], fitting.DEFAULT_PRIOR, SamplerSettings())
st.page_link(state.PAGES["model"], label="Next: choose the model and fit it",
             icon=":material/tune:")
