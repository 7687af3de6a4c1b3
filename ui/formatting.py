"""Text and tables for reading: numbers in display units, sentences, and user text made safe.

Text that came from users (file, column and level names, report titles) is escaped with :func:`md`
before Markdown renders it, and with :func:`plot_escape` (or :func:`hte.reports.plot_table`)
before Plotly does. Effects tables are shown with :func:`display_effects` in display units
(percentage points for yes/no outcomes). Nothing here reads session state.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd
import streamlit as st

from hte import plots
from hte.data import PreparedData
from hte.decisions import MIN_ARM, SMALL_ARM, DecisionRule, verdict_text
from hte.result import Fit

_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")   # every ASCII punctuation character
_AUTOLINK = re.compile(r"(?i)(\b(?:https?|ftp|mailto|www)(?=[:.])|(?=@))")
_JOINER = "\u2060"   # WORD JOINER: invisible, but no URL or address runs across it


def md(text: Any) -> str:
    """``text`` for ``st.markdown`` (and titles, captions, alerts), shown literally.

    Every ASCII punctuation character is backslash-escaped (CommonMark shows an escaped one as
    itself), so ``**bold**``, ``<script>``, ``[link](...)``, ``$x$`` and ``:red[x]`` stay text.
    Bare URLs and e-mail addresses, which GitHub-flavoured Markdown turns into links after
    parsing (escapes do not stop it), get an invisible word joiner. Line breaks become spaces;
    for text with line breaks use ``st.text``.
    """
    flat = _AUTOLINK.sub(lambda m: m.group(0) + _JOINER, " ".join(str(text).split()))
    return _MARKDOWN.sub(r"\\\1", flat)


def who(group: dict[str, str]) -> str:
    """'people with gender = Male and race = Black' for a sentence."""
    parts = [f"{k} = {v}" for k, v in group.items()]
    if not parts:
        return "everybody"
    return "people with " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1
                             else parts[0])


def md_who(group: dict[str, str]) -> str:
    """:func:`who` with the factor names and levels escaped for Markdown (:func:`md`)."""
    return who({md(k): md(v) for k, v in group.items()})


def fmt_effect(value: float, binary: bool) -> str:
    return plots.format_effect(value, binary)


def fmt_prob(p: float, words: bool = False) -> str:
    """'94%'; at the ends '>99%' / '<1%', or 'more than 99%' / 'less than 1%' with ``words``."""
    text = plots.format_probability(p)
    if words:
        text = text.replace(">", "more than ").replace("<", "less than ")
    return text


def fmt_range(lower: float, upper: float, binary: bool, decimals: int | None = None) -> str:
    """'0.2 to 4.9 pp' (the unit once) or '0.119 to 0.268'."""
    k = plots.unit_factor(binary)
    if decimals is None:
        decimals = plots.effect_decimals([lower, upper], binary)
    text = (f"{plots.format_number(lower * k, decimals)} to "
            f"{plots.format_number(upper * k, decimals)}")
    return text + (" pp" if binary else "")


def headline(row, rule: DecisionRule, outcome: str, binary: bool, who: str = "") -> str:
    """:func:`hte.decisions.sentence` for a table row."""
    from hte.decisions import sentence

    return sentence(row, rule, outcome, binary, who=who)


def effect_columns(binary: bool, decimals: int) -> dict:
    """column_config for an effects table shown with :func:`display_effects`."""
    unit = " (pp)" if binary else ""
    num = st.column_config.NumberColumn
    fmt = f"%.{decimals}f"
    pct = "%.0f%%"
    return {
        "Group": st.column_config.TextColumn("Group", width="medium"),
        "n": num("n", format="%d", help="People in the group (both arms)"),
        "n treated": num("n treated", format="%d"),
        "n control": num("n control", format="%d"),
        "Raw estimate": num("Raw estimate" + unit, format=fmt,
                            help="Difference in means within the group alone, no pooling"),
        "Effect": num("Effect" + unit, format=fmt, help="Posterior mean (partially pooled)"),
        "Lower": num("Lower" + unit, format=fmt, help="Lower end of the credible interval"),
        "Upper": num("Upper" + unit, format=fmt, help="Upper end of the credible interval"),
        "P(> δ)": num("P(> δ)", format=pct, help="Chance the effect is above +δ"),
        "P(≈ 0)": num("P(≈ 0)", format=pct, help="Chance the effect is within ±δ"),
        "P(< −δ)": num("P(< −δ)", format=pct, help="Chance the effect is below −δ"),
        "Verdict": st.column_config.TextColumn(
            "Verdict",
            help="Extrapolated: too few treated or control people for a verdict, so the estimate "
                 f"is borrowed from other groups. Small arm: fewer than {SMALL_ARM} people in "
                 "an arm; the estimate leans on the other groups."),
    }


#: What a table shows for a raw estimate that is not available (an arm too small or empty).
MISSING_RAW = "–"


def display_effects(table: pd.DataFrame, binary: bool,
                    min_arm: int = MIN_ARM) -> tuple[pd.DataFrame, dict]:
    """An effects table for reading (display units, rounded by column_config) and its config.

    The verdict is in plain words, with an extrapolated group's or a small arm's counts
    (:func:`hte.decisions.verdict_text`)."""
    k = plots.unit_factor(binary)
    out = pd.DataFrame({
        "Group": table["label"],
        # second, so its plain words (an extrapolated group, a small arm) are never scrolled away
        "Verdict": [verdict_text(r, min_arm) for _, r in table.iterrows()],
        "n": table["n"], "n treated": table["n_treated"], "n control": table["n_control"],
        "Raw estimate": table["raw_mean"] * k,
        "Effect": table["mean"] * k, "Lower": table["lower"] * k, "Upper": table["upper"] * k,
        "P(> δ)": table["p_above"] * 100, "P(≈ 0)": table["p_practically_zero"] * 100,
        "P(< −δ)": table["p_below"] * 100,
    })
    decimals = plots.effect_decimals(table["mean"], binary)
    config = effect_columns(binary, decimals)
    raw = out["Raw estimate"]
    if raw.isna().any():  # a number column would show a missing value as "None"
        out["Raw estimate"] = [MISSING_RAW if pd.isna(v) else f"{v:.{decimals}f}" for v in raw]
        config["Raw estimate"] = st.column_config.TextColumn(
            config["Raw estimate"]["label"], alignment="right",
            help="Difference in means within the group alone, no pooling. "
                 f"{MISSING_RAW}: not shown, because an arm has too few people.")
    return out, config


def table_height(rows: int, limit: int = 25) -> int:
    """Pixels for a dataframe showing all of its rows (up to ``limit``, then it scrolls)."""
    return 38 + 35 * min(max(rows, 1), limit)


def plot_escape(text: Any, limit: int | None = None) -> str:
    """A user string for Plotly text (titles, legend entries): shortened, HTML-escaped."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


