"""The dashboard: ``streamlit run app.py``.

This entry file is the router (``st.navigation``; page files live in ``app_pages/``) and draws the
shared frame: the page configuration, the app's name and a sidebar status of what is loaded and
fitted. Pages read and write session state through the ``ui`` package (one module per concern:
session state, fitting, formatting, decision rule, reports, page frame) and call the engine in
``hte/``.

A shared report link (``?report=<token>``) is checked first: it opens the read-only report page
and nothing else (no navigation, no sidebar, no data, no fitting), whatever the path or session.

Why ``app_pages/`` and not Streamlit's usual ``pages/``: a server that finds a ``pages/`` folder
next to this file serves those files on its own (the older multipage mode) until some request
has run ``st.navigation``, so the very first request for ``/data?report=...`` on a fresh server
would open the dashboard and bypass the check above. Without that folder, every request runs
this file first.
"""

import streamlit as st

from ui import page, reports, state

if reports.REPORT_PARAM in st.query_params:
    st.set_page_config(page_title="hte report", page_icon="🎯", layout="wide",
                       initial_sidebar_state="collapsed")
    # The report answers at every address of the app (a link may have been pasted onto any
    # page's address), so no reader meets Streamlit's "page not found" dialog. (The default page
    # also answers at /report.)
    report = [st.Page(state.PAGES["report"], title="Report", icon=":material/description:",
                      default=path == "", url_path=path or None)
              for path in ("", *(p for p in state.PAGE_PATHS if p != "report"))]
    page.run_page(st.navigation(report, position="hidden"))
    st.stop()

st.set_page_config(page_title="hte — who does the treatment work for?", page_icon="🎯",
                   layout="wide", initial_sidebar_state="expanded")

pages = {
    "Set up": [
        st.Page(state.PAGES["data"], title="1 · Data", icon=":material/table_view:", default=True),
        st.Page(state.PAGES["model"], title="2 · Model", icon=":material/tune:"),
    ],
    "Results": [
        st.Page(state.PAGES["effects"], title="3 · Effects", icon=":material/insights:"),
        st.Page(state.PAGES["intersections"], title="4 · Intersections",
                icon=":material/grid_view:"),
        st.Page(state.PAGES["compare"], title="5 · Compare", icon=":material/compare_arrows:"),
        st.Page(state.PAGES["diagnostics"], title="6 · Diagnostics",
                icon=":material/monitor_heart:"),
        st.Page(state.PAGES["share"], title="7 · Share", icon=":material/share:",
                url_path=reports.SHARE_PATH),
    ],
}
chosen = st.navigation(pages)

with st.sidebar:
    st.markdown("## :material/target: hte")
    st.caption("Who does the treatment work for? Effects of a randomized treatment across "
               "subgroups, from a multilevel model.")
    # Drawn before the page: pages change state in callbacks or rerun after a change
    # (loading, fitting), so the status is current.
    page.sidebar_status()

page.run_page(chosen)
