"""No confident verdict without data; single-level factors; exact pooling of cell summaries.

``extrapolated_fit`` (conftest.py): a simulated experiment with a strong effect everywhere (0.6 sd)
where region E has nobody treated and region D three treated people: pooling makes their
posteriors confidently positive, but the verdict must be "extrapolated" in the table, the JSON,
contrasts, sentences, figures and reports.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hte import plots
from hte.cells import aggregate, from_summaries
from hte.cli import effects_json
from hte.decisions import (
    CONFIDENT,
    EXTRAPOLATED,
    LIKELY_POSITIVE,
    SMALL_ARM,
    DecisionRule,
    contrast_sentence,
    sentence,
    summarize,
    verdict_text,
)
from hte.errors import SpecError
from hte.reports import Snapshot, report_html

THRESHOLD = 0.1


@pytest.fixture(scope="module")
def fit(extrapolated_fit):
    return extrapolated_fit


# -- the rule, without a fit ----------------------------------------------------------------------

def test_min_arm_is_validated_with_a_sentence():
    assert DecisionRule(min_arm=1).min_arm == 1
    assert DecisionRule(min_arm=20.0).min_arm == 20
    for bad in (0, -3, 1001, 2.5, True, "10"):
        with pytest.raises(SpecError, match="whole number from 1 to 1,000"):
            DecisionRule(min_arm=bad)


def test_a_group_below_min_arm_is_extrapolated_whatever_its_probabilities():
    draws = np.random.default_rng(0).normal(1.0, 0.1, (400, 4))   # all clearly above 0.1
    out = summarize(draws, DecisionRule(0.1, min_arm=10), n_treated=[0, 9, 10, 29],
                    n_control=[50, 50, 50, 50])
    assert (out["p_above"] == 1).all()
    assert list(out["verdict"]) == [EXTRAPOLATED, EXTRAPOLATED, LIKELY_POSITIVE, LIKELY_POSITIVE]
    assert list(out["extrapolated"]) == [True, True, False, False]
    assert list(out["small_arm"]) == [True, True, True, True]          # 29 < SMALL_ARM
    assert not summarize(draws[:, :1], DecisionRule(0.1), [SMALL_ARM], [SMALL_ARM])[
        "small_arm"].iloc[0]
    # the control arm counts the same way
    assert summarize(draws[:, :1], DecisionRule(0.1), [500], [3])["verdict"].iloc[0] == EXTRAPOLATED
    # a lower minimum lets the 9-treated group have its verdict back
    assert summarize(draws, DecisionRule(0.1, min_arm=5), [0, 9, 10, 29],
                     [50] * 4)["verdict"].tolist() == [EXTRAPOLATED] + [LIKELY_POSITIVE] * 3


def test_sentences_and_labels_say_the_estimate_is_borrowed():
    row = {"mean": 0.6, "lower": 0.5, "upper": 0.7, "p_above": 0.99, "p_practically_zero": 0.01,
           "p_below": 0.0, "verdict": EXTRAPOLATED, "extrapolated": True, "small_arm": True,
           "n_treated": 0, "n_control": 148}
    text = sentence(row, DecisionRule(0.1), "support", False, who="people with region = E")
    assert text.startswith("Among people with region = E, nobody was treated")
    assert "borrows it from the other groups" in text and "chance" not in text
    assert "0.5 and 0.7" in text
    assert verdict_text(row) == ("extrapolated — too few treated people (0 of 10 "
                                 "needed)")
    few = {**row, "n_treated": 3, "n_control": 2}
    assert "Only 3 people were treated and only 2 people were in the control group" in sentence(
        few, DecisionRule(0.1), "support", False)
    small = {**row, "verdict": LIKELY_POSITIVE, "extrapolated": False, "n_treated": 14,
             "n_control": 80}
    assert sentence(small, DecisionRule(0.1), "support", False).startswith("There is a 99% chance")
    assert "With only 14 people treated" in sentence(small, DecisionRule(0.1), "support", False)
    assert verdict_text(small) == "likely positive — small arm (14 treated)"
    contrast = {"n_treated_a": 0, "n_control_a": 148, "n_treated_b": 480, "n_control_b": 464}
    assert contrast_sentence(contrast, 10, "E", "A") == (
        "No verdict on the difference: among E (A) nobody was treated (a verdict needs at least "
        "10 people in each arm), so the difference is extrapolated from the other groups.")


# -- through a fit --------------------------------------------------------------------------------

def test_levels_with_no_or_three_treated_are_extrapolated_though_pooling_is_confident(fit):
    tab = fit.effects("region", threshold=THRESHOLD).set_index("region")
    assert tab.loc["E", "n_treated"] == 0 and tab.loc["D", "n_treated"] == 3
    for level in ("D", "E"):
        row = tab.loc[level]
        assert row["p_above"] > 0.9     # pooling alone would say "likely positive"
        assert row["verdict"] == EXTRAPOLATED and row["extrapolated"] and row["small_arm"]
        assert row["lower"] < row["mean"] < row["upper"]   # the posterior is still reported
    for level in ("A", "B", "C"):
        assert tab.loc[level, "verdict"] == LIKELY_POSITIVE
        assert not tab.loc[level, "extrapolated"] and not tab.loc[level, "small_arm"]
    # every combination with region D or E is extrapolated too
    pairs = fit.effects(["region", "size"], threshold=THRESHOLD)
    assert (pairs["extrapolated"] == pairs["region"].isin(["D", "E"])).all()
    assert not pairs.loc[pairs["extrapolated"], "verdict"].isin(CONFIDENT).any()
    # min_arm = 3 gives D (3 treated) its verdict back, not E
    low = fit.effects("region", threshold=THRESHOLD, min_arm=3).set_index("region")
    assert low.loc["D", "verdict"] == LIKELY_POSITIVE and low.loc["E", "verdict"] == EXTRAPOLATED
    assert low.loc["D", "small_arm"]


def test_population_weights_keep_the_sample_counts_as_the_flags_basis(fit):
    cells = fit.covariate[["region", "size"]].copy()
    pop = pd.concat([cells, pd.DataFrame({"region": ["E"], "size": ["small"]})]).drop_duplicates()
    pop["count"] = 1000.0
    tab = fit.effects("region", threshold=THRESHOLD, population=pop).set_index("region")
    sample = fit.effects("region", threshold=THRESHOLD).set_index("region")
    pd.testing.assert_series_equal(tab["n_treated"], sample["n_treated"])
    assert tab.loc["E", "verdict"] == EXTRAPOLATED and tab.loc["A", "verdict"] != EXTRAPOLATED


def test_contrast_with_an_extrapolated_group_is_extrapolated(fit):
    row, diff = fit.contrast({"region": "E"}, {"region": "A"}, threshold=THRESHOLD)
    assert row["verdict"] == EXTRAPOLATED and row["extrapolated"]
    assert (row["n_treated_a"], row["n_treated_b"]) == (0, 480)
    assert len(diff) == fit.n_draws
    ok, _ = fit.contrast({"region": "B"}, {"region": "A"}, threshold=THRESHOLD)
    assert not ok["extrapolated"] and ok["verdict"] != EXTRAPOLATED


def test_json_effects_carry_the_flags(fit):
    doc = json.loads(json.dumps(effects_json(fit, fit.effect_table(threshold=THRESHOLD))))
    by_group = {tuple(sorted(e["group"].items())): e for e in doc["effects"]}
    e = by_group[(("region", "E"),)]
    assert e["verdict"] == EXTRAPOLATED and e["extrapolated"] is True and e["small_arm"] is True
    assert e["n_treated"] == 0 and e["n_control"] > 0
    a = by_group[(("region", "A"),)]
    assert a["extrapolated"] is False and a["verdict"] == LIKELY_POSITIVE
    assert doc["decision"] == {"min_arm": 10, "small_arm": SMALL_ARM}


def test_figures_mark_extrapolated_groups_and_small_arms(fit):
    table = fit.effect_table(threshold=THRESHOLD, pairs=False)
    forest = plots.forest_plot(table, threshold=THRESHOLD, binary=False, outcome="outcome")
    names = {t.name: t for t in forest.data}
    hollow = names[plots.VERDICT_NAMES[EXTRAPOLATED]]
    assert hollow.marker.symbol == "circle-open"
    ticks = dict(zip(forest.layout.yaxis.tickvals, forest.layout.yaxis.ticktext, strict=True))
    assert sorted(ticks[y] for y in hollow.y) == ["D ⚠", "E ⚠"]
    assert all("Extrapolated" in h for h in hollow.text)
    assert plots.VERDICT_NAMES[EXTRAPOLATED] not in [t.name for t in plots.forest_plot(
        table[~table["extrapolated"]], threshold=THRESHOLD, binary=False, outcome="o").data]

    pairs = fit.effects(["region", "size"], threshold=THRESHOLD)
    heat = plots.heatmap(pairs, "region", "size", levels=fit.levels, threshold=THRESHOLD,
                         binary=False, outcome="outcome")
    hm = heat.data[0]
    r_levels = list(fit.levels["region"])
    for i, level in enumerate(r_levels):
        for j in range(2):
            if level in ("D", "E"):
                assert hm.z[i][j] is None and hm.text[i][j].startswith("extrapolated")
            else:
                assert hm.z[i][j] is not None and "extrapolated" not in hm.text[i][j]
    greyed = [s for s in heat.layout.shapes if s.line.dash == "dash"]
    assert len(greyed) == 4
    assert len(heat.data[1].x) == 10        # every cell with people stays clickable

    shrink = plots.shrinkage_plot(table, binary=False, outcome="outcome")
    borrowed = next(t for t in shrink.data if t.name == plots.VERDICT_NAMES[EXTRAPOLATED])
    assert len(borrowed.x) == 1 and "region = D" in borrowed.text[0]   # E has no raw estimate


def test_report_round_trip_keeps_the_rule_and_recomputes_the_flags(fit):
    # Regions D (3 treated people) and E (none) are never published: a report shows only groups
    # with at least min_cell people in each arm. A min_arm above that still flags groups.
    snap = Snapshot.from_fit(fit, threshold=THRESHOLD, min_arm=240)
    assert not snap.groups["label"].str.contains("region = [DE]").any()
    meta, blob = snap.to_payload()
    assert meta["min_arm"] == 240
    back = Snapshot.from_payload(json.loads(json.dumps(meta)), blob)
    for delta in (THRESHOLD, 0.0, 0.3):             # the viewer changes delta
        tab = back.effects(threshold=delta).set_index("label")
        assert tab.loc["region = A, size = large", "verdict"] == EXTRAPOLATED  # 229 control
        assert tab.loc["region = A, size = small", "extrapolated"]
        assert not tab.loc["region = A", "extrapolated"]
    row, _ = back.contrast({"region": "A", "size": "large"}, {"region": "B"})
    assert row["verdict"] == EXTRAPOLATED
    html = report_html(back)
    assert "extrapolated — too few control people (229 of 240 needed)" in html
    # a report published before the rule existed reads with the default
    old = {k: v for k, v in meta.items() if k != "min_arm"}
    assert Snapshot.from_payload(old, blob).min_arm == 10
    loose = Snapshot.from_fit(fit, threshold=THRESHOLD, min_arm=3)
    assert loose.effects().set_index("label").loc["region = A, size = large",
                                                  "verdict"] == LIKELY_POSITIVE


# -- single-level factors -------------------------------------------------------------------------

def test_a_factor_with_one_value_is_left_out_with_a_notice(fit):
    assert fit.factors == ("region", "size")
    assert fit.spec.interactions == ()
    notice = ("'country' has one value in these data ('NL'), so it cannot explain differences "
              "and was left out.")
    assert fit.data_info["notices"][0] == notice
    assert "region:country was left out too" in fit.data_info["notices"][1]
    assert fit.spec.terms == (("region",), ("size",))
    assert fit.draws["sigma_effect"].shape[-1] == 2      # no empty term for the diagnostics
    with pytest.raises(SpecError, match="'country' has one value"):
        fit.effects("country")


# -- pooling cell summaries -----------------------------------------------------------------------

@pytest.mark.parametrize(("center", "sd"), [(1e8, 10.0), (1e12, 1e5), (0.0, 1.0)])
def test_pooled_sums_of_squares_match_the_rows_for_large_outcomes(center, sd):
    rng = np.random.default_rng(7)
    n = 4000
    rows = pd.DataFrame({"a": rng.choice(["x", "y", "w"], n), "b": rng.choice(["p", "q"], n),
                         "_z": rng.integers(0, 2, n)})
    rows["_y"] = center + rng.normal(0, sd, n) + 3 * sd * (rows["b"] == "q")
    fine = aggregate(rows, ["a", "b"], "gaussian").cells
    fine["sd"] = np.sqrt(fine["ss"] / (fine["n"] - 1))
    pooled = from_summaries(fine, ["a"], "gaussian").cells
    direct = aggregate(rows, ["a"], "gaussian").cells
    assert list(pooled["n"]) == list(direct["n"])
    np.testing.assert_allclose(pooled["ss"], direct["ss"], rtol=1e-9)
    np.testing.assert_allclose(pooled["mean"], direct["mean"], rtol=1e-15, atol=sd * 1e-12)
