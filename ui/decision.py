"""The decision rule: the practical-significance threshold (δ), the interval level and the
verdict cut-off, their defaults, and the controls that set them (saved in the user's choices)."""

from __future__ import annotations

import math

import streamlit as st

from hte import plots
from hte.decisions import MIN_ARM, DecisionRule
from hte.result import Fit

from .state import persistent, prefs, reset_widget

INTERVALS = (0.5, 0.8, 0.9, 0.95, 0.99)
CUTOFFS = (0.75, 0.8, 0.9, 0.95, 0.99)


def nice_round(x: float) -> float:
    """The nearest of 1, 2 or 5 times a power of ten (on a log scale)."""
    if not x > 0 or not math.isfinite(x):
        return 0.0
    exp = math.floor(math.log10(x))
    best = min((1, 2, 5, 10), key=lambda m: abs(math.log(x / (m * 10.0 ** exp))))
    return best * 10.0 ** exp


def outcome_sd(cells) -> float:
    """The outcome's standard deviation over everybody (in outcome units or probability)."""
    c = cells.cells
    if cells.family == "binary":
        p = float(c["successes"].sum() / c["n"].sum())
        return math.sqrt(p * (1 - p))
    from hte.fitting import outcome_scale

    return outcome_scale(cells)[1]


def default_threshold(cells) -> float:
    """A starting threshold: a twentieth of the outcome's sd, rounded (engine units)."""
    return nice_round(0.05 * outcome_sd(cells)) or 0.1


def _threshold_tag(outcome: str, binary: bool) -> str:
    return f"{outcome}|{binary}"


def threshold_input(outcome: str, binary: bool, default: float, *, help_text: bool = True,
                    label: str | None = None) -> float:
    """Number input for the practical-significance threshold; returns it in engine units.

    Shown in percentage points for binary outcomes. The value is shared by every page and reset
    to ``default`` (engine units) when the outcome or its type changes.
    """
    p = prefs()
    tag = _threshold_tag(outcome, binary)
    k = plots.unit_factor(binary)
    if p.get("threshold_for") != tag:
        p["threshold_for"] = tag
        p["threshold"] = round(default * k, 6)
        reset_widget("threshold")
    shown = p["threshold"] or default * k
    step = 0.5 if binary else float(nice_round(shown / 2) or 0.01)
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    unit = "percentage points" if binary else f"units of {outcome}"
    value = persistent(
        st.number_input, label or f"Practically zero: effects within ± this many {unit}",
        "threshold", p["threshold"], min_value=0.0, step=step, format=f"%.{decimals}f",
        help="δ, the smallest effect that would matter in practice. Effects between −δ and +δ "
             "count as practically zero." if help_text else None,
    )
    return float(value or 0.0) / k


def threshold_sentence(threshold: float, outcome: str, binary: bool) -> str:
    d = plots.format_effect(threshold, binary)
    if binary:
        change = f"a change of less than {d} in the chance that {outcome} is 1"
    else:
        change = f"a change of less than {d} in {outcome}"
    return (f"With δ = {d}, {change} (up or down) counts as **practically zero**: too small to "
            f"matter. Each effect then gets three chances that add up to 100%: above +{d}, "
            f"within ±{d}, and below −{d}.")


def rule_controls(fit: Fit) -> DecisionRule:
    """The decision-rule row of a result page: threshold, interval level, verdict cut-off."""
    return decision_controls(fit.spec.outcome, fit.binary, default_threshold(fit.cells))


def decision_controls(outcome: str, binary: bool, threshold: float, interval: float = 0.9,
                      cutoff: float = 0.9, min_arm: int = MIN_ARM) -> DecisionRule:
    """The decision-rule row: threshold, interval level, verdict cut-off (defaults as given;
    the threshold in engine units; ``min_arm`` is kept as given). Used by the result pages and
    the report view."""
    with st.container(border=True):
        c1, c2, c3 = st.columns([1.4, 1, 1])
        with c1:
            threshold = threshold_input(outcome, binary, threshold,
                                        label="Practically zero within ±"
                                              + (" (percentage points)" if binary else ""))
        with c2:
            interval = persistent(st.select_slider, "Credible interval", "interval",
                                  interval, options=sorted({*INTERVALS, float(interval)}),
                                  format_func=lambda v: f"{v:.0%}",
                                  help="The range that holds the effect with this probability.")
        with c3:
            cutoff = persistent(st.select_slider, "A verdict needs at least", "cutoff",
                                cutoff, options=sorted({*CUTOFFS, float(cutoff)}),
                                format_func=lambda v: f"{v:.0%}",
                                help="How sure the model must be before an effect is called "
                                     "likely positive, likely negative or practically zero; "
                                     "otherwise it is uncertain.")
    return DecisionRule(threshold=threshold, interval=float(interval), cutoff=float(cutoff),
                        min_arm=min_arm)


def rule_of(fit: Fit) -> DecisionRule:
    """The saved decision rule for ``fit`` without drawing controls (the sidebar uses it)."""
    p = prefs()
    k = plots.unit_factor(fit.binary)
    if p.get("threshold_for") == _threshold_tag(fit.spec.outcome, fit.binary):
        threshold = float(p.get("threshold") or 0.0) / k
    else:
        threshold = default_threshold(fit.cells)
    return DecisionRule(threshold, float(p.get("interval", 0.9)), float(p.get("cutoff", 0.9)))
