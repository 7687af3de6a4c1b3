"""Group effects from cell effects (poststratification), contrasts, raw estimates, decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hte.cells import aggregate
from hte.decisions import DecisionRule, fix_article, sentence, summarize, verdict
from hte.design import Design
from hte.diagnostics import Diagnostics
from hte.errors import SpecError
from hte.result import Fit
from hte.spec import ModelSpec, SamplerSettings


def rows_table(seed: int = 0, n: int = 400, binary: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.choice(["a1", "a2", "a3"], n, p=[0.5, 0.3, 0.2]),
                          "b": rng.choice(["b1", "b2"], n, p=[0.7, 0.3]),
                          "_z": rng.integers(0, 2, n)})
    frame["_y"] = rng.integers(0, 2, n).astype(float) if binary else rng.normal(0, 1, n)
    return frame


def fake_fit(frame: pd.DataFrame, family: str, beta: np.ndarray, scale: float = 1.0) -> Fit:
    """A Fit with hand-made coefficient draws, to test the effect arithmetic exactly."""
    cells = aggregate(frame, ["a", "b"], family)
    spec = ModelSpec(outcome="y", treatment="z", treated="1", control="0", family=family,
                     factors=("a", "b"), interactions=(("a", "b"),))
    diag = Diagnostics(chains=1, draws=len(beta), max_r_hat=1.0, min_ess_bulk=1e3,
                       min_ess_tail=1e3, divergences=0, tree_depth_saturated=0,
                       max_tree_depth=10, target_accept=0.8, seconds=0.0, seconds_compile=0.0)
    return Fit(spec=spec, settings=SamplerSettings(), cells=cells, center=0.0, scale=scale,
               draws={"beta": beta[None]}, diagnostics=diag, parameter_table=pd.DataFrame())


def coefficient_draws(seed: int = 1, draws: int = 50) -> np.ndarray:
    d = Design.build(("a", "b"), {"a": ("a1", "a2", "a3"), "b": ("b1", "b2")},
                     (("a",), ("b",), ("a", "b")))
    return np.random.default_rng(seed).normal(0, 0.5, (draws, d.n_coefs))


def manual_cell_effects(fit: Fit, levels: list[tuple[str, str]]) -> np.ndarray:
    codes = fit.cells.level_codes(pd.DataFrame(levels, columns=["a", "b"]))
    x1 = fit.design.rows(codes, np.ones(len(levels)))
    x0 = fit.design.rows(codes, np.zeros(len(levels)))
    if fit.binary:
        return 1 / (1 + np.exp(-(fit.beta @ x1.T))) - 1 / (1 + np.exp(-(fit.beta @ x0.T)))
    return (fit.beta @ (x1 - x0).T) * fit.scale


@pytest.mark.parametrize("family", ["gaussian", "binary"])
def test_group_effect_is_the_people_weighted_average_of_cell_effects(family):
    frame = rows_table(binary=family == "binary")
    fit = fake_fit(frame, family, coefficient_draws(), scale=2.5)
    cells = [(a, b) for a in ("a1", "a2", "a3") for b in ("b1", "b2")]
    cell_fx = manual_cell_effects(fit, cells)
    counts = frame.groupby(["a", "b"]).size()
    weights = np.array([counts.get(c, 0) for c in cells], dtype=float)
    # Everybody, a level of one factor, and an intersection.
    for group in ({}, {"a": "a2"}, {"a": "a3", "b": "b2"}, {"b": "b1"}):
        member = np.array([all(dict(zip("ab", c, strict=True))[k] == v
                               for k, v in group.items()) for c in cells])
        w = weights * member
        expected = cell_fx @ (w / w.sum())
        np.testing.assert_allclose(fit.effect_draws([group])[:, 0], expected, atol=1e-12)


def test_effects_table_has_the_documented_columns_and_counts():
    frame = rows_table()
    fit = fake_fit(frame, "gaussian", coefficient_draws())
    table = fit.effects(["a"], threshold=0.1)
    assert list(table["label"]) == ["a = a1", "a = a2", "a = a3"]
    counts = frame.groupby(["a", "_z"]).size().unstack()
    assert list(table["n_treated"]) == list(counts[1])
    assert list(table["n_control"]) == list(counts[0])
    assert list(table.columns[:2]) == ["by", "label"]
    assert {"a", "b", "mean", "lower", "upper", "p_above", "p_practically_zero", "p_below",
            "verdict", "raw_mean", "raw_se"} <= set(table.columns)
    full = fit.effect_table()
    assert len(full) == 1 + 3 + 2 + 6


def test_contrast_is_computed_draw_by_draw():
    fit = fake_fit(rows_table(), "gaussian", coefficient_draws())
    a, b = {"a": "a1"}, {"a": "a3", "b": "b2"}
    summary, diff = fit.contrast(a, b, threshold=0.05)
    draws = fit.effect_draws([a, b])
    np.testing.assert_allclose(diff, draws[:, 0] - draws[:, 1], atol=1e-12)
    assert summary["mean"] == pytest.approx(diff.mean())
    assert summary["p_above"] == pytest.approx(np.mean(diff > 0.05))


def test_population_weights_replace_sample_weights():
    frame = rows_table()
    fit = fake_fit(frame, "gaussian", coefficient_draws())
    cells = [(a, b) for a in ("a1", "a2", "a3") for b in ("b1", "b2")]
    cell_fx = manual_cell_effects(fit, cells)
    # Full-cell population: one cell weight per combination (all six, equal).
    population = pd.DataFrame(cells, columns=["a", "b"]).assign(count=100)
    overall = fit.effect_draws([{}], population=population)[:, 0]
    np.testing.assert_allclose(overall, cell_fx.mean(axis=1), atol=1e-12)
    # Marginal population over `a` only: each level's share split by the sample's b mix.
    shares = pd.DataFrame({"a": ["a1", "a2", "a3"], "share": [0.2, 0.3, 0.5]})
    got = fit.effect_draws([{}], population=shares)[:, 0]
    counts = frame.groupby(["a", "b"]).size()
    expected = 0
    for i, (a, b) in enumerate(cells):
        within = counts[(a, b)] / counts[a].sum()
        expected = expected + cell_fx[:, i] * float(shares.set_index("a").loc[a, "share"]) * within
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize(("population", "words"), [
    (pd.DataFrame({"a": ["a1"]}), "count"),
    (pd.DataFrame({"a": ["zz"], "count": [1]}), "not in the data"),
    (pd.DataFrame({"a": ["a1"], "age": [3], "count": [1]}), "not model factors"),
    (pd.DataFrame({"a": ["a1"], "count": [-1]}), "non-negative"),
])
def test_bad_population_tables_are_refused(population, words):
    fit = fake_fit(rows_table(), "gaussian", coefficient_draws())
    with pytest.raises(SpecError, match=words):
        fit.effects(population=population)


def test_raw_estimates_match_direct_computation():
    frame = rows_table(seed=3)
    fit = fake_fit(frame, "gaussian", coefficient_draws())
    fit.effect_table()  # every grouping once: each keeps its own raw estimates from then on
    table = fit.effects(["b"], threshold=0.3).set_index("label")
    for level in ("b1", "b2"):
        g = frame[frame["b"] == level]
        t, c = g.loc[g["_z"] == 1, "_y"], g.loc[g["_z"] == 0, "_y"]
        assert table.loc[f"b = {level}", "raw_mean"] == pytest.approx(t.mean() - c.mean())
        se = np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
        assert table.loc[f"b = {level}", "raw_se"] == pytest.approx(se)


def test_raw_estimates_for_a_binary_outcome():
    frame = rows_table(seed=4, binary=True)
    fit = fake_fit(frame, "binary", coefficient_draws())
    row = fit.effects().iloc[0]
    t, c = frame.loc[frame["_z"] == 1, "_y"], frame.loc[frame["_z"] == 0, "_y"]
    assert row["raw_mean"] == pytest.approx(t.mean() - c.mean())
    se = np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
    assert row["raw_se"] == pytest.approx(se)


def test_unknown_group_and_factor_are_refused():
    fit = fake_fit(rows_table(), "gaussian", coefficient_draws())
    with pytest.raises(SpecError, match="not one of the model's factors"):
        fit.effects("colour")
    with pytest.raises(SpecError, match="Nobody"):
        fit.effect_draws([{"a": "nope"}])


def test_summaries_and_verdicts_from_known_draws():
    draws = np.column_stack([np.linspace(0.2, 0.4, 101),       # all above delta = 0.1
                             np.linspace(-0.05, 0.05, 101),    # all within +-0.1
                             np.linspace(-0.5, -0.3, 101),     # all below -0.1
                             np.linspace(-0.3, 0.3, 101)])     # spread over all three
    table = summarize(draws, DecisionRule(threshold=0.1, interval=0.9))
    assert list(table["verdict"]) == ["likely positive", "practically zero", "likely negative",
                                      "uncertain"]
    assert table.loc[0, "p_above"] == 1.0
    assert table.loc[1, "p_practically_zero"] == 1.0
    np.testing.assert_allclose(table[["p_above", "p_practically_zero", "p_below"]].sum(axis=1), 1)
    assert table.loc[3, "lower"] == pytest.approx(np.quantile(draws[:, 3], 0.05))
    assert table.loc[0, "median"] == pytest.approx(0.3)
    assert verdict(0.89, 0.11, 0.0, cutoff=0.9) == "uncertain"


@pytest.mark.parametrize(("kw", "words"), [
    ({"threshold": -0.1}, "threshold"),
    ({"interval": 1.5}, "interval"),
    ({"cutoff": 0.3}, "cut-off"),
])
def test_decision_rule_validation(kw, words):
    with pytest.raises(SpecError, match=words):
        DecisionRule(**kw)


def test_headline_sentence_reads_plainly():
    row = {"p_above": 0.94, "p_practically_zero": 0.06, "p_below": 0.0, "lower": 0.12,
           "upper": 0.4}
    text = sentence(row, DecisionRule(threshold=0.1), "support", binary=False)
    assert text.startswith("There is a 94% chance the treatment raises support by more than 0.1")
    binary = sentence({**row, "lower": 0.02, "upper": 0.08}, DecisionRule(threshold=0.05),
                      "donated", binary=True, who="women")
    assert "5.0 percentage points" in binary and "among women" in binary


@pytest.mark.parametrize(("text", "fixed"), [
    ("a 8% chance", "an 8% chance"), ("a 11% chance", "an 11% chance"),
    ("A 83% chance", "An 83% chance"), ("a 18% chance", "an 18% chance"),
    ("a 94% chance", "a 94% chance"), ("a 28% chance", "a 28% chance"),
    ("a 800% chance", "a 800% chance")])
def test_article_before_a_percentage(text, fixed):
    assert fix_article(text) == fixed


def test_sentence_uses_the_right_article():
    row = {"p_above": 0.83, "p_practically_zero": 0.17, "p_below": 0.0, "lower": 0.0,
           "upper": 1.0}
    text = sentence(row, DecisionRule(threshold=0.1), "y", binary=False)
    assert text.startswith("There is an 83% chance")
