"""Tests that can catch a wrong posterior: calibration (SBC), collapsed vs plain model, coverage.

Simulation-based calibration (Talts et al. 2018): draw parameters from the prior, data from the
parameters, fit, and record the rank of each true value among the (thinned) posterior draws.
If the sampler draws from the exact posterior, every rank is uniform on 0..L. It is run one
level below ``hte.fit``, whose priors depend on the data (a Gaussian outcome is standardized by
its own mean and sd, the binary intercept prior is centred at the data's empirical logit): the
parameters are drawn from the same ``Hyper`` the sampler is given, the cell statistics are
simulated directly, and the fit is the production sampler (``hte.sampler.run_nuts`` with the
model, Gibbs step and post-processing ``hte.fitting`` uses).
"""

from __future__ import annotations

import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hte import fitting
from hte import model as m
from hte.cells import BINARY, GAUSSIAN
from hte.design import Design
from hte.sampler import Move, run_nuts
from hte.spec import EFFECT_POOLING, Priors, SamplerSettings

DEFAULT_POOLING = Priors().effect_pooling
#: Every check runs for each pooling in EFFECT_POOLING when HTE_CALIBRATION=all. CI (about 3.5
#: minutes of CPU for this module) runs the default pooling, plus the spike-and-slab mixture
#: where its own Gibbs step runs (binary SBC, Gibbs-step tests). To restrict CI to the default,
#: make CI_POOLINGS ``{DEFAULT_POOLING}``.
CI_POOLINGS = {DEFAULT_POOLING, "mixture"} & set(EFFECT_POOLING)
FULL = os.environ.get("HTE_CALIBRATION", "").lower() == "all"


def poolings(ci: set[str] = CI_POOLINGS) -> list:
    """EFFECT_POOLING as parameters; those outside ``ci`` skipped unless FULL."""
    return [pytest.param(p, marks=pytest.mark.skipif(
        not FULL and p not in ci, reason="HTE_CALIBRATION=all runs every pooling"))
        for p in EFFECT_POOLING]


def sbc_cases() -> list:
    """(family, pooling) of the SBC checks: CI runs the Gaussian model with the default pooling
    only (it has no Gibbs step, and its poolings differ only in the scales' prior)."""
    ci = {(GAUSSIAN, DEFAULT_POOLING)} | {(BINARY, p) for p in CI_POOLINGS}
    return [pytest.param(f, p, marks=pytest.mark.skipif(
        not FULL and (f, p) not in ci, reason="HTE_CALIBRATION=all runs every pooling"),
        id=f"{f}-{p}") for f in (GAUSSIAN, BINARY) for p in EFFECT_POOLING]


# ---------------------------------------------------------------------------------------------
# A small design: factors with 2 and 3 levels and their intersection (K = 3 terms, 18 coefs).

DESIGN = Design.build(("f", "g"), {"f": ("a", "b"), "g": ("x", "y", "z")},
                      (("f",), ("g",), ("f", "g")))
_CODES = np.array([(i, j) for i in range(2) for j in range(3)])
CELL_CODES = np.concatenate([_CODES, _CODES])
CELL_Z = np.repeat([0.0, 1.0], len(_CODES))
X = DESIGN.rows(CELL_CODES, CELL_Z)
EFFECT_ROWS = DESIGN.effect_rows(_CODES)
#: People per cell (control cells first): 300 in all, unequal, as in a real experiment.
N_GAUSSIAN = np.array([20, 35, 15, 30, 25, 25, 25, 15, 30, 20, 35, 25], float)
#: Binary outcomes carry less information per person.
N_BINARY = 2 * N_GAUSSIAN
#: Which cell's treatment effect, which level effect (term 1 = g, level 0) are ranked.
CELL, TERM, LEVEL = 4, 1, 0


