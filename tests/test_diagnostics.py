"""Diagnostics of the numbers reported: group effects' R-hat/ESS, Monte Carlo SE of the
probabilities, single-chain fits, overdispersed starts, and retries kept in the record."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import FAST
from scipy.signal import lfilter

import hte
from hte import fitting as fit_module
from hte.cli import effects_json
from hte.diagnostics import MAX_R_HAT, Diagnostics, effect_convergence, probability_mcse
from hte.reports import Snapshot
from hte.result import MC_COLUMNS


def stacked(chains: np.ndarray) -> np.ndarray:
    """(chains, draws, k) -> (chains * draws, k), chains one after another (as Fit returns)."""
    return chains.reshape(-1, chains.shape[-1])


def ar1(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) series with unit marginal variance along the last axis."""
    e = rng.normal(size=shape) * math.sqrt(1 - phi**2)
    e[..., 0] /= math.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], e, axis=-1)


# -- Monte Carlo SE of a probability ---------------------------------------------------------------

def test_mcse_of_a_probability_is_binomial_for_independent_draws():
    rng = np.random.default_rng(0)
    p = np.array([0.05, 0.3, 0.5, 0.9])
    ind = (rng.random((4, 1000, 4)) < p).astype(float)
    mcse = probability_mcse(stacked(ind), chains=4)
    binomial = np.sqrt(p * (1 - p) / 4000)
    np.testing.assert_allclose(mcse, binomial, rtol=0.12)


def test_mcse_of_a_probability_grows_with_autocorrelation_and_matches_replications():
    rng = np.random.default_rng(1)
    reps = 300
    latent = ar1(rng, 0.9, (reps, 4, 1000))        # P(latent > 0.5) = 0.3085
    ind = (latent > 0.5).astype(float)
    mcse = np.array([probability_mcse(stacked(r[..., None]), chains=4)[0] for r in ind])
    p = 1 - 0.6915
    binomial = math.sqrt(p * (1 - p) / 4000)
    assert mcse.mean() > 2.5 * binomial             # AR(1) phi = 0.9: about 3.4x
    # and it is the right size: the spread of p-hat over independent replications
    spread = ind.mean(axis=(1, 2)).std(ddof=1)
    assert mcse.mean() == pytest.approx(spread, rel=0.15)


def test_mcse_is_zero_when_every_draw_agrees():
    ind = np.ones((2000, 2))
    ind[:, 1] = 0
    np.testing.assert_array_equal(probability_mcse(ind, chains=2), [0.0, 0.0])


# -- R-hat and ESS of the group effects ------------------------------------------------------------

def test_effect_r_hat_detects_a_shifted_chain():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(4, 1000, 3))
    draws[2, :, 1] += 0.5                           # one chain off for the second effect
    table = effect_convergence(stacked(draws), chains=4)
    assert table["r_hat"].iloc[1] > MAX_R_HAT       # about 1.03
    assert (table["r_hat"].iloc[[0, 2]] < 1.01).all()
    assert (table["ess_bulk"].iloc[[0, 2]] > 3000).all()


def test_fit_with_a_chain_shifted_by_hand_fails_on_the_group_effects(gaussian_fit):
    beta = gaussian_fit.draws["beta"].copy()
    beta[1, :, 1] += 4 * beta[..., 1].std()         # tau: every group's effect moves in chain 2
    shifted = dataclasses.replace(gaussian_fit, draws={**gaussian_fit.draws, "beta": beta})
    conv = shifted.effect_convergence()
    assert len(conv) == gaussian_fit.diagnostics.effects_checked
    assert (conv["r_hat"] > 1.1).all()
    diag = gaussian_fit.diagnostics.with_effects(conv)
    assert "r_hat" in diag.problems() and not diag.ok
    assert "group effects" in " ".join(diag.advice())
    table = shifted.effects("gender", threshold=0.2)
    assert (table["r_hat"] > 1.1).all()
    # the unshifted fit passes on the same effects
    assert gaussian_fit.effects("gender")["r_hat"].max() < 1.05


def test_effect_table_carries_monte_carlo_columns(gaussian_fit):
    table = gaussian_fit.effect_table(threshold=0.2)
    assert list(table.columns[-len(MC_COLUMNS):]) == MC_COLUMNS
    d = gaussian_fit.diagnostics
    assert d.effects_checked == len(table)
    assert d.effects_max_r_hat == pytest.approx(table["r_hat"].max())
    assert d.effects_min_ess_bulk == pytest.approx(table["ess_bulk"].min())
    n = gaussian_fit.n_draws
    for col in ("p_above", "p_practically_zero", "p_below"):
        p, mcse = table[col], table[f"mcse_{col}"]
        assert (mcse >= 0).all()
        assert ((p > 0) & (p < 1) | (mcse == 0)).all()
        # the MCSE of a probability is sqrt(p (1 - p) / ESS) with 0 < ESS < several times n
        inner = (p > 0.02) & (p < 0.98)
        ess = p[inner] * (1 - p[inner]) / mcse[inner] ** 2
        assert (ess > 50).all() and (ess < 4 * n).all()
    # the MCSE depends on the threshold, R-hat does not
    other = gaussian_fit.effect_table(threshold=0.0)
    np.testing.assert_allclose(other["r_hat"], table["r_hat"])
    assert not np.allclose(other["mcse_p_above"], table["mcse_p_above"])


