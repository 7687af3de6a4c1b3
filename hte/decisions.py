"""Practical significance: judge effect draws against a threshold the user chooses.

For a threshold delta >= 0 (in outcome units; for binary outcomes a difference in probability,
0.05 = 5 percentage points) each effect gets its posterior mean, median, sd, a central credible
interval, the probabilities that it exceeds delta, lies within +/- delta ("practically zero"), or
falls below -delta, and a verdict label. There are no p-values.

No confident verdict without data. A group with fewer than ``min_arm`` people (default 10) in the
treated or the control arm is *extrapolated*: its posterior is still reported (the model predicts
it from the other groups), but its verdict is "extrapolated", never one of the three confident
ones, and its sentence says the estimate is borrowed rather than measured. A group with fewer
than :data:`SMALL_ARM` people in an arm keeps its verdict but is flagged ``small_arm``: with so few
people the group's own data say little, and its estimate leans mostly on the other groups.
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
EXTRAPOLATED = "extrapolated"
VERDICTS = (LIKELY_POSITIVE, PRACTICALLY_ZERO, LIKELY_NEGATIVE, UNCERTAIN, EXTRAPOLATED)
#: The verdicts that claim something about a group.
CONFIDENT = (LIKELY_POSITIVE, PRACTICALLY_ZERO, LIKELY_NEGATIVE)

#: A group needs at least this many people in each arm for a verdict (``DecisionRule.min_arm``).
MIN_ARM = 10
#: The largest ``min_arm`` accepted.
MAX_MIN_ARM = 1000
#: A group with fewer people than this in an arm is flagged ``small_arm`` (its verdict stays).
#: With n people in the smaller arm the group's own difference in means has a standard error of
#: at least sd/sqrt(n), 0.18 sd at n = 30: larger than most treatment effects worth finding
#: (0.1-0.3 sd), so below it the group's estimate is mostly the model's pooling.
SMALL_ARM = 30

SUMMARY_COLUMNS = ["mean", "median", "sd", "lower", "upper", "p_above", "p_practically_zero",
                   "p_below", "verdict"]
#: Added by :func:`summarize` when it is given the groups' people per arm.
FLAG_COLUMNS = ["extrapolated", "small_arm"]


@dataclass(frozen=True)
class DecisionRule:
    """Threshold delta, credible-interval level, the probability a verdict needs, and the people
    per arm it needs (``min_arm``: with fewer treated or control people a group is extrapolated)."""

    threshold: float = 0.0
    interval: float = 0.9
    cutoff: float = 0.9
    min_arm: int = MIN_ARM

    def __post_init__(self) -> None:
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise SpecError("The practical-significance threshold must be zero or a positive "
                            "number in the outcome's units, such as 0.1.")
        if not 0 < self.interval < 1:
            raise SpecError("The interval level must be between 0 and 1, such as 0.9 for 90%.")
        if not 0.5 < self.cutoff < 1:
            raise SpecError("The probability cut-off for a verdict must be between 0.5 and 1, "
                            "such as 0.9.")
        m = self.min_arm
        whole = (isinstance(m, int | np.integer) and not isinstance(m, bool)) or (
            isinstance(m, float | np.floating) and float(m).is_integer())
        if not whole or not 1 <= m <= MAX_MIN_ARM:
            raise SpecError(f"The people a group needs in each arm for a verdict must be a whole "
                            f"number from 1 to {MAX_MIN_ARM:,}, such as {MIN_ARM}.")
        object.__setattr__(self, "min_arm", int(m))


def arm_flags(n_treated: Sequence[float] | np.ndarray, n_control: Sequence[float] | np.ndarray,
              rule: DecisionRule) -> tuple[np.ndarray, np.ndarray]:
    """(extrapolated, small_arm) for groups with these people per arm.

    Extrapolated: fewer than ``rule.min_arm`` treated or control people. Small arm: fewer than
    :data:`SMALL_ARM` in an arm, or extrapolated.
    """
    fewest = np.minimum(np.asarray(n_treated, dtype=float), np.asarray(n_control, dtype=float))
    extrapolated = fewest < rule.min_arm
    return extrapolated, extrapolated | (fewest < SMALL_ARM)


def verdict(p_above: float, p_zero: float, p_below: float, cutoff: float) -> str:
    """The label for one effect: which region holds at least ``cutoff`` of the posterior."""
    if p_above >= cutoff:
        return LIKELY_POSITIVE
    if p_below >= cutoff:
        return LIKELY_NEGATIVE
    if p_zero >= cutoff:
        return PRACTICALLY_ZERO
    return UNCERTAIN


def summarize(draws: np.ndarray, rule: DecisionRule,
              n_treated: Sequence[float] | np.ndarray | None = None,
              n_control: Sequence[float] | np.ndarray | None = None) -> pd.DataFrame:
    """One row per column of ``draws`` (draws x effects) with the summary columns.

    Given each effect's people per arm (``n_treated``, ``n_control``) it adds the
    :data:`FLAG_COLUMNS`, and an extrapolated effect's verdict is :data:`EXTRAPOLATED`.
    """
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
    if n_treated is not None and n_control is not None:
        extrapolated, small = arm_flags(n_treated, n_control, rule)
        if extrapolated.shape != (d.shape[1],):
            raise ValueError("one count per arm and effect is needed")
        out.loc[extrapolated, "verdict"] = EXTRAPOLATED
        out["extrapolated"] = extrapolated
        out["small_arm"] = small
    return out


def arm_phrase(n_treated: int, n_control: int, min_arm: int) -> str:
    """Which arm is too small, in words: 'nobody was treated', 'only 3 people were treated'."""
    parts = []
    if n_treated < min_arm:
        parts.append("nobody was treated" if n_treated == 0 else
                     f"only {_people(n_treated)} {'was' if n_treated == 1 else 'were'} treated")
    if n_control < min_arm:
        parts.append("nobody was in the control group" if n_control == 0 else
                     f"only {_people(n_control)} {'was' if n_control == 1 else 'were'} in the "
                     "control group")
    return " and ".join(parts)


def verdict_text(row: pd.Series | dict, min_arm: int = MIN_ARM) -> str:
    """The verdict in plain words for a table, with the arm that is too small or small.

    'extrapolated — too few treated people (3 of 10 needed)', or
    'likely positive — small arm (14 control)', or just the verdict.
    """
    v = str(row["verdict"])
    if "n_treated" not in row or "n_control" not in row:
        return v
    n_t, n_c = int(row["n_treated"]), int(row["n_control"])
    if v == EXTRAPOLATED or row.get("extrapolated", False):
        short = [(a, n) for a, n in (("treated", n_t), ("control", n_c)) if n < min_arm]
        short = short or [("treated", n_t) if n_t <= n_c else ("control", n_c)]
        counts = " and ".join(f"{n:,}" for _, n in short)
        return (f"{EXTRAPOLATED} — too few {' and '.join(a for a, _ in short)} people ({counts} "
                f"of {min_arm:,} needed)")
    if row.get("small_arm", False):
        arm, n = ("treated", n_t) if n_t <= n_c else ("control", n_c)
        return f"{v} — small arm ({n:,} {arm})"
    return v


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
    An extrapolated group (``row["extrapolated"]`` or its verdict) gets no chance: the sentence
    says which arm is (almost) empty and that the estimate is borrowed from other groups. A group
    with a small arm gets a note that its estimate leans on the other groups.
    """
    if bool(row.get("extrapolated", False)) or row.get("verdict") == EXTRAPOLATED:
        return _extrapolated_sentence(row, rule, binary, who)
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
    note = ""
    if bool(row.get("small_arm", False)) and "n_treated" in row and "n_control" in row:
        n_t, n_c = int(row["n_treated"]), int(row["n_control"])
        arm = f"{_people(n_t)} treated" if n_t <= n_c else f"{_people(n_c)} in the control group"
        note = (f" With only {arm}{among}, this estimate leans mostly on the other groups "
                "(partial pooling).")
    return text + interval + note