def hyper_for(family: str, *, modifier_scale: float = 0.3) -> m.Hyper:
    """Priors of the SBC fits, near the defaults: any prior would do, if the same one both draws
    the truth and fits. The effect-scale prior is 0.3 (default 0.2) so that 300 people sometimes
    see effect variation; the binary effect and baseline sds are 0.7 and 0.5 (defaults 2.5 and
    1) so that most simulated rates stay between 5% and 95%."""
    return m.Hyper(
        alpha_loc=jnp.asarray(0.0 if family == GAUSSIAN else -0.5), alpha_sd=jnp.asarray(1.0),
        tau_sd=jnp.asarray(1.0 if family == GAUSSIAN else 0.7),
        baseline_scale=jnp.asarray(0.5), modifier_scale=jnp.asarray(modifier_scale),
        sigma_scale=jnp.asarray(1.0), binary_baseline_sd=jnp.asarray(0.5),
        coef_term=jnp.asarray(DESIGN.coef_term), effect_shape=jnp.asarray(0.5),
        slab_scale=jnp.asarray(0.5), slab_share=jnp.asarray(0.2))


def prior_draw(rng: np.random.Generator, family: str, pooling: str, hyper: m.Hyper) -> dict:
    """One draw of every parameter from the prior, written out from docs/model.md."""
    k = DESIGN.n_terms
    a, s = float(hyper.effect_shape), float(hyper.modifier_scale)
    out: dict = {}
    if pooling == "mixture":
        lam = s * abs(rng.normal())
        own = rng.uniform(size=k) < float(hyper.slab_share)
        omega = np.where(own, float(hyper.slab_scale), lam) * np.abs(rng.normal(size=k))
        out["effect_scale"] = lam
    else:
        lam = s * abs(rng.normal()) if pooling == "shared" else s
        omega = lam * np.sqrt(rng.gamma(a, 1.0 / a, size=k))
        if pooling == "shared":
            out["effect_scale"] = lam
    coef_term = np.asarray(hyper.coef_term)
    if family == GAUSSIAN:
        out["sigma"] = float(hyper.sigma_scale) * np.abs(rng.normal(size=2))  # per arm
        sigma_baseline = float(hyper.baseline_scale) * np.abs(rng.normal(size=k))
        u = sigma_baseline[coef_term] * rng.normal(size=coef_term.size)
        alpha = float(hyper.alpha_sd) * rng.normal()
    else:
        u = float(hyper.binary_baseline_sd) * rng.normal(size=coef_term.size)
        alpha = float(hyper.alpha_loc) + float(hyper.alpha_sd) * rng.normal()
    v = omega[coef_term] * rng.normal(size=coef_term.size)
    tau = float(hyper.tau_sd) * rng.normal()
    out["sigma_effect"] = omega
    out["beta"] = np.concatenate([[alpha, tau], u, v])
    return out


#: The Gaussian model's residual sd is per arm (two variance groups, no level deviations).
VARIANCE = m.VarianceDesign(arm=jnp.asarray([0, 1]), deviation=jnp.zeros((2, 0)),
                            deviation_sd=jnp.asarray(1.0))


def gaussian_args(n: np.ndarray, ybar: np.ndarray, ss: np.ndarray) -> tuple:
    """(GaussianStats per arm, VARIANCE): the model's arguments for these cells."""
    arm = CELL_Z.astype(int)
    return (m.GaussianStats(
        gram=jnp.asarray(np.stack([(X[arm == g] * n[arm == g, None]).T @ X[arm == g]
                                   for g in (0, 1)])),
        xty=jnp.asarray(np.stack([X[arm == g].T @ (n * ybar)[arm == g] for g in (0, 1)])),
        yty=jnp.asarray(np.bincount(arm, ss + n * ybar**2, minlength=2)),
        n=jnp.asarray(np.bincount(arm, n, minlength=2))), VARIANCE)