# -- one chain -------------------------------------------------------------------------------------

def test_one_chain_is_not_a_failure_but_says_what_it_cannot_check():
    diag = Diagnostics(chains=1, draws=1000, max_r_hat=float("nan"), min_ess_bulk=400,
                       min_ess_tail=350, divergences=0, tree_depth_saturated=0,
                       max_tree_depth=10, target_accept=0.8, seconds=1.0, seconds_compile=0.0)
    assert diag.ok and diag.problems() == []
    assert "R-hat cannot compare chains" in diag.verdict()
    assert "run 2 or more chains" in diag.verdict()
    # the other checks still apply
    few = dataclasses.replace(diag, min_ess_bulk=40)
    assert few.problems() == ["ess"]
    assert "R-hat cannot compare chains" in few.verdict()


def test_single_chain_fit(sample_table):
    fit = hte.fit(sample_table, outcome="support", treatment="treatment", treated="treatment",
                  by=["gender"], chains=1, warmup=300, draws=600, seed=3)
    d = fit.diagnostics
    assert d.chains == 1 and d.effects_checked == 3
    assert d.ok, d.verdict()
    assert "R-hat cannot compare chains" in d.verdict()
    assert d.to_dict()["unchecked"]
    table = fit.effects("gender", threshold=0.1)
    assert table["r_hat"].isna().all() and (table["ess_bulk"] > 100).all()
    assert (table["mcse_p_above"] > 0).all()


# -- retries ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def retried_fit(sample_table):
    """A fit whose first attempt is made to report 3 divergent transitions, the second none."""
    real = fit_module.run_nuts
    calls: list[float] = []

    def flaky(*args, **kwargs):
        run = real(*args, **kwargs)
        calls.append(kwargs["target_accept"])
        run.diverging[:] = False                  # exactly 3 in the first attempt, then none
        if len(calls) == 1:
            run.diverging[0, :3] = True
        return run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_module, "run_nuts", flaky)
        fit = hte.fit(sample_table, outcome="support", treatment="treatment",
                      treated="treatment", by=["gender", "party"], **FAST)
    assert calls == [0.8, 0.95]
    return fit


def test_a_retry_keeps_both_attempts_and_says_so(retried_fit):
    d = retried_fit.diagnostics
    assert d.attempts == 2 and d.divergences == 0
    first, second = d.attempts_log
    assert first["divergences"] == 3 and first["target_accept"] == 0.8
    assert second["divergences"] == 0 and second["target_accept"] == 0.95
    assert first["seed"] == FAST["seed"] and second["seed"] != first["seed"]
    assert all(a["seconds"] > 0 and a["tree_depth_hits"] >= 0 for a in d.attempts_log)
    assert d.seconds == pytest.approx(sum(a["seconds"] for a in d.attempts_log), abs=5e-3)
    assert d.verdict().startswith(
        "The first attempt met 3 divergent transitions at target acceptance 0.8; the fit was "
        "repeated at 0.95 with a new seed and then met none. The results shown are from the "
        "second attempt.")


def test_retry_history_reaches_json_saved_fits_and_reports(retried_fit, tmp_path):
    doc = json.loads(json.dumps(effects_json(retried_fit, retried_fit.effect_table())))
    block = doc["diagnostics"]
    assert [a["divergences"] for a in block["attempts"]] == [3, 0]
    assert "first attempt met 3 divergent" in block["verdict"]
    assert block["effects_checked"] == retried_fit.diagnostics.effects_checked
    assert {"r_hat", "ess_bulk", "mcse_p_above"} <= set(doc["effects"][0])

    loaded = hte.load(retried_fit.save(tmp_path / "fit.npz"))
    assert loaded.diagnostics.attempts_log == retried_fit.diagnostics.attempts_log
    assert loaded.diagnostics.verdict() == retried_fit.diagnostics.verdict()

    snap = Snapshot.from_fit(retried_fit, min_cell=1)
    again = Snapshot.from_payload(*snap.to_payload())
    restored = Diagnostics.from_dict(again.diagnostics)
    assert restored.attempts_log == retried_fit.diagnostics.attempts_log
    assert "first attempt met 3 divergent" in restored.verdict()


def test_three_attempts_are_told_in_order():
    log = [{"attempt": 1, "target_accept": 0.8, "seed": 0, "divergences": 12,
            "tree_depth_hits": 0, "seconds": 5.0},
           {"attempt": 2, "target_accept": 0.95, "seed": 7919, "divergences": 1,
            "tree_depth_hits": 0, "seconds": 6.0},
           {"attempt": 3, "target_accept": 0.99, "seed": 15838, "divergences": 2,
            "tree_depth_hits": 4, "seconds": 9.0}]
    diag = Diagnostics(chains=4, draws=1000, max_r_hat=1.002, min_ess_bulk=900,
                       min_ess_tail=800, divergences=2, tree_depth_saturated=4,
                       max_tree_depth=10, target_accept=0.99, seconds=20.0,
                       seconds_compile=0.0, attempts=3, attempts_log=log)
    text = diag.verdict()
    assert text.startswith("The first attempt met 12 divergent transitions at target acceptance "
                           "0.8; the fit was repeated at 0.95 with a new seed and met 1, then at "
                           "0.99 and met 2. The results shown are from the third attempt.")
    assert "2 divergent transitions" in text and not diag.ok
