"""Step 7: publish a read-only report of the results behind a link, or withdraw one."""

from datetime import UTC, datetime

import streamlit as st

from hte.errors import HteError
from hte.reports import MIN_CELL, Snapshot
from ui import decision, page, reports

page.page_header("share", "7 · Share",
                 "Publish a read-only report of these results and share its link. Readers see the "
                 "effects, intersections and comparisons, and can change δ and the interval level; "
                 "they cannot see your data, refit the model or open anything else.")

fit = page.need_fit()
rule = decision.rule_controls(fit)
page.diagnostics_notice(fit)
try:
    store = reports.report_store()
except HteError as err:
    st.error(str(err), icon=":material/error:")
    st.stop()
limits = store.limits

# -- publish --------------------------------------------------------------------------------------
st.subheader("Publish a report")
st.markdown("The report is a snapshot: later changes here do not change it. It holds the model, "
            "the number of people in each group and the posterior draws of each group's effect, "
            "never a row of your data. Anyone with the link can open it, so share it like a "
            "document. The decision rule above (δ, interval, verdict cut-off) is what readers see "
            "first.")
left, right = st.columns([2, 1], gap="large")
with left:
    title = st.text_input("Title (optional)", max_chars=limits.max_title, key="share_title",
                          placeholder=f"Effect of the treatment on {fit.spec.outcome}")
    note = st.text_area("Note for readers (optional)", max_chars=limits.max_note, key="share_note",
                        placeholder="What was tested, on whom, and when; how to read the results.",
                        height=120)
with right:
    min_cell = st.number_input(
        "Smallest group to show (people in each arm)", min_value=limits.min_cell,
        value=max(MIN_CELL, limits.min_cell), step=1, key="share_min_cell",
        help="Small-cell protection: a group with fewer treated or fewer control people is "
             "withheld, and so is any group whose numbers would let someone recompute it by "
             "sums and differences (such as the other levels of the factor). This server "
             f"publishes nothing below {limits.min_cell:,}.")
    expires = st.date_input(
        "Link works until (optional)", value=None, min_value=datetime.now(UTC).date(),
        key="share_expires", format="YYYY-MM-DD",
        help="The link stops working at the end of this day (UTC). Leave it empty for a link "
             "that works until you withdraw it.")
try:
    withheld, total = reports.withheld_preview(fit, int(min_cell))
    st.caption(f"With at least {int(min_cell):,} people in each arm, {total - withheld:,} of "
               f"{total:,} groups are published and {withheld:,} withheld.")
except HteError as err:
    st.error(str(err), icon=":material/error:")

if st.button("Publish report", type="primary", icon=":material/publish:"):
    try:
        snapshot = Snapshot.from_fit(fit, title=title, note=note, min_cell=int(min_cell),
                                     expires=expires, threshold=rule.threshold,
                                     interval=rule.interval, cutoff=rule.cutoff,
                                     min_arm=rule.min_arm)
        token, owner_key = store.publish(snapshot, publisher=reports.publisher_id())
    except HteError as err:
        st.error(str(err), icon=":material/error:")
    else:
        # Shown in this run only: the owner key is never stored here or anywhere else.
        link = reports.report_link(token)
        with st.container(border=True):
            st.success("The report is published. Anyone with this link can open it (read-only)"
                       + (f"; it works until {snapshot.expires:%Y-%m-%d %H:%M} UTC."
                          if snapshot.expires else "."), icon=":material/check_circle:")
            st.markdown("**Link to share**")
            if link:
                st.code(link, language=None, wrap_lines=True)
                st.link_button("Open the report", link, icon=":material/open_in_new:")
            else:
                st.code(reports.report_query(token), language=None, wrap_lines=True)
                st.caption("Add this to the end of this dashboard's address (without the page "
                           "name), e.g. https://your-server/" + reports.report_query(token))
            st.markdown("**Owner key**")
            st.code(owner_key, language=None, wrap_lines=True)
            st.warning("The owner key is shown only now, once: copy it and keep it safe. It is "
                       "needed to withdraw the report, and nobody can recover it. Do not share "
                       "it with the link.", icon=":material/key:")
            st.download_button(
                "Download the link and key (TXT)", file_name="hte-report-link.txt",
                data=f"Report link: {link or reports.report_query(token)}\n"
                     f"Owner key (needed to withdraw the report): {owner_key}\n",
                mime="text/plain", icon=":material/download:", on_click="ignore")
            st.info(reports.withheld_sentence(snapshot.withheld, snapshot.min_cell),
                    icon=":material/shield:")

# -- withdraw -------------------------------------------------------------------------------------
st.subheader("Withdraw a report")
st.markdown("Withdrawing deletes a report: its link stops working for everyone at once. You "
            "need the link and the owner key shown when it was published.")
with st.form("withdraw", clear_on_submit=True, border=True):
    link_text = st.text_input("Report link (or its token)", key="withdraw_link")
    key_text = st.text_input("Owner key", type="password", key="withdraw_key")
    submitted = st.form_submit_button("Withdraw the report", icon=":material/delete:")
if submitted:
    try:
        store.revoke(reports.token_from_link(link_text), key_text.strip())
    except HteError as err:
        st.error(str(err), icon=":material/error:")
    else:
        st.success("The report is withdrawn: its link no longer works.",
                   icon=":material/check_circle:")
