"""Tests of the experiment simulator and the bundled sample data it makes."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hte.simulate import (  # noqa: E402
    DEFAULT_FACTORS,
    BaselineSpec,
    EffectSpec,
    Simulation,
    simulate,
)

SAMPLE_DIR = ROOT / "sample_data"
BLACK_MEN = (("race", "Black"), ("gender", "Male"))
TWO_FACTORS = {
    "gender": {"Female": 0.5, "Male": 0.5},
    "race": {"White": 0.6, "Black": 0.4},
}


def expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def load_generator():
    spec = importlib.util.spec_from_file_location("sample_data_generate",
                                                  SAMPLE_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_factors() -> None:
    assert list(DEFAULT_FACTORS) == ["gender", "race", "generation", "married", "kids", "party"]
    assert list(DEFAULT_FACTORS["race"]) == ["White", "Black", "Hispanic", "Asian"]
    assert math.prod(len(v) for v in DEFAULT_FACTORS.values()) == 384
    for shares in DEFAULT_FACTORS.values():
        assert sum(shares.values()) == pytest.approx(1.0)


def test_deterministic_by_seed() -> None:
    effect = EffectSpec(base=0.2, intersections={BLACK_MEN: 0.5})
    for family in ("gaussian", "binary"):
        a = simulate(500, family=family, effect=effect, seed=7)
        b = simulate(500, family=family, effect=effect, seed=7)
        c = simulate(500, family=family, effect=effect, seed=8)
        pd.testing.assert_frame_equal(a.data, b.data)
        pd.testing.assert_frame_equal(a.cell_effects, b.cell_effects)
        assert not a.data.equals(c.data)


def test_shapes_and_columns() -> None:
    sim = simulate(1000, seed=1)
    factors = list(DEFAULT_FACTORS)
    assert sim.factors == tuple(factors)
    assert list(sim.data.columns) == ["id", *factors, "treatment", "outcome"]
    assert len(sim.data) == 1000
    assert sim.data["id"].tolist() == list(range(1, 1001))
    assert set(sim.data["treatment"]) == {"treatment", "control"}
    for f in factors:
        assert set(sim.data[f]) <= set(DEFAULT_FACTORS[f])
        assert all(isinstance(v, str) for v in sim.data[f])
    assert sim.data["outcome"].dtype == np.float64
    assert list(sim.cell_effects.columns) == [*factors, "n", "true_effect"]
    assert sim.cell_effects["n"].sum() == 1000
    assert not sim.cell_effects.duplicated(subset=factors).any()
    observed = sim.data.groupby(factors).size()
    assert len(sim.cell_effects) == len(observed) <= 384
    merged = sim.cell_effects.merge(observed.rename("count").reset_index(), on=factors)
    assert (merged["n"] == merged["count"]).all()

    binary = simulate(300, family="binary", seed=1)
    assert binary.data["outcome"].dtype == np.int64
    assert set(binary.data["outcome"].unique()) <= {0, 1}


@pytest.mark.parametrize(("n", "share", "expected"), [(1000, 0.5, 500), (101, 0.3, 30),
                                                     (10, 0.0, 0), (10, 1.0, 10), (7, 0.5, 4)])
def test_exact_treated_count(n: int, share: float, expected: int) -> None:
    sim = simulate(n, treated_share=share, seed=3)
    assert expected == round(n * share)
    assert (sim.data["treatment"] == "treatment").sum() == expected


def test_gaussian_cell_truth_is_tau() -> None:
    effect = EffectSpec(base=0.1, levels={("gender", "Male"): -0.2},
                        intersections={BLACK_MEN: 1.0})
    baseline = BaselineSpec(intercept=3.0, levels={("race", "Black"): 2.0})
    sim = simulate(2000, factors=TWO_FACTORS, effect=effect, baseline=baseline, seed=2)
    truth = sim.cell_effects.set_index(["gender", "race"])["true_effect"]
    assert truth[("Female", "White")] == pytest.approx(0.1)
    assert truth[("Female", "Black")] == pytest.approx(0.1)
    assert truth[("Male", "White")] == pytest.approx(-0.1)
    assert truth[("Male", "Black")] == pytest.approx(0.9)
    assert sim.true_effect({"gender": "Male", "race": "Black"}) == pytest.approx(0.9)


def test_gaussian_recovers_planted_effect_for_black_men() -> None:
    effect = EffectSpec(base=0.2, levels={("gender", "Male"): -0.1},
                        intersections={BLACK_MEN: 0.8})
    baseline = BaselineSpec(intercept=5.0, levels={("gender", "Female"): 0.5}, noise_sd=1.5)
    sim = simulate(200_000, factors=TWO_FACTORS, effect=effect, baseline=baseline, seed=11)
    truth = sim.true_effect({"race": "Black", "gender": "Male"})
    assert truth == pytest.approx(0.9)
    d = sim.data[(sim.data["race"] == "Black") & (sim.data["gender"] == "Male")]
    arms = d.groupby("treatment")["outcome"].agg(["mean", "var", "count"])
    diff = arms.loc["treatment", "mean"] - arms.loc["control", "mean"]
    se = math.sqrt(sum(arms.loc[a, "var"] / arms.loc[a, "count"] for a in arms.index))
    assert abs(diff - truth) < 4 * se
    assert se < 0.03  # the check has teeth

    overall = sim.data.groupby("treatment")["outcome"].mean()
    overall_se = 1.5 * math.sqrt(4 / len(sim.data))
    assert abs(overall["treatment"] - overall["control"] - sim.true_effect()) < 4 * overall_se


def test_binary_truth_is_probability_difference() -> None:
    effect = EffectSpec(base=0.3, levels={("race", "Black"): 0.2},
                        intersections={BLACK_MEN: 1.0})
    baseline = BaselineSpec(intercept=-0.5, levels={("gender", "Male"): 0.4})
    sim = simulate(3000, family="binary", factors=TWO_FACTORS, effect=effect,
                   baseline=baseline, seed=5)
    truth = sim.cell_effects.set_index(["gender", "race"])["true_effect"]
    eta0, tau = -0.5 + 0.4, 0.3 + 0.2 + 1.0  # Black men
    assert truth[("Male", "Black")] == pytest.approx(expit(eta0 + tau) - expit(eta0), rel=1e-12)
    eta0, tau = -0.5, 0.3  # white women
    assert truth[("Female", "White")] == pytest.approx(expit(eta0 + tau) - expit(eta0), rel=1e-12)
    assert set(sim.data["outcome"].unique()) == {0, 1}


def test_binary_recovers_planted_effect_for_black_men() -> None:
    effect = EffectSpec(base=0.1, intersections={BLACK_MEN: 1.0})
    sim = simulate(200_000, family="binary", factors=TWO_FACTORS, effect=effect,
                   baseline=BaselineSpec(intercept=-0.4), seed=12)
    truth = sim.true_effect({"race": "Black", "gender": "Male"})
    assert truth == pytest.approx(expit(0.7) - expit(-0.4))
    d = sim.data[(sim.data["race"] == "Black") & (sim.data["gender"] == "Male")]
    arms = d.groupby("treatment")["outcome"].agg(["mean", "count"])
    p, m = arms["mean"], arms["count"]
    diff = p["treatment"] - p["control"]
    se = math.sqrt(sum(p[a] * (1 - p[a]) / m[a] for a in arms.index))
    assert abs(diff - truth) < 4 * se


def test_true_effect_is_n_weighted_mean_of_cells() -> None:
    effect = EffectSpec(base=0.1, levels={("party", "Democrat"): 0.3, ("kids", "Yes"): -0.2},
                        intersections={BLACK_MEN: 0.8})
    for family in ("gaussian", "binary"):
        sim = simulate(3000, family=family, effect=effect, seed=4)
        cells = sim.cell_effects
        for group in [None, {}, {"race": "Black"}, {"race": "Black", "gender": "Male"},
                      {"party": "Democrat", "kids": "Yes", "married": "No"}]:
            mask = np.ones(len(cells), dtype=bool)
            for f, level in (group or {}).items():
                mask &= (cells[f] == level).to_numpy()
            rows = cells[mask]
            expected = np.average(rows["true_effect"], weights=rows["n"])
            assert sim.true_effect(group) == pytest.approx(expected, rel=1e-12)

        # Person-level average over the data gives the same thing.
        per_person = sim.data.merge(cells, on=list(sim.factors))["true_effect"]
        assert sim.true_effect() == pytest.approx(per_person.mean(), rel=1e-12)


def test_true_effects_table() -> None:
    effect = EffectSpec(base=0.1, levels={("party", "Republican"): -0.3},
                        intersections={BLACK_MEN: 0.8})
    sim = simulate(3000, effect=effect, seed=9)
    table = sim.true_effects(["race", "gender"])
    assert list(table.columns) == ["race", "gender", "n", "true_effect"]
    assert table["n"].sum() == 3000
    assert list(table["race"].unique()) == list(DEFAULT_FACTORS["race"])  # level order
    for row in table.itertuples(index=False):
        group = {"race": row.race, "gender": row.gender}
        assert row.true_effect == pytest.approx(sim.true_effect(group), rel=1e-12)
        assert row.n == ((sim.data["race"] == row.race) & (sim.data["gender"] == row.gender)).sum()
    everybody = sim.true_effects([])
    assert everybody["n"].tolist() == [3000]
    assert everybody["true_effect"].iloc[0] == pytest.approx(sim.true_effect())


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        simulate(100, effect=EffectSpec(levels={("race", "Martian"): 1.0}))
    with pytest.raises(ValueError, match="unknown factor"):
        simulate(100, baseline=BaselineSpec(levels={("income", "High"): 1.0}))
    with pytest.raises(ValueError, match="unknown level"):
        simulate(100, effect=EffectSpec(intersections={(("race", "Black"), ("gender", "X")): 1.0}))
    with pytest.raises(ValueError, match="same factor"):
        EffectSpec(intersections={(("race", "Black"), ("race", "White")): 1.0})
    with pytest.raises(ValueError, match="family"):
        simulate(100, family="poisson")
    with pytest.raises(ValueError, match="treated_share"):
        simulate(100, treated_share=1.5)
    with pytest.raises(ValueError, match="positive integer"):
        simulate(0)
    sim = simulate(100, seed=1)
    with pytest.raises(ValueError, match="unknown level"):
        sim.true_effect({"race": "Martian"})
    with pytest.raises(ValueError, match="unknown factors"):
        sim.true_effects(["income"])


def test_simulation_is_a_frozen_record() -> None:
    sim = simulate(50, seed=0)
    assert isinstance(sim, Simulation)
    with pytest.raises(AttributeError):
        sim.family = "binary"  # type: ignore[misc]


def test_committed_sample_data_matches_generator(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        ["experiment.csv", "experiment_binary.csv", "true_effects.csv"])
    for path in written:
        committed = pd.read_csv(SAMPLE_DIR / path.name, keep_default_na=False)
        fresh = pd.read_csv(path, keep_default_na=False)
        pd.testing.assert_frame_equal(committed, fresh, check_exact=False, rtol=1e-9)


def test_sample_data_contents() -> None:
    gaussian = pd.read_csv(SAMPLE_DIR / "experiment.csv")
    binary = pd.read_csv(SAMPLE_DIR / "experiment_binary.csv")
    factors = list(DEFAULT_FACTORS)
    assert list(gaussian.columns) == ["id", *factors, "treatment", "support"]
    assert list(binary.columns) == ["id", *factors, "treatment", "donated"]
    for frame in (gaussian, binary):
        assert len(frame) == 4000
        assert (frame["treatment"] == "treatment").sum() == 2000
    assert set(binary["donated"].unique()) == {0, 1}

    truth = pd.read_csv(SAMPLE_DIR / "true_effects.csv", keep_default_na=False)
    assert list(truth.columns) == ["dataset", "factor_1", "level_1", "factor_2", "level_2",
                                   "n", "true_effect"]
    per_dataset = 1 + 17 + 118  # everybody, levels, level pairs (all observed at n = 4000)
    assert len(truth) == 2 * per_dataset
    for name in ("experiment.csv", "experiment_binary.csv"):
        rows = truth[truth["dataset"] == name]
        assert len(rows) == per_dataset
        everybody = rows[rows["factor_1"] == ""]
        assert everybody["n"].tolist() == [4000]
        black_men = rows[(rows["factor_1"] == "gender") & (rows["level_1"] == "Male")
                         & (rows["factor_2"] == "race") & (rows["level_2"] == "Black")]
        assert len(black_men) == 1
        # The planted effect for Black men dominates the average.
        assert black_men["true_effect"].iloc[0] > 4 * everybody["true_effect"].iloc[0]

    generator = load_generator()
    sim = generator.gaussian_simulation()
    bm = {"race": "Black", "gender": "Male"}
    # Gaussian Black men: 0.15 - 0.05 + 0.8 + party terms averaged over them.
    party = sim.data.loc[(sim.data["race"] == "Black") & (sim.data["gender"] == "Male"), "party"]
    expected = 0.9 + 0.1 * ((party == "Democrat").mean() - (party == "Republican").mean())
    assert sim.true_effect(bm) == pytest.approx(expected, rel=1e-12)
