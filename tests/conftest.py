"""Shared fixtures: small, fast fits of the bundled sample data (few draws, fixed seeds)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
FACTORS = ["gender", "race", "generation", "married", "kids", "party"]

# The dashboard compiles the sampler in background threads while the user chooses
# (ui.fitting.warm_up); tests that want it turn it on, so no compilation outlives the test
# that started it.
os.environ.setdefault("HTE_WARM_UP", "off")

#: Sampler settings for tests that need a fit but not precision.
FAST = {"chains": 2, "warmup": 300, "draws": 300, "seed": 1}


@pytest.fixture(scope="session")
def sample_table() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "experiment.csv")


@pytest.fixture(scope="session")
def sample_binary_table() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "experiment_binary.csv")


@pytest.fixture(scope="session")
def gaussian_fit(sample_table):
    """The sample experiment, three factors and one intersection, fitted quickly."""
    import hte

    return hte.fit(sample_table, outcome="support", treatment="treatment", treated="treatment",
                   by=["gender", "race", "party"], interactions=["gender:race"], **FAST)


@pytest.fixture(scope="session")
def binary_fit(sample_binary_table):
    import hte

    return hte.fit(sample_binary_table, outcome="donated", treatment="treatment",
                   treated="treatment", by=["gender", "race"], interactions=["gender:race"],
                   **FAST)


def extrapolation_experiment() -> pd.DataFrame:
    """A strong effect (0.6 sd) everywhere; region E has nobody treated, region D 3 treated
    people, and 'country' one value (NL)."""
    from hte.simulate import BaselineSpec, EffectSpec, simulate

    sim = simulate(3000, factors={"region": {"A": .3, "B": .25, "C": .2, "D": .15, "E": .1},
                                  "size": {"small": .5, "large": .5}},
                   effect=EffectSpec(base=0.6), baseline=BaselineSpec(noise_sd=1.0), seed=3)
    d = sim.data
    treated = d["treatment"] == "treatment"
    d_treated = d.index[(d["region"] == "D") & treated]
    d = d.drop(d.index[(d["region"] == "E") & treated]).drop(d_treated[3:])
    return d.assign(country="NL")


@pytest.fixture(scope="session")
def extrapolated_fit():
    """:func:`extrapolation_experiment` fitted by region, size and country (left out)."""
    import hte

    return hte.fit(extrapolation_experiment(), outcome="outcome", treatment="treatment",
                   treated="treatment", by=["region", "size", "country"],
                   interactions=["region:country"], **FAST)