def simulate_data(rng: np.random.Generator, family: str, truth: dict) -> tuple:
    """Model arguments (without the hyper) for data drawn given the true parameters."""
    eta = X @ truth["beta"]
    if family == GAUSSIAN:
        n, sigma = N_GAUSSIAN, truth["sigma"][CELL_Z.astype(int)]
        ybar = rng.normal(eta, sigma / np.sqrt(n))
        ss = sigma**2 * rng.chisquare(n - 1)
        return gaussian_args(n, ybar, ss)
    k = rng.binomial(N_BINARY.astype(int), 1.0 / (1.0 + np.exp(-eta)))
    return m.BinomialCells(x=jnp.asarray(X), n=jnp.asarray(N_BINARY)), jnp.asarray(k, float)


def summaries(family: str, draws: dict) -> dict[str, np.ndarray]:
    """The ranked quantities from parameters (true: no leading axes; draws: a leading axis)."""
    beta = np.asarray(draws["beta"])
    omega = np.asarray(draws["sigma_effect"])
    v_level = DESIGN.level_effects(beta, TERM)[1][..., LEVEL]
    if family == GAUSSIAN:
        cell = beta @ EFFECT_ROWS[CELL]
    else:  # difference in probability between the arms of one cell
        treated, control = X[len(_CODES) + CELL], X[CELL]
        cell = 1.0 / (1.0 + np.exp(-beta @ treated)) - 1.0 / (1.0 + np.exp(-beta @ control))
    out = {"tau": beta[..., 1], "omega_g": omega[..., 1], "omega_fg": omega[..., 2],
           "level_effect": v_level, "cell_effect": cell}
    if "effect_scale" in draws:
        out["lambda"] = np.asarray(draws["effect_scale"])
    if family == GAUSSIAN:
        sigma = np.asarray(draws["sigma"])
        out["sigma_control"], out["sigma_treated"] = sigma[..., 0], sigma[..., 1]
    return out


def fit_draws(family: str, pooling: str, hyper: m.Hyper, args: tuple, seed: int, *,
              warmup: int, draws: int, chains: int = 1,
              move: Move | None = None) -> tuple[dict, int]:
    """Posterior draws (chains, draws, ...) as ``hte.fitting`` makes them, and the divergences."""
    k = DESIGN.n_terms
    key = (family, k, DESIGN.n_coefs, len(X), move is not None, pooling)  # pooling last
    if move is None:
        move = fitting._move_fn(family, k, pooling)
    settings = SamplerSettings(chains=chains, warmup=warmup, draws=draws, seed=seed)
    run = run_nuts(fitting._model_fn(family, k, pooling), (*args, hyper), key, chains=chains,
                   warmup=warmup, draws=draws, seed=seed,
                   target_accept=0.8 if family == GAUSSIAN else 0.95, max_tree_depth=10,
                   move=move)
    inputs = fitting.ModelInputs(design=DESIGN, hyper=hyper, args=args, shape_key=key,
                                 center=0.0, scale=1.0)
    out = fitting._named_draws(run, inputs, settings, family)
    return {k: np.asarray(v) for k, v in out.items()}, int(run.diverging.sum())


def pooling_seed(pooling: str) -> int:
    """A seed per pooling that stays the same when poolings are added or removed."""
    return {"shared": 0, "independent": 1, "mixture": 2}.get(pooling, zlib.crc32(pooling.encode()))


def sbc_ranks(family: str, pooling: str, replications: int, *, seed: int = 0,
              warmup: int = 150, draws: int = 150, thin: int = 3,
              fit_hyper: m.Hyper | None = None, move: Move | None = None) -> dict[str, np.ndarray]:
    """Rank (0..draws/thin) of each true quantity among thinned posterior draws, per replication.

    Also ``_divergences``, the divergent transitions over all fits.
    """
    hyper = hyper_for(family)
    rng = np.random.default_rng([seed, pooling_seed(pooling), family == BINARY])
    ranks: dict[str, list] = {}
    divergences = 0
    for r in range(replications):
        truth = prior_draw(rng, family, pooling, hyper)
        args = simulate_data(rng, family, truth)
        post, div = fit_draws(family, pooling, fit_hyper or hyper, args, seed * 1000 + r,
                              warmup=warmup, draws=draws, move=move)
        divergences += div
        true_q = summaries(family, truth)
        post_q = summaries(family, {k: v[0] for k, v in post.items()})
        for name, value in true_q.items():
            ranks.setdefault(name, []).append(int(np.sum(post_q[name][::thin] < value)))
    out = {k: np.array(v) for k, v in ranks.items()}
    out["_divergences"] = np.array(divergences)
    return out


