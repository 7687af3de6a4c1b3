"""Shared pieces of the dashboard pages, one module per concern.

Lowest first; a module imports only those above it in this list:

- :mod:`ui.formatting`: numbers, sentences and effects tables for reading; user text escaped
  for Markdown (:func:`ui.formatting.md`) and Plotly. Reads no session state.
- :mod:`ui.state`: the session's loaded table and the user's choices (roles, model, decision
  rule), widgets that remember their value across pages, the page files and bundled samples.
- :mod:`ui.fitting`: the server-wide fit cache, background sampler warm-ups, the session's
  current fit and the effects, draws and checks computed from it (cached).
- :mod:`ui.decision`: the decision rule (δ, interval level, verdict cut-off), its defaults and
  the controls that set it.
- :mod:`ui.reports`: the shared-report store, report links, and what the report view shows.
- :mod:`ui.page`: the frame of a page: header, notices that stop it, the sidebar status, errors,
  figures and tables with their downloads.

Pages import the modules and call through them (``page.need_fit()`` reads as where the helper
lives); nothing is re-exported here. Nothing in ``ui`` computes statistics: the engine in
``hte/`` does.
"""
