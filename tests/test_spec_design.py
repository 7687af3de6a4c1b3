"""Model specification (formula strings, validation) and the design matrix over cells."""

from __future__ import annotations

import numpy as np
import pytest

from hte.design import Design
from hte.errors import SpecError
from hte.spec import ModelSpec, Priors, SamplerSettings


def spec(**kw) -> ModelSpec:
    base = {"outcome": "y", "treatment": "z", "treated": "1", "control": "0", "family": "gaussian"}
    return ModelSpec(**{**base, **kw})


@pytest.mark.parametrize(("kw", "formula"), [
    ({}, "y ~ z"),
    ({"factors": ("x1",)}, "y ~ z + (1 + z || x1)"),
    ({"factors": ("x1", "x2"), "interactions": (("x1", "x2"),)},
     "y ~ z + (1 + z || x1) + (1 + z || x2) + (1 + z || x1:x2)"),
    ({"outcome": "vote share", "treatment": "got.mail", "factors": ("age group", "2x")},
     "`vote share` ~ got.mail + (1 + got.mail || `age group`) + (1 + got.mail || `2x`)"),
])
def test_formula_strings(kw, formula):
    assert spec(**kw).formula == formula


def test_terms_are_factors_then_intersections():
    s = spec(factors=("a", "b", "c"), interactions=(("a", "b"), ("b", "c")))
    assert s.terms == (("a",), ("b",), ("c",), ("a", "b"), ("b", "c"))


@pytest.mark.parametrize(("kw", "words"), [
    ({"factors": ("a",), "interactions": (("a", "b"),)}, "not among the chosen factors"),
    ({"factors": ("a", "b"), "interactions": (("a",),)}, "two or more different factors"),
    ({"factors": ("a", "b"), "interactions": (("a", "b"), ("b", "a"))}, "listed twice"),
    ({"factors": ("a", "a")}, "only once"),
    ({"family": "poisson"}, "family"),
])
def test_bad_specs_are_refused_with_a_sentence(kw, words):
    with pytest.raises(SpecError, match=words):
        spec(**kw)


def test_prior_presets_and_bad_strength():
    assert Priors.preset("strong").modifier_scale < Priors.preset("weak").modifier_scale
    assert Priors.preset(0.3).modifier_scale == 0.3
    with pytest.raises(SpecError, match="weak, moderate, strong"):
        Priors.preset("extreme")
    with pytest.raises(SpecError):
        Priors.preset(-1)


def test_sampler_settings_are_validated():
    with pytest.raises(SpecError, match="target acceptance"):
        SamplerSettings(target_accept=1.2)
    with pytest.raises(SpecError):
        SamplerSettings(draws=0)


def test_design_rows_and_level_effects():
    levels = {"a": ("p", "q", "r"), "b": ("u", "v")}
    d = Design.build(("a", "b"), levels, (("a",), ("b",), ("a", "b")))
    assert d.term_sizes == (3, 2, 6)
    assert d.n_coefs == 2 + 2 * (2 + 1 + 5)
    codes = np.array([[0, 0], [2, 1]])
    # Intersection levels are mixed-radix: (a=r, b=v) is 2 * 2 + 1.
    np.testing.assert_array_equal(d.term_levels(codes), [[0, 0, 0], [2, 1, 5]])
    x = d.rows(codes, np.array([0, 1]))
    effect = d.effect_rows(codes)
    np.testing.assert_allclose(d.rows(codes, np.ones(2)) - d.rows(codes, np.zeros(2)), effect)
    assert np.all(x[:, 0] == 1) and list(x[:, 1]) == [0, 1]
    beta = np.random.default_rng(0).normal(size=(7, d.n_coefs))
    for k in range(d.n_terms):
        a_k, b_k = d.level_effects(beta, k)
        np.testing.assert_allclose(a_k.sum(axis=-1), 0, atol=1e-12)
        np.testing.assert_allclose(b_k.sum(axis=-1), 0, atol=1e-12)
    # The linear predictor is the sum of intercept, effect and the level effects of each term.
    a0, b0 = d.level_effects(beta, 0)
    a1, b1 = d.level_effects(beta, 1)
    a2, b2 = d.level_effects(beta, 2)
    eta = beta @ d.rows(np.array([[2, 1]]), np.array([1])).T
    manual = (beta[:, 0] + beta[:, 1] + a0[:, 2] + b0[:, 2] + a1[:, 1] + b1[:, 1]
              + a2[:, 5] + b2[:, 5])
    np.testing.assert_allclose(eta[:, 0], manual, atol=1e-12)