def binned(ranks: np.ndarray, n_ranks: int, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ranks (0..n_ranks-1) in ``bins`` near-equal bins, and their expected counts."""
    edges = np.arange(n_ranks) * bins // n_ranks          # bin of each possible rank
    counts = np.bincount(edges[ranks], minlength=bins)
    expected = np.bincount(edges, minlength=bins) / n_ranks * len(ranks)
    return counts, expected


def uniformity_p(ranks: np.ndarray, n_ranks: int, bins: int = 10) -> float:
    """Chi-square p-value of ranks (0..n_ranks-1) being uniform, over ``bins`` bins."""
    counts, expected = binned(ranks, n_ranks, bins)
    return float(stats.chisquare(counts, expected).pvalue)


def shift_p(ranks: np.ndarray, n_ranks: int) -> float:
    """Two-sided p-value of the mean rank being (n_ranks - 1) / 2, the mean of uniform ranks."""
    sd = np.sqrt((n_ranks**2 - 1) / 12 / len(ranks))
    return float(2 * stats.norm.sf(abs(np.mean(ranks) - (n_ranks - 1) / 2) / sd))


def spread_p(ranks: np.ndarray, n_ranks: int) -> float:
    """Two-sided p-value of the ranks' spread: the mean of (u - 1/2)^2, u = (rank + 1/2) /
    n_ranks, is 1/12 - 1/(12 n_ranks^2) for uniform ranks, less when the posterior is too
    wide (ranks pile up in the middle), more when it is too narrow (at both ends)."""
    u = (np.arange(n_ranks) + 0.5) / n_ranks - 0.5
    mean, var = np.mean(u**2), np.var(u**2)
    z = (np.mean(u[ranks] ** 2) - mean) / np.sqrt(var / len(ranks))
    return float(2 * stats.norm.sf(abs(z)))


def histogram(ranks: np.ndarray, n_ranks: int, bins: int = 10) -> str:
    return " ".join(str(c) for c in binned(ranks, n_ranks, bins)[0])


# ---------------------------------------------------------------------------------------------
# The collapsed Gaussian model against a plain model with the coefficients sampled.


def uncollapsed_gaussian_model(stats: m.GaussianStats, variance: m.VarianceDesign,
                               hyper: m.Hyper, n_terms: int, pooling: str) -> None:
    """The Gaussian model with beta sampled, likelihood from the same cell statistics.

    sum_i (y_i - x_i beta)^2 = y'y - 2 beta'X'Wybar + beta'X'WX beta over the cells' people.
    All coefficients are non-centred, beta = sd * raw.
    """
    import numpyro
    import numpyro.distributions as dist

    sigma = m.sample_residual_sds(variance, hyper)            # per arm
    sigma_baseline = m.sample_baseline_scales(hyper, n_terms)
    sigma_effect = m.sample_effect_scales(hyper, n_terms, pooling=pooling, integrated=False)
    sd = m.prior_sd(hyper, sigma_baseline, sigma_effect)
    raw = numpyro.sample("raw", dist.Normal(0.0, 1.0).expand([sd.shape[0]]).to_event(1))
    beta = numpyro.deterministic("beta", sd * raw)
    rss = stats.yty - 2.0 * stats.xty @ beta + jnp.einsum("i,gij,j->g", beta, stats.gram, beta)
    numpyro.factor("y", jnp.sum(-0.5 * stats.n * jnp.log(2 * jnp.pi * sigma**2)
                                - 0.5 * rss / sigma**2))


def planted_gaussian_stats(seed: int, people: float = 3.0) -> tuple:
    """Cell statistics of an experiment with moderate effect variation (``people`` x 300)."""
    rng = np.random.default_rng(seed)
    coef_term = DESIGN.coef_term
    omega = np.array([0.1, 0.3, 0.05])
    beta = np.concatenate([[0.2, 0.3], 0.3 * rng.normal(size=coef_term.size),
                           omega[coef_term] * rng.normal(size=coef_term.size)])
    n = people * N_GAUSSIAN
    sigma = np.where(CELL_Z == 1, 1.3, 1.0)
    ybar = rng.normal(X @ beta, sigma / np.sqrt(n))
    ss = sigma**2 * rng.chisquare(n - 1)
    return gaussian_args(n, ybar, ss)


def compared_quantities(draws: dict) -> dict[str, np.ndarray]:
    """Scales and every cell's treatment effect, each (chains, draws)."""
    beta = np.asarray(draws["beta"])
    sigma = np.asarray(draws["sigma"])
    out = {"sigma_control": sigma[..., 0], "sigma_treated": sigma[..., 1], "tau": beta[..., 1]}
    for k in range(DESIGN.n_terms):
        out[f"omega_{k}"] = np.asarray(draws["sigma_effect"])[..., k]
        out[f"sigma_baseline_{k}"] = np.asarray(draws["sigma_baseline"])[..., k]
    if "effect_scale" in draws:
        out["lambda"] = np.asarray(draws["effect_scale"])
    for c in range(len(_CODES)):
        out[f"cell_{c}"] = beta @ EFFECT_ROWS[c]
    return out


def uncollapsed_draws(args: tuple, hyper: m.Hyper, pooling: str, *, chains: int, warmup: int,
                      draws: int, seed: int) -> dict:
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(uncollapsed_gaussian_model, target_accept_prob=0.95), num_warmup=warmup,
                num_samples=draws, num_chains=chains, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args, hyper, DESIGN.n_terms, pooling,
             extra_fields=("diverging",))
    out = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    out["_divergences"] = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return out


