"""The NumPyro models: one function per outcome family.

Notation (see docs/model.md for the full statement and the reasons behind each choice):

    beta = [alpha, tau, u_1..u_K, v_1..v_K]          (hte.design)
    eta_c = x_c . beta                               linear predictor of cell c
    alpha ~ N(m_alpha, s_alpha^2),  tau ~ N(0, s_tau^2)
    u_k ~ N(0, sigma_k^2 I)                          baseline variation of term k (zero-sum levels)
                                                     (binary: sigma_k fixed, see binomial_model)
    v_k ~ N(0, omega_k^2 I)                          treatment-effect variation of term k
    sigma_k ~ HalfNormal(s_base)
    omega_k = lambda * xi_k,  xi_k ~ HalfNormal(1),  lambda ~ HalfNormal(s_mod)

Gaussian: y_i ~ N(eta_c(i), sigma_y^2) on the standardized outcome, sigma_y ~ HalfNormal(s_y).
Because every coefficient in beta enters linearly with a Gaussian prior, beta is integrated out
exactly given the scales; NUTS samples only the scales, and beta is then drawn from its exact
Gaussian conditional (:func:`draw_gaussian_coefficients`).

Binary: k_c ~ Binomial(n_c, logit^-1(eta_c)); NUTS samples everything, with the effect
coefficients non-centred and the baseline coefficients on a fixed scale.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpyro
import numpyro.distributions as dist

import hte._jax  # noqa: F401  (64-bit floats, compilation cache)


class Hyper(NamedTuple):
    """Prior scales and the coefficient-to-term map (arrays, so a new prior needs no recompile)."""

    alpha_loc: jax.Array       # prior mean of alpha
    alpha_sd: jax.Array
    tau_sd: jax.Array
    baseline_scale: jax.Array
    modifier_scale: jax.Array
    sigma_scale: jax.Array
    binary_baseline_sd: jax.Array
    coef_term: jax.Array       # (n_level_coefs,) int: term of each level coefficient


class GaussianStats(NamedTuple):
    """Cell sufficient statistics contracted with the design (standardized outcome).

    ``gram = X' W X``, ``xty = X' W ybar`` with W = diag(n_c); ``yty`` = sum of y_i^2 over rows.
    """

    gram: jax.Array
    xty: jax.Array
    yty: jax.Array
    n: jax.Array


class BinomialCells(NamedTuple):
    x: jax.Array               # (cells, P) design rows
    n: jax.Array               # (cells,) people


def sample_effect_scales(hyper: Hyper, n_terms: int) -> jax.Array:
    """Treatment-effect scales omega_k = lambda * xi_k of the K grouping terms.

    The effect scales share one hierarchical scale ``lambda``: with two or three levels a term
    cannot estimate its own variance, so the terms borrow strength from each other.
    """
    if n_terms == 0:  # one average effect, no subgroups
        return jnp.zeros(0)
    with numpyro.plate("terms", n_terms):
        xi = numpyro.sample("xi_effect", dist.HalfNormal(1.0))
    effect_scale = numpyro.sample("effect_scale", dist.HalfNormal(hyper.modifier_scale))
    return numpyro.deterministic("sigma_effect", effect_scale * xi)


def sample_baseline_scales(hyper: Hyper, n_terms: int) -> jax.Array:
    """Baseline (intercept) scales sigma_k of the K grouping terms."""
    if n_terms == 0:
        return jnp.zeros(0)
    with numpyro.plate("baseline_terms", n_terms):
        return numpyro.sample("sigma_baseline", dist.HalfNormal(hyper.baseline_scale))


def prior_sd(hyper: Hyper, sigma_baseline: jax.Array, sigma_effect: jax.Array) -> jax.Array:
    """Prior sd of every coefficient in beta, in design order."""
    return jnp.concatenate([
        jnp.stack([hyper.alpha_sd, hyper.tau_sd]),
        sigma_baseline[hyper.coef_term],
        sigma_effect[hyper.coef_term],
    ])


def _marginal_parts(stats: GaussianStats, sd: jax.Array, sigma: jax.Array):
    """Value of log p(y | scales) and its gradient with respect to ``sd`` and ``sigma``.

    With v = sd^2, phi = sigma^2, Lambda = V^-1 + X'WX / phi (posterior precision of beta),
    b = X'Wy / phi, and M = I + S X'WX S / phi = L L' (S = diag(sd), so Lambda = S^-1 M S^-1):

        log p(y) = -N/2 log(2 pi phi) - y'y / (2 phi) - log|L| + |L^-1 r|^2 / 2,  r = S b.

    The gradient is the posterior expectation of the complete-data score (Fisher's identity),
    with mu = E[beta | y] and Sigma = Cov[beta | y]:

        d/dv_j  = (Sigma_jj + mu_j^2) / (2 v_j^2) - 1 / (2 v_j)
        d/dphi  = E|y - X beta|^2 / (2 phi^2) - N / (2 phi),
        E|y - X beta|^2 = y'y - 2 mu'X'Wy + mu'X'WX mu + phi (P - tr M^-1).

    One Cholesky factor and one triangular inverse give all of it, about half the cost of
    differentiating through the Cholesky factorization.
    """
    phi = sigma**2
    p = sd.shape[0]
    m = jnp.eye(p) + sd[:, None] * stats.gram * sd[None, :] / phi
    chol = jax.lax.linalg.cholesky(m, symmetrize_input=False)
    chol_inv = jax.lax.linalg.triangular_solve(chol, jnp.eye(p), left_side=True, lower=True)
    r = sd * stats.xty / phi
    w = chol_inv @ r
    value = (-0.5 * stats.n * jnp.log(2 * jnp.pi * phi) - 0.5 * stats.yty / phi
             - jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * jnp.dot(w, w))
    m_inv_diag = jnp.sum(chol_inv**2, axis=0)
    mu = sd * (chol_inv.T @ w)
    v = sd**2
    d_v = (v * m_inv_diag + mu**2) / (2 * v**2) - 0.5 / v
    resid = (stats.yty - 2 * jnp.dot(mu, stats.xty) + jnp.dot(mu, stats.gram @ mu)
             + phi * (p - jnp.sum(m_inv_diag)))
    d_phi = resid / (2 * phi**2) - 0.5 * stats.n / phi
    return value, d_v * 2 * sd, d_phi * 2 * sigma


@jax.custom_vjp
def gaussian_marginal_loglik(stats: GaussianStats, sd: jax.Array, sigma: jax.Array) -> jax.Array:
    """log p(y | scales) with beta ~ N(0, diag(sd^2)) integrated out, from cell statistics."""
    return _marginal_parts(stats, sd, sigma)[0]


def _marginal_fwd(stats, sd, sigma):
    value, d_sd, d_sigma = _marginal_parts(stats, sd, sigma)
    return value, (stats, d_sd, d_sigma)


def _marginal_bwd(res, g):
    stats, d_sd, d_sigma = res
    zeros = jax.tree_util.tree_map(jnp.zeros_like, stats)
    return zeros, g * d_sd, g * d_sigma


gaussian_marginal_loglik.defvjp(_marginal_fwd, _marginal_bwd)


def gaussian_model(stats: GaussianStats, hyper: Hyper, n_terms: int) -> None:
    """Gaussian outcome with the coefficients integrated out (a collapsed linear-Gaussian model)."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(hyper.sigma_scale))
    sigma_baseline = sample_baseline_scales(hyper, n_terms)
    sigma_effect = sample_effect_scales(hyper, n_terms)
    sd = prior_sd(hyper, sigma_baseline, sigma_effect)
    numpyro.factor("y", gaussian_marginal_loglik(stats, sd, sigma))


def draw_gaussian_coefficients(key: jax.Array, stats: GaussianStats, hyper: Hyper,
                               sigma: jax.Array, sigma_baseline: jax.Array,
                               sigma_effect: jax.Array) -> jax.Array:
    """One exact draw of beta from p(beta | scales, y) = N(D^1/2 M^-1 r, D^1/2 M^-1 D^1/2)."""
    sd = prior_sd(hyper, sigma_baseline, sigma_effect)
    m = jnp.eye(sd.shape[0]) + sd[:, None] * stats.gram * sd[None, :] / sigma**2
    chol = jnp.linalg.cholesky(m)
    w = jsl.solve_triangular(chol, sd * stats.xty / sigma**2, lower=True)
    eps = jax.random.normal(key, sd.shape)
    return sd * jsl.solve_triangular(chol.T, w + eps, lower=False)


def binomial_loglik(eta: jax.Array, n: jax.Array, successes: jax.Array) -> jax.Array:
    """Sum over cells of k * eta - n * log(1 + e^eta): the Bernoulli log-likelihood of the rows."""
    return jnp.sum(successes * eta - n * jax.nn.softplus(eta))


def binomial_model(cells: BinomialCells, hyper: Hyper, n_terms: int,
                   successes: jax.Array | None = None) -> None:
    """Binary outcome, logit link, likelihood on cells.

    Baseline level coefficients have a fixed weakly informative scale, ``u ~ N(0, s_base_bin)``,
    and are sampled centred: they are nuisance parameters that experiments pin down well, and
    learning their scale added a funnel that doubled sampling time (bench/README.md). Effect
    coefficients keep the hierarchical, pooled scales and are non-centred, ``v = omega * raw``
    with ``raw ~ N(0, 1)``; centred and partially centred versions diverged.
    """
    alpha = numpyro.sample("alpha", dist.Normal(hyper.alpha_loc, hyper.alpha_sd))
    tau = numpyro.sample("tau", dist.Normal(0.0, hyper.tau_sd))
    sigma_effect = sample_effect_scales(hyper, n_terms)
    if n_terms:
        width = hyper.coef_term.shape[0]
        u = numpyro.sample("baseline", dist.Normal(0.0, hyper.binary_baseline_sd)
                           .expand([width]).to_event(1))
        raw = numpyro.sample("effect_raw", dist.Normal(0.0, 1.0).expand([width]).to_event(1))
        beta = jnp.concatenate([jnp.stack([alpha, tau]), u, sigma_effect[hyper.coef_term] * raw])
    else:
        beta = jnp.stack([alpha, tau])
    numpyro.deterministic("beta", beta)
    eta = cells.x @ beta
    if successes is None:
        numpyro.sample("successes", dist.Binomial(cells.n, logits=eta))
    else:
        numpyro.factor("y", binomial_loglik(eta, cells.n, successes))