def parameter_labels(fit: Fit) -> dict[str, str]:
    """Readable names for the scale parameters: sigma_effect[0] -> sigma_effect[gender]."""
    terms = [" × ".join(t) for t in fit.spec.terms]
    out = {}
    for name in ("sigma_effect", "sigma_baseline"):
        arr = fit.draws.get(name)
        if arr is not None and arr.ndim == 3 and arr.shape[2] == len(terms):
            out |= {f"{name}[{k}]": f"{name}[{t}]" for k, t in enumerate(terms)}
    sigma = fit.draws.get("sigma")
    if sigma is not None and sigma.ndim == 3 and sigma.shape[2] == 2:  # residual sd per arm
        typical = " (typical over its groups)" if "sigma_group" in fit.draws else ""
        out |= {"sigma[0]": f"sigma[control]{typical}", "sigma[1]": f"sigma[treated]{typical}"}
    if "sigma_group" in fit.draws:
        from hte.variance import variance_groups

        groups = variance_groups(fit.cells)
        if groups.n_groups == fit.draws["sigma_group"].shape[2]:
            out |= {f"sigma_group[{g}]": f"sigma[{label}]"
                    for g, label in enumerate(groups.labels)}
    return out


def outcome_note(data: PreparedData) -> str | None:
    """How a mostly-zero or skewed continuous outcome is modelled, in words (None otherwise)."""
    from hte.cells import GAUSSIAN
    from hte.variance import outcome_note as note
    from hte.variance import outcome_shape

    if data.family != GAUSSIAN or data.frame is None:
        return None
    return note(outcome_shape(data.frame["_y"].to_numpy()), data.outcome)


def contrast_text(summary: dict, rule: DecisionRule, binary: bool, group_a: dict[str, str],
                  group_b: dict[str, str]) -> tuple[str, str]:
    """The headline (Markdown, a level-4 heading) and the paragraph under it for the difference
    A − B of two groups' effects (``summary`` as :meth:`hte.result.Fit.contrast`); names
    escaped. An extrapolated contrast says so instead of giving chances."""
    from hte.decisions import contrast_sentence, fix_article

    a, b = md_who(group_a), md_who(group_b)
    d = fmt_effect(rule.threshold, binary)
    between = (f"{fmt_effect(summary['lower'], binary)} and "
               f"{fmt_effect(summary['upper'], binary)} ({rule.interval:.0%} interval)")
    if summary["extrapolated"]:
        return ("#### " + contrast_sentence(summary, rule.min_arm, a, b),
                f"The model's difference A − B is between {between}, but it is borrowed from "
                "the other groups, not measured.")
    chance = {k: fmt_prob(summary[k], words=True)
              for k in ("p_above", "p_practically_zero", "p_below")}
    return ("#### " + fix_article(
                f"There is a {chance['p_above']} chance the treatment's effect is larger by more "
                f"than {d} for {a} (A) than for {b} (B)."),
            fix_article(
                f"The chance that the two effects differ by less than {d} either way (practically "
                f"the same) is {chance['p_practically_zero']}, and the chance that the effect is "
                f"larger by more than {d} for B is {chance['p_below']}. The difference A − B is "
                f"most likely between {between}."))