# ---------------------------------------------------------------------------------------------
# The binary model's Gibbs step on its own: with no data it must leave the prior unchanged.


def prior_scales_and_raw(n_draws: int, pooling: str, hyper: m.Hyper, seed: int) -> dict:
    """Unconstrained prior draws of what the Gibbs step moves, as the NUTS state holds them
    (vectorized :func:`prior_draw`)."""
    rng = np.random.default_rng(seed)
    k, a, s = DESIGN.n_terms, float(hyper.effect_shape), float(hyper.modifier_scale)
    lam = s * np.abs(rng.normal(size=(n_draws, 1))) if pooling != "independent" else s
    if pooling == "mixture":
        own = rng.uniform(size=(n_draws, k)) < float(hyper.slab_share)
        omega = np.where(own, float(hyper.slab_scale), lam) * np.abs(rng.normal(size=own.shape))
    else:
        omega = lam * np.sqrt(rng.gamma(a, 1.0 / a, size=(n_draws, k)))
    z = {"sigma_effect": jnp.log(omega),
         "effect_raw": jnp.asarray(rng.normal(size=(n_draws, DESIGN.coef_term.size)))}
    if pooling == "mixture":
        z["effect_scale"] = jnp.log(lam[:, 0])
    return z


def gibbs_prior_p_values(pooling: str, hyper: m.Hyper, n_draws: int = 10_000,
                         moves: int = 5) -> dict[str, float]:
    """KS p-values of prior draws moved ``moves`` times by the Gibbs step vs fresh prior draws."""
    z = prior_scales_and_raw(n_draws, pooling, hyper, seed=1)
    move = jax.jit(jax.vmap(lambda key, z: m.interweave_effect_scales(
        key, z, hyper, DESIGN.n_terms, pooling=pooling)))
    for i in range(moves):
        z = move(jax.random.split(jax.random.PRNGKey(10 + i), n_draws), z)
    fresh = prior_scales_and_raw(n_draws, pooling, hyper, seed=2)
    out = {}
    for name in z:
        for j in ([0] if z[name].ndim == 1 else range(min(z[name].shape[1], 4))):
            a, b = np.asarray(z[name]), np.asarray(fresh[name])
            a, b = (a, b) if a.ndim == 1 else (a[:, j], b[:, j])
            out[f"{name}[{j}]"] = float(stats.ks_2samp(a, b).pvalue)
    return out