def _extrapolated_sentence(row: pd.Series | dict, rule: DecisionRule, binary: bool,
                           who: str) -> str:
    points = (binary, 1 if binary else None, "percentage points")
    if "n_treated" in row and "n_control" in row:
        arms = arm_phrase(int(row["n_treated"]), int(row["n_control"]), rule.min_arm)
    else:
        arms = ""
    arms = arms or "one arm has too few people"
    lead = f"Among {who}, {arms}" if who else arms[0].upper() + arms[1:]
    return (f"{lead} (a verdict needs at least {rule.min_arm:,} people in each arm), so this "
            "effect is extrapolated: the model borrows it from the other groups instead of "
            "measuring it. Its estimate, between "
            f"{format_effect(row['lower'], *points)} and {format_effect(row['upper'], *points)} "
            f"({rule.interval:.0%} interval), is no evidence about "
            f"{who or 'this group'} either way.")


def contrast_sentence(row: pd.Series | dict, min_arm: int, who_a: str = "group A",
                      who_b: str = "group B") -> str:
    """Why a difference of two groups' effects gets no verdict: which group's arm is too small.

    ``row`` is a contrast summary with ``n_treated_a``, ``n_control_a``, ``n_treated_b``,
    ``n_control_b`` (:meth:`hte.result.Fit.contrast`).
    """
    parts = []
    for side, who in (("a", who_a), ("b", who_b)):
        arms = arm_phrase(int(row[f"n_treated_{side}"]), int(row[f"n_control_{side}"]), min_arm)
        if arms:
            parts.append(f"among {who} ({side.upper()}) {arms}")
    text = "; ".join(parts) or "one group has too few people in an arm"
    return (f"No verdict on the difference: {text} (a verdict needs at least {min_arm:,} people "
            "in each arm), so the difference is extrapolated from the other groups.")


def fix_article(text: str) -> str:
    """'a 8% chance' -> 'an 8% chance' (also 11%, 18% and 80-89%), for sentences built elsewhere."""
    return re.sub(r"\b([Aa]) ((?:8|11|18|8\d)(?:\.\d+)?%)", r"\1n \2", text)


def _a(p: float) -> str:
    """The probability with its article: 'a 94%', 'an 8%', 'a more than 99%'."""
    return fix_article(f"a {_pct(p)}")


def _people(n: int) -> str:
    return f"{n:,} {'person' if n == 1 else 'people'}"


def _pct(p: float) -> str:
    if p > 0.995:
        return "more than 99%"
    if p < 0.005:
        return "less than 1%"
    return f"{p:.0%}"
