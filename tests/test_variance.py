"""The residual-sd structure's choices and the outcome's shape, without fitting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hte.cells import aggregate
from hte.variance import kurtosis_factor, outcome_note, outcome_shape


def test_outcome_note_for_mostly_zero_spend_says_how_it_is_modelled():
    rng = np.random.default_rng(0)
    spend = np.where(rng.random(5000) < 0.1, rng.lognormal(3, 1, 5000), 0.0)
    shape = outcome_shape(spend)
    assert shape.zero_share == pytest.approx(0.9, abs=0.02)
    assert shape.skewness > 2 and shape.support == "non-negative" and shape.unusual
    note = outcome_note(shape, "spend")
    assert "% of the values are 0" in note and "right-skewed" in note
    assert "residual spread of its own for each arm" in note
    assert "can be negative" in note and "differences in means" in note


def test_no_note_for_a_bell_shaped_outcome_and_shares_are_bounded():
    rng = np.random.default_rng(1)
    assert outcome_note(outcome_shape(rng.normal(5, 1, 3000)), "support") is None
    shares = outcome_shape(rng.beta(2, 5, 3000))
    assert shares.support == "between 0 and 1" and not shares.unusual
    assert outcome_shape(None).support is None


def test_kurtosis_factor_is_one_for_normal_data_and_large_for_heavy_tails():
    rng = np.random.default_rng(2)
    n = 20000
    frame = pd.DataFrame({"a": rng.choice(list("xyz"), n), "b": rng.choice(list("pq"), n),
                          "c": rng.choice(list("uvw"), n), "_z": rng.integers(0, 2, n)})
    frame["_y"] = rng.normal(0, 1, n)
    normal = kurtosis_factor(aggregate(frame, ["a", "b", "c"], "gaussian"))
    assert 1.0 <= normal < 2.0    # (k - 1) / 2 = 1 for normal data; ~36 cells give +-0.3
    frame["_y"] = np.where(rng.random(n) < 0.1, rng.lognormal(0, 1.2, n), 0.0)
    heavy = kurtosis_factor(aggregate(frame, ["a", "b", "c"], "gaussian"))
    assert heavy > 5