# ---------------------------------------------------------------------------------------------
# The tests.

#: Replications per family: ranks of 50 thinned draws (51 values) in 10 bins.
REPLICATIONS = {GAUSSIAN: 150, BINARY: 100}
N_RANKS = 51
#: Family-wise false-alarm rate of one SBC check (all its quantities, both statistics).
ALPHA = 1e-3


def sbc_failures(ranks: dict[str, np.ndarray]) -> list[str]:
    """Quantities whose ranks are not uniform by any of three statistics, each at
    ALPHA / (3 x quantities) (Bonferroni): binned chi-square (any shape), mean rank (a shifted
    posterior), spread (a hump: too wide; a U: too narrow)."""
    names = [k for k in ranks if not k.startswith("_")]
    level = ALPHA / (3 * len(names))
    out = []
    for k in names:
        p = (uniformity_p(ranks[k], N_RANKS), shift_p(ranks[k], N_RANKS),
             spread_p(ranks[k], N_RANKS))
        if min(p) < level:
            out.append(f"{k}: p = {p[0]:.2g} (chi-square), {p[1]:.2g} (mean), {p[2]:.2g} "
                       f"(spread); ranks by tenth {histogram(ranks[k], N_RANKS)}")
    return out


@pytest.mark.parametrize("replications", sorted(set(REPLICATIONS.values())))
def test_rank_check_catches_posteriors_twice_too_wide_or_too_narrow(replications):
    """The SBC check's power, with normal posteriors: ranks of the truth (0) among 50 draws
    from N(estimate, f^2), estimate ~ N(0, 1), pass the check of 7 quantities for f = 1 and
    fail it for f = 2 and 1/2. Measured over 300 such sets with 100 (150) replications, the
    check catches f = 1/2, 0.6, 2 always (0.97, 1.0), f = 1.5 at 0.65 (0.92), f = 0.7 at
    0.53 (0.81), f = 1.3 at 0.07 (0.30): posteriors 30% off in width are the coverage test's
    job (tests/test_fitting.py), which pools many intervals."""
    rng = np.random.default_rng(replications)

    def ranks(f: float) -> np.ndarray:
        estimate = rng.normal(size=replications)
        draws = estimate[:, None] + f * rng.normal(size=(replications, N_RANKS - 1))
        return np.sum(draws < 0.0, axis=1)

    def check(f: float) -> list[str]:
        return sbc_failures({"x": ranks(f), **{f"other {i}": ranks(1.0) for i in range(6)}})

    assert not check(1.0)
    assert check(2.0) and check(0.5)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "pooling"), sbc_cases())
def test_posterior_ranks_of_true_parameters_are_uniform(family, pooling):
    """Simulation-based calibration of the whole sampler (collapsed Gaussian model with exact
    coefficient draws; binary model with its Gibbs step), for tau, sigma, two effect scales,
    the shared scale, a level effect and one cell's effect."""
    ranks = sbc_ranks(family, pooling, REPLICATIONS[family])
    assert int(ranks["_divergences"]) <= 0.001 * REPLICATIONS[family] * 150
    assert not sbc_failures(ranks), sbc_failures(ranks)


@pytest.mark.slow
def test_calibration_check_fails_for_an_effect_scale_prior_twice_too_wide():
    """The same check on fits whose effect-scale prior is 2x the simulating one must fail."""
    hyper = hyper_for(GAUSSIAN)
    wide = hyper._replace(modifier_scale=2 * hyper.modifier_scale)
    ranks = sbc_ranks(GAUSSIAN, DEFAULT_POOLING, REPLICATIONS[GAUSSIAN], seed=5, fit_hyper=wide)
    failed = sbc_failures(ranks)
    assert failed
    assert any(f.startswith(("lambda", "omega")) for f in failed), failed


