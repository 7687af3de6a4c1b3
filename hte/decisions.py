"""Practical significance: judge effect draws against a threshold the user chooses.

For a threshold delta >= 0 (in outcome units; for binary outcomes a difference in probability,
0.05 = 5 percentage points) each effect gets its posterior mean, median, sd, a central credible
interval, the probabilities that it exceeds delta, lies within +/- delta ("practically zero"), or
falls below -delta, and a verdict label. There are no p-values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hte.errors import SpecError

LIKELY_POSITIVE = "likely positive"
LIKELY_NEGATIVE = "likely negative"
PRACTICALLY_ZERO = "practically zero"
UNCERTAIN = "uncertain"
VERDICTS = (LIKELY_POSITIVE, PRACTICALLY_ZERO, LIKELY_NEGATIVE, UNCERTAIN)

SUMMARY_COLUMNS = ["mean", "median", "sd", "lower", "upper", "p_above", "p_practically_zero",
                   "p_below", "verdict"]


@dataclass(frozen=True)
class DecisionRule:
    """Threshold delta, credible-interval level, and the probability a verdict needs."""

    threshold: float = 0.0
    interval: float = 0.9
    cutoff: float = 0.9

    def __post_init__(self) -> None:
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise SpecError("The practical-significance threshold must be zero or a positive "
                            "number in the outcome's units, such as 0.1.")
        if not 0 < self.interval < 1:
            raise SpecError("The interval level must be between 0 and 1, such as 0.9 for 90%.")
        if not 0.5 < self.cutoff < 1:
            raise SpecError("The probability cut-off for a verdict must be between 0.5 and 1, "
                            "such as 0.9.")


def verdict(p_above: float, p_zero: float, p_below: float, cutoff: float) -> str:
    """The label for one effect: which region holds at least ``cutoff`` of the posterior."""
    if p_above >= cutoff:
        return LIKELY_POSITIVE
    if p_below >= cutoff:
        return LIKELY_NEGATIVE
    if p_zero >= cutoff:
        return PRACTICALLY_ZERO
    return UNCERTAIN


def summarize(draws: np.ndarray, rule: DecisionRule) -> pd.DataFrame:
    """One row per column of ``draws`` (draws x effects) with the summary columns."""
    d = np.asarray(draws, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    tail = (1 - rule.interval) / 2
    delta = rule.threshold
    p_above = (d > delta).mean(axis=0)
    p_below = (d < -delta).mean(axis=0)
    p_zero = 1.0 - p_above - p_below
    out = pd.DataFrame({
        "mean": d.mean(axis=0),
        "median": np.median(d, axis=0),
        "sd": d.std(axis=0, ddof=1) if d.shape[0] > 1 else np.zeros(d.shape[1]),
        "lower": np.quantile(d, tail, axis=0),
        "upper": np.quantile(d, 1 - tail, axis=0),
        "p_above": p_above,
        "p_practically_zero": p_zero,
        "p_below": p_below,
    })
    out["verdict"] = [verdict(a, z, b, rule.cutoff) for a, z, b in
                      zip(p_above, p_zero, p_below, strict=True)]
    return out


def effect_decimals(values: Sequence[float] | np.ndarray, binary: bool = False) -> int:
    """Decimals that show three significant digits of the largest effect."""
    if binary:
        return 1
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return 2
    mag = math.floor(math.log10(float(np.max(v))))
    return int(min(max(2 - mag, 0), 6))


def format_number(value: float, decimals: int, strip: bool = False) -> str:
    """A number for reading: thousands separators, fixed decimals, a real minus sign.

    ``strip`` drops trailing zeros (0.100 -> 0.1) for numbers read on their own.
    """
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{abs(value):,.{decimals}f}"
    if strip and "." in text:
        text = text.rstrip("0").rstrip(".")
    if float(text.replace(",", "")) == 0:
        return text
    return ("−" if value < 0 else "") + text


def format_effect(value: float, binary: bool, decimals: int | None = None,
                  unit: str = "pp") -> str:
    """An effect in display units: '4.1 pp' for binary outcomes, '0.215' otherwise.

    Without ``decimals`` the number shows three significant digits, trailing zeros dropped.
    ``unit`` names percentage points: 'pp' in figures and tables, 'percentage points' in
    sentences.
    """
    if binary:
        shown = format_number(value * 100, 1 if decimals is None else decimals,
                              strip=decimals is None)
        return f"{shown} {unit}"
    if decimals is None:
        return format_number(value, effect_decimals([value]), strip=True)
    return format_number(value, decimals)


def sentence(row: pd.Series | dict, rule: DecisionRule, outcome: str, binary: bool,
             who: str = "") -> str:
    """A plain-language sentence about one effect, e.g. for the headline of a page.

    "There is a 94% chance the treatment raises support by more than 0.1 (among women)."
    """
    p_above, p_zero, p_below = (float(row[k]) for k in ("p_above", "p_practically_zero",
                                                         "p_below"))
    points = (binary, 1 if binary else None, "percentage points")  # "5.0 percentage points"
    delta = format_effect(rule.threshold, *points)
    among = f" among {who}" if who else ""
    what = f"the chance that {outcome} is 1" if binary else outcome
    if p_above >= max(p_below, p_zero):
        text = (f"There is {_a(p_above)} chance the treatment raises {what} by more than "
                f"{delta}{among}.")
    elif p_below >= p_zero:
        text = (f"There is {_a(p_below)} chance the treatment lowers {what} by more than "
                f"{delta}{among}.")
    else:
        text = (f"There is {_a(p_zero)} chance the treatment changes {what} by less than "
                f"{delta} either way{among}, which you have called practically zero.")
    interval = (f" The effect is most likely between {format_effect(row['lower'], *points)} and "
                f"{format_effect(row['upper'], *points)} ({rule.interval:.0%} interval).")
    return text + interval


def fix_article(text: str) -> str:
    """'a 8% chance' -> 'an 8% chance' (also 11%, 18% and 80-89%), for sentences built elsewhere."""
    return re.sub(r"\b([Aa]) ((?:8|11|18|8\d)(?:\.\d+)?%)", r"\1n \2", text)


def _a(p: float) -> str:
    """The probability with its article: 'a 94%', 'an 8%', 'a more than 99%'."""
    return fix_article(f"a {_pct(p)}")


def _pct(p: float) -> str:
    if p > 0.995:
        return "more than 99%"
    if p < 0.005:
        return "less than 1%"
    return f"{p:.0%}"