@pytest.mark.skipif(not FULL, reason="HTE_CALIBRATION=all: about a minute")
def test_calibration_check_fails_for_a_gibbs_step_with_a_wrong_gig_parameter(monkeypatch):
    """A Gibbs step whose GIG draws have p off by 1/2 (a forgotten Jacobian), inside the
    whole sampler: the effect scales' ranks are no longer uniform (measured: lambda p ~ 2e-6,
    omega_g p ~ 9e-5 for the shared pooling)."""
    right = m.log_gig_draw
    monkeypatch.setattr(m, "log_gig_draw", lambda key, p, a, b: right(key, p + 0.5, a, b))

    def wrong_move(key, z, args):
        return m.interweave_effect_scales(key, z, args[-1], DESIGN.n_terms,
                                          pooling=DEFAULT_POOLING)

    ranks = sbc_ranks(BINARY, DEFAULT_POOLING, REPLICATIONS[BINARY], seed=5, move=wrong_move)
    assert sbc_failures(ranks)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", poolings())
@pytest.mark.parametrize("shape", [0.5, 0.25])
def test_gibbs_step_leaves_the_prior_unchanged(pooling, shape):
    """With no data the posterior is the prior, so five Gibbs steps from prior draws must give
    prior draws again (scales, shared scale, non-centred coefficients)."""
    if pooling == "mixture" and shape != 0.5:
        pytest.skip("the mixture has no shape parameter")
    hyper = hyper_for(BINARY)._replace(effect_shape=jnp.asarray(shape))
    p_values = gibbs_prior_p_values(pooling, hyper)
    assert min(p_values.values()) > ALPHA / len(p_values), p_values


@pytest.mark.slow
def test_gibbs_check_fails_for_a_wrong_gig_parameter(monkeypatch):
    right = m.log_gig_draw
    monkeypatch.setattr(m, "log_gig_draw", lambda key, p, a, b: right(key, p + 0.5, a, b))
    for pooling in sorted(CI_POOLINGS):
        p_values = gibbs_prior_p_values(pooling, hyper_for(BINARY))
        assert min(p_values.values()) < 1e-20, (pooling, p_values)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", poolings({DEFAULT_POOLING}))
def test_collapsed_gaussian_posterior_matches_the_model_with_coefficients_sampled(pooling):
    """Posterior means and sds of sigma, tau, every scale and every cell's effect agree between
    the collapsed model (scales by NUTS, coefficients drawn exactly) and NumPyro's NUTS on the
    plain model, within 4.5 Monte Carlo standard errors of their difference."""
    import arviz as az

    hyper = hyper_for(GAUSSIAN)
    args = planted_gaussian_stats(1, people=1.0)
    # Four one-chain fits: the sampler compiled for the SBC fits is reused.
    fits = [fit_draws(GAUSSIAN, pooling, hyper, args, seed, warmup=150, draws=600)
            for seed in range(4)]
    collapsed = {k: np.concatenate([f[0][k] for f in fits]) for k in fits[0][0]}
    divergences = sum(f[1] for f in fits)
    plain = uncollapsed_draws(args, hyper, pooling, chains=4, warmup=300, draws=500, seed=4)
    assert divergences == 0 and plain.pop("_divergences") <= 20
    ours, theirs = compared_quantities(collapsed), compared_quantities(plain)
    far = []
    for name, a in ours.items():
        b = theirs[name]
        for what, value in (("mean", np.mean), ("sd", np.std)):
            mcse = np.hypot(float(az.mcse(a, method=what)), float(az.mcse(b, method=what)))
            z = (value(a) - value(b)) / mcse
            if abs(z) > 4.5:
                far.append(f"{name} {what}: {value(a):.4f} vs {value(b):.4f} ({z:+.1f} MCSE)")
    assert not far, far
