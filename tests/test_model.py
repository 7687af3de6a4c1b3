"""Exact identities of the likelihoods the sampler uses: cells vs rows, collapsed vs dense."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hte import model as m
from hte.cells import aggregate
from hte.design import Design, zero_sum_basis


def random_rows(rng: np.random.Generator, n: int, binary: bool) -> pd.DataFrame:
    frame = pd.DataFrame({
        "a": rng.choice(["x", "y", "z"], n),
        "b": rng.choice(["p", "q"], n),
        "_z": rng.integers(0, 2, n),
    })
    frame["_y"] = rng.integers(0, 2, n).astype(float) if binary else rng.normal(2.0, 1.5, n)
    return frame


def design_for(cells) -> Design:
    return Design.build(cells.factors, cells.levels, (("a",), ("b",), ("a", "b")))


def test_zero_sum_basis_is_orthonormal_and_sums_to_zero():
    for levels in (2, 3, 5, 12):
        q = zero_sum_basis(levels)
        assert q.shape == (levels, levels - 1)
        np.testing.assert_allclose(q.T @ q, np.eye(levels - 1), atol=1e-12)
        np.testing.assert_allclose(q.sum(axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_binomial_cell_loglik_equals_bernoulli_row_loglik(seed):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 300, binary=True)
    cells = aggregate(rows, ["a", "b"], "binary")
    design = design_for(cells)
    beta = rng.normal(0, 0.7, design.n_coefs)
    x_cells = design.rows(cells.level_codes(cells.cells), cells.cells["z"].to_numpy())
    cell_ll = m.binomial_loglik(jnp.asarray(x_cells @ beta), jnp.asarray(cells.cells["n"]),
                                jnp.asarray(cells.cells["successes"]))
    x_rows = design.rows(cells.level_codes(rows), rows["_z"].to_numpy())
    row_ll = stats.bernoulli.logpmf(rows["_y"], 1 / (1 + np.exp(-(x_rows @ beta)))).sum()
    assert float(cell_ll) == pytest.approx(row_ll, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_cell_statistics_reproduce_row_loglik(seed):
    """n, mean and within-cell SS give exactly the rows' Gaussian log-likelihood."""
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 250, binary=False)
    cells = aggregate(rows, ["a", "b"], "gaussian")
    design = design_for(cells)
    beta, sigma = rng.normal(0, 1, design.n_coefs), 1.3
    c = cells.cells
    mu = design.rows(cells.level_codes(c), c["z"].to_numpy()) @ beta
    n = c["n"].to_numpy()
    cell_ll = np.sum(-0.5 * n * np.log(2 * np.pi * sigma**2)
                     - (c["ss"] + n * (c["mean"] - mu) ** 2) / (2 * sigma**2))
    mu_rows = design.rows(cells.level_codes(rows), rows["_z"].to_numpy()) @ beta
    row_ll = stats.norm.logpdf(rows["_y"], mu_rows, sigma).sum()
    assert cell_ll == pytest.approx(row_ll, abs=1e-6)


def collapsed_inputs(rows: pd.DataFrame):
    cells = aggregate(rows, ["a", "b"], "gaussian")
    design = design_for(cells)
    c = cells.cells
    x = design.rows(cells.level_codes(c), c["z"].to_numpy())
    n = c["n"].to_numpy(float)
    ybar = c["mean"].to_numpy()
    stats_ = m.GaussianStats(gram=jnp.asarray((x * n[:, None]).T @ x),
                             xty=jnp.asarray(x.T @ (n * ybar)),
                             yty=jnp.asarray(np.sum(c["ss"] + n * ybar**2)),
                             n=jnp.asarray(n.sum()))
    x_rows = design.rows(cells.level_codes(rows), rows["_z"].to_numpy())
    return design, stats_, x_rows


@pytest.mark.parametrize("seed", range(5))
def test_collapsed_gaussian_likelihood_equals_dense_row_marginal(seed):
    """beta integrated out from cells == log N(y; 0, sigma^2 I + X D X') over the rows."""
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 120, binary=False)
    design, stats_, x_rows = collapsed_inputs(rows)
    sd = rng.uniform(0.2, 2.0, design.n_coefs)
    sigma = rng.uniform(0.5, 2.0)
    collapsed = float(m.gaussian_marginal_loglik(stats_, jnp.asarray(sd), jnp.asarray(sigma)))
    cov = sigma**2 * np.eye(len(rows)) + (x_rows * sd**2) @ x_rows.T
    dense = stats.multivariate_normal(np.zeros(len(rows)), cov).logpdf(rows["_y"])
    assert collapsed == pytest.approx(dense, abs=1e-6)


def reference_loglik(stats_, sd, sigma):
    """The same marginal written plainly, differentiated by JAX through the Cholesky factor."""
    mm = jnp.eye(sd.shape[0]) + sd[:, None] * stats_.gram * sd[None, :] / sigma**2
    chol = jnp.linalg.cholesky(mm)
    w = jsl.solve_triangular(chol, sd * stats_.xty / sigma**2, lower=True)
    return (-0.5 * stats_.n * jnp.log(2 * jnp.pi * sigma**2) - 0.5 * stats_.yty / sigma**2
            - jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * jnp.dot(w, w))


@pytest.mark.parametrize("seed", range(3))
def test_analytic_gradient_matches_automatic_differentiation(seed):
    rng = np.random.default_rng(seed)
    _, stats_, _ = collapsed_inputs(random_rows(rng, 200, binary=False))
    sd = jnp.asarray(rng.uniform(0.1, 1.5, stats_.xty.shape[0]))
    sigma = jnp.asarray(rng.uniform(0.5, 1.5))
    ours = jax.grad(m.gaussian_marginal_loglik, argnums=(1, 2))(stats_, sd, sigma)
    ref = jax.grad(reference_loglik, argnums=(1, 2))(stats_, sd, sigma)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-8, atol=1e-8)
    assert float(ours[1]) == pytest.approx(float(ref[1]), rel=1e-8)


def gaussian_hyper(design) -> m.Hyper:
    """Prior scales for the coefficient-draw tests (the defaults of a Gaussian fit)."""
    return m.Hyper(alpha_loc=jnp.asarray(0.0), alpha_sd=jnp.asarray(1.0),
                   tau_sd=jnp.asarray(1.0), baseline_scale=jnp.asarray(0.5),
                   modifier_scale=jnp.asarray(0.2), sigma_scale=jnp.asarray(1.0),
                   binary_baseline_sd=jnp.asarray(1.0), coef_term=jnp.asarray(design.coef_term))


def test_coefficient_draws_have_the_exact_conditional_mean_and_covariance():
    rng = np.random.default_rng(7)
    rows = random_rows(rng, 150, binary=False)
    design, stats_, x_rows = collapsed_inputs(rows)
    k = design.n_terms
    hyper = gaussian_hyper(design)
    sigma, sb, se = 1.1, jnp.full(k, 0.6), jnp.full(k, 0.3)
    keys = jax.random.split(jax.random.PRNGKey(0), 40000)
    draw = jax.vmap(m.draw_gaussian_coefficients, in_axes=(0, None, None, None, None, None))
    beta = np.asarray(draw(keys, stats_, hyper, sigma, sb, se))
    sd = np.asarray(m.prior_sd(hyper, sb, se))
    precision = np.diag(sd**-2) + x_rows.T @ x_rows / sigma**2
    cov = np.linalg.inv(precision)
    mean = cov @ x_rows.T @ rows["_y"].to_numpy() / sigma**2
    se_mean = np.sqrt(np.diag(cov) / len(beta))
    assert np.all(np.abs(beta.mean(axis=0) - mean) < 5 * se_mean)
    np.testing.assert_allclose(np.cov(beta, rowvar=False), cov, atol=0.05 * np.max(np.diag(cov)))


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 3.0, 7.5])
def test_log_bessel_k_matches_scipy(nu):
    from scipy import special

    z = np.array([1e-8, 1e-3, 0.1, 1.0, 7.0, 60.0, 400.0])
    expected = np.log(special.kve(nu, z)) - z
    got = np.array([float(m.log_bessel_k(nu, zi)) for zi in z])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("omega", [[0.1, 0.05, 0.3], [0.5], [2.0, 0.01], [0.02] * 7])
def test_pooled_scales_density_is_the_shared_scale_integrated_out(omega):
    """p(omega) = int HalfNormal(lambda; s) prod_k HalfNormal(omega_k; lambda) d lambda."""
    from scipy import integrate

    s, omega = 0.2, np.asarray(omega)

    def log_joint(lam):
        return (stats.halfnorm.logpdf(lam, scale=s)
                + np.sum(stats.halfnorm.logpdf(omega, scale=lam)))

    # Integrate in log lambda around the peak, scaled to avoid underflow.
    peak = np.log(np.linalg.norm(omega) / np.sqrt(len(omega)))
    top = max(log_joint(np.exp(t)) for t in peak + np.linspace(-3, 3, 61))
    value = integrate.quad(lambda t: np.exp(log_joint(np.exp(t)) - top + t), peak - 30,
                           peak + 30, points=[peak], limit=400, epsabs=0, epsrel=1e-12)[0]
    got = float(m.EffectScales(s, len(omega)).log_prob(jnp.asarray(omega)))
    assert got == pytest.approx(np.log(value) + top, abs=1e-8)


@pytest.mark.parametrize("shape", [0.2, 1.5])
@pytest.mark.parametrize("omega", [[0.1, 0.05, 0.3], [0.5], [0.02] * 7])
def test_pooled_scales_density_with_another_shape_is_the_hierarchy_integrated(omega, shape):
    """omega_k = lambda xi_k, xi_k^2 ~ Gamma(a, a), lambda ~ HalfNormal(s), lambda integrated."""
    from scipy import integrate

    s, omega = 0.2, np.asarray(omega)

    def log_joint(lam):  # omega_k^2 ~ Gamma(a, rate a / lambda^2), with the Jacobian 2 omega_k
        log_terms = (stats.gamma.logpdf(omega**2, shape, scale=lam**2 / shape)
                     + np.log(2 * omega))
        return stats.halfnorm.logpdf(lam, scale=s) + np.sum(log_terms)

    peak = np.log(np.linalg.norm(omega) / np.sqrt(len(omega)))
    top = max(log_joint(np.exp(t)) for t in peak + np.linspace(-3, 3, 61))
    value = integrate.quad(lambda t: np.exp(log_joint(np.exp(t)) - top + t), peak - 30,
                           peak + 30, points=[peak], limit=400, epsabs=0, epsrel=1e-12)[0]
    got = float(m.EffectScales(s, len(omega), shape).log_prob(jnp.asarray(omega)))
    assert got == pytest.approx(np.log(value) + top, abs=1e-7)
    alone = float(m.EffectScales(s, len(omega), shape, shared=False).log_prob(jnp.asarray(omega)))
    expected = np.sum(stats.gamma.logpdf(omega**2, shape, scale=s**2 / shape) + np.log(2 * omega))
    assert alone == pytest.approx(expected, abs=1e-10)


def test_spike_and_slab_scale_density_is_the_two_component_mixture():
    omega = jnp.asarray([0.01, 0.1, 0.7])
    got = np.asarray(m.SpikeSlabScale(0.05, 0.5, 0.2, 3).log_prob(omega))
    expected = np.log(0.2 * stats.halfnorm.pdf(omega, scale=0.5)
                      + 0.8 * stats.halfnorm.pdf(omega, scale=0.05))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    draws = np.asarray(m.SpikeSlabScale(0.05, 0.5, 0.2, 1).sample(jax.random.PRNGKey(0),
                                                                  (200_000,)))
    assert draws.mean() == pytest.approx((0.2 * 0.5 + 0.8 * 0.05) * np.sqrt(2 / np.pi), rel=0.01)


def test_pooled_scales_density_integrates_to_one_and_sample_has_its_mean():
    d = m.EffectScales(0.2, 3)
    # Importance sampling with independent half-normal proposals: E_q[p / q] = 1.
    rng = np.random.default_rng(1)
    proposal = np.abs(rng.normal(0.0, 0.3, size=(400_000, 3)))
    log_q = np.sum(stats.halfnorm.logpdf(proposal, scale=0.3), axis=1)
    ratio = np.exp(np.asarray(jax.jit(jax.vmap(d.log_prob))(jnp.asarray(proposal))) - log_q)
    assert ratio.mean() == pytest.approx(1.0, abs=4 * ratio.std() / np.sqrt(ratio.size))
    # The hierarchy's draws: E[omega_k] = E[lambda] sqrt(2/pi) = s * 2/pi.
    draws = np.asarray(d.sample(jax.random.PRNGKey(0), (200_000,)))
    assert draws.mean() == pytest.approx(0.2 * 2 / np.pi, rel=0.01)


def test_shared_scale_draws_follow_its_conditional():
    """lambda | omega drawn exactly: its mean and sd match the conditional by quadrature."""
    from scipy import integrate

    s, omega = 0.2, np.array([0.12, 0.03, 0.3, 0.08])

    def density(lam):
        return stats.halfnorm.pdf(lam, scale=s) * np.prod(stats.halfnorm.pdf(omega, scale=lam))

    z = integrate.quad(density, 0, 3, limit=400)[0]
    mean = integrate.quad(lambda x: x * density(x), 0, 3, limit=400)[0] / z
    second = integrate.quad(lambda x: x**2 * density(x), 0, 3, limit=400)[0] / z
    draws = np.asarray(m.draw_shared_scale(jax.random.PRNGKey(0), np.tile(omega, (200_000, 1)), s))
    sd = np.sqrt(second - mean**2)
    assert draws.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(draws.size))
    assert draws.std() == pytest.approx(sd, rel=0.01)


@pytest.mark.parametrize(("omega", "s"), [([0.12, 0.03, 0.3, 0.08], 0.2), ([0.5], 0.2),
                                          ([1e-4, 1e-3], 0.2), ([2.0, 3.0, 1.0], 0.1)])
def test_shared_scale_draws_have_the_distribution_of_scipys_generalized_inverse_gaussian(omega, s):
    omega = np.asarray(omega)
    r, k = np.linalg.norm(omega), len(omega)
    ours = np.asarray(m.draw_shared_scale(jax.random.PRNGKey(3), np.tile(omega, (100_000, 1)), s))
    x = stats.geninvgauss.rvs((1 - k) / 2, r / s, size=100_000, random_state=4)
    assert stats.ks_2samp(ours, np.sqrt(r * s * x)).pvalue > 1e-3


def test_shared_scale_draw_of_a_broken_row_is_nan_and_the_others_are_drawn():
    omega = np.array([[0.1, 0.2], [np.nan, 0.1], [0.0, 0.0], [0.3, 0.05]])
    draws = np.asarray(m.draw_shared_scale(jax.random.PRNGKey(0), omega, 0.2))
    assert np.isnan(draws[1]) and np.isnan(draws[2])
    assert np.all(np.isfinite(draws[[0, 3]])) and np.all(draws[[0, 3]] > 0)


@pytest.mark.parametrize(("p", "a", "b"), [(-3.0, 25.0, 0.1), (-0.5, 100.0, 1e-6), (0.0, 1.0, 1.0),
                                           (2.0, 1.0, 1e-3), (-3.5, 1e4, 1e-8), (0.0, 1e-6, 1e-4),
                                           (6.0, 3.0, 40.0), (-0.5, 1e3, 1e-12)])
def test_jax_generalized_inverse_gaussian_draws_match_scipy(p, a, b):
    t = jax.jit(m.log_gig_draw)(jax.random.PRNGKey(5), jnp.full(100_000, p), a, b)
    scipy_draws = np.sqrt(b / a) * stats.geninvgauss.rvs(p, np.sqrt(a * b), size=100_000,
                                                         random_state=6)
    assert stats.ks_2samp(np.exp(np.asarray(t)), scipy_draws).pvalue > 1e-3


def test_generalized_inverse_gaussian_draw_of_bad_parameters_is_nan():
    t = m.log_gig_draw(jax.random.PRNGKey(0), -1.0, jnp.array([1.0, 1.0, jnp.nan, jnp.inf]),
                       jnp.array([1.0, 0.0, 1.0, 1.0]))
    assert np.isfinite(t[0]) and np.all(np.isnan(t[1:]))


@pytest.mark.parametrize(("a", "b"), [(1e-10, 1e-30), (1.0, 1e-30), (1e5, 1e-30), (1e-5, 1e-20)])
def test_generalized_inverse_gaussian_draws_of_very_flat_distributions(a, b):
    """p = 0 and tiny ab: log x spreads evenly over ~log(1/ab) and is symmetric about its middle
    (x and b / (a x) have the same distribution); such draws once made the sampler loop forever."""
    t = np.asarray(jax.jit(m.log_gig_draw)(jax.random.PRNGKey(1), jnp.zeros(20_000), a, b))
    assert np.all(np.isfinite(t))
    middle = 0.5 * np.log(b / a)
    assert t.mean() == pytest.approx(middle, abs=4 * t.std() / np.sqrt(t.size))
    assert t.std() > 0.2 * np.log(1 / (a * b)) / np.sqrt(12)  # spread like a uniform over it


def interweave_inputs(n_draws: int, seed: int = 0, pooling: str = "shared", shape: float = 0.5):
    """Prior draws of the binary model's scales and raw coefficients for three terms of 1, 2 and
    6 coefficients (``effect_scale`` too for the mixture, which samples the shared scale)."""
    coef_term = jnp.array([0, 1, 1, 2, 2, 2, 2, 2, 2])
    hyper = m.Hyper(*[jnp.asarray(0.0)] * 4, modifier_scale=jnp.asarray(0.3),
                    sigma_scale=jnp.asarray(1.0), binary_baseline_sd=jnp.asarray(1.0),
                    coef_term=coef_term, effect_shape=jnp.asarray(shape),
                    slab_scale=jnp.asarray(0.5), slab_share=jnp.asarray(0.3))
    k_shared, k_omega, k_raw = jax.random.split(jax.random.PRNGKey(seed), 3)
    z = {"effect_raw": jax.random.normal(k_raw, (n_draws, coef_term.shape[0]))}
    if pooling == "mixture":
        shared = 0.3 * jnp.abs(jax.random.normal(k_shared, (n_draws, 1)))
        omega = m.SpikeSlabScale(shared, 0.5, 0.3, 3).sample(k_omega)
        z["effect_scale"] = jnp.log(shared[:, 0])
    else:
        omega = m.EffectScales(0.3, 3, shape, shared=pooling == "shared").sample(
            k_omega, (n_draws,))
    return hyper, {**z, "sigma_effect": jnp.log(omega)}


def test_interweaving_keeps_the_centred_effect_coefficients_exactly():
    hyper, z = interweave_inputs(2000)
    move = jax.jit(jax.vmap(lambda key, z: m.interweave_effect_scales(key, z, hyper, 3)))
    moved = move(jax.random.split(jax.random.PRNGKey(1), 2000), z)

    def centred(z):
        omega = np.exp(np.asarray(z["sigma_effect"]))
        return omega[:, hyper.coef_term] * np.asarray(z["effect_raw"])

    np.testing.assert_allclose(centred(moved), centred(z), rtol=1e-12)
    assert np.all(np.abs(moved["sigma_effect"] - z["sigma_effect"]) > 0)


@pytest.mark.parametrize(("pooling", "shape"), [("shared", 0.5), ("shared", 0.2),
                                               ("independent", 0.5), ("mixture", 0.5)])
def test_interweaving_leaves_the_prior_unchanged(pooling, shape):
    """With no data the posterior is the prior: after five moves the draws still follow it."""
    n = 50_000
    hyper, z = interweave_inputs(n, pooling=pooling, shape=shape)
    move = jax.jit(jax.vmap(lambda key, z: m.interweave_effect_scales(key, z, hyper, 3,
                                                                      pooling=pooling)))
    for i in range(5):
        z = move(jax.random.split(jax.random.PRNGKey(10 + i), n), z)
    _, fresh = interweave_inputs(n, seed=99, pooling=pooling, shape=shape)
    if pooling == "mixture":
        assert stats.ks_2samp(np.asarray(z["effect_scale"]),
                              np.asarray(fresh["effect_scale"])).pvalue > 1e-3
    for k in range(3):
        assert stats.ks_2samp(np.asarray(z["sigma_effect"][:, k]),
                              np.asarray(fresh["sigma_effect"][:, k])).pvalue > 1e-3
    for j in (0, 1, 3, 8):
        assert stats.ks_2samp(np.asarray(z["effect_raw"][:, j]),
                              np.asarray(fresh["effect_raw"][:, j])).pvalue > 1e-3


# -- residual sd per variance group ---------------------------------------------------------------

def grouped_inputs(rows: pd.DataFrame, by: tuple[str, ...] = ("a",)):
    """Stacked per-group statistics (groups: arm x levels of ``by``), as hte.fitting builds them."""
    from hte.variance import variance_groups

    cells = aggregate(rows, ["a", "b"], "gaussian")
    design = design_for(cells)
    groups = variance_groups(cells, by)
    c = cells.cells
    x = design.rows(cells.level_codes(c), c["z"].to_numpy())
    n = c["n"].to_numpy(float)
    ybar = c["mean"].to_numpy()
    g = groups.cell_group
    k = groups.n_groups
    stats_ = m.GaussianStats(
        gram=jnp.asarray(np.stack([(x[g == j] * n[g == j, None]).T @ x[g == j] for j in range(k)])),
        xty=jnp.asarray(np.stack([x[g == j].T @ (n * ybar)[g == j] for j in range(k)])),
        yty=jnp.asarray(np.bincount(g, c["ss"] + n * ybar**2, minlength=k)),
        n=jnp.asarray(np.bincount(g, n, minlength=k)))
    # the group of every row, through its cell
    key = pd.MultiIndex.from_frame(c[["a", "b", "z"]].astype(str))
    row_key = pd.MultiIndex.from_frame(rows[["a", "b", "_z"]].astype(str))
    row_group = g[key.get_indexer(row_key)]
    x_rows = design.rows(cells.level_codes(rows), rows["_z"].to_numpy())
    return design, stats_, x_rows, groups, row_group


@pytest.mark.parametrize("seed", range(4))
def test_heteroscedastic_collapsed_likelihood_equals_dense_row_marginal(seed):
    """Per-group sd: beta integrated out from cells == log N(y; 0, diag(sigma_g(i)^2) + X D X')."""
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 150, binary=False)
    design, stats_, x_rows, groups, row_group = grouped_inputs(rows)
    assert groups.n_groups == 6                           # 2 arms x 3 levels of a
    sd = rng.uniform(0.2, 2.0, design.n_coefs)
    sigma = rng.uniform(0.4, 2.5, groups.n_groups)
    collapsed = float(m.gaussian_marginal_loglik(stats_, jnp.asarray(sd), jnp.asarray(sigma)))
    cov = np.diag(sigma[row_group] ** 2) + (x_rows * sd**2) @ x_rows.T
    dense = stats.multivariate_normal(np.zeros(len(rows)), cov).logpdf(rows["_y"])
    assert collapsed == pytest.approx(dense, abs=1e-6)


def direct_grouped_loglik(x_rows, y, row_group, sd, sigma):
    """log N(y; 0, diag(sigma_g(i)^2) + X D X') over the rows, written plainly for jax.grad."""
    cov = jnp.diag(sigma[row_group] ** 2) + (x_rows * sd**2) @ x_rows.T
    chol = jnp.linalg.cholesky(cov)
    w = jsl.solve_triangular(chol, y, lower=True)
    return (-0.5 * len(y) * jnp.log(2 * jnp.pi) - jnp.sum(jnp.log(jnp.diag(chol)))
            - 0.5 * jnp.dot(w, w))


@pytest.mark.parametrize("seed", range(3))
def test_heteroscedastic_gradient_matches_automatic_differentiation(seed):
    rng = np.random.default_rng(seed + 10)
    rows = random_rows(rng, 120, binary=False)
    design, stats_, x_rows, groups, row_group = grouped_inputs(rows)
    sd = jnp.asarray(rng.uniform(0.1, 1.5, design.n_coefs))
    sigma = jnp.asarray(rng.uniform(0.5, 2.0, groups.n_groups))
    ours = jax.grad(m.gaussian_marginal_loglik, argnums=(1, 2))(stats_, sd, sigma)
    ref = jax.grad(direct_grouped_loglik, argnums=(3, 4))(
        jnp.asarray(x_rows), jnp.asarray(rows["_y"].to_numpy()), jnp.asarray(row_group), sd, sigma)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-7, atol=1e-8)


def test_grouped_coefficient_draws_have_the_exact_conditional_mean_and_covariance():
    rng = np.random.default_rng(8)
    rows = random_rows(rng, 150, binary=False)
    design, stats_, x_rows, groups, row_group = grouped_inputs(rows)
    k = design.n_terms
    hyper = gaussian_hyper(design)
    sigma = jnp.asarray(rng.uniform(0.5, 2.0, groups.n_groups))
    sb, se = jnp.full(k, 0.6), jnp.full(k, 0.3)
    keys = jax.random.split(jax.random.PRNGKey(1), 40000)
    draw = jax.vmap(m.draw_gaussian_coefficients, in_axes=(0, None, None, None, None, None))
    beta = np.asarray(draw(keys, stats_, hyper, sigma, sb, se))
    sd = np.asarray(m.prior_sd(hyper, sb, se))
    weight = 1.0 / np.asarray(sigma)[row_group] ** 2
    precision = np.diag(sd**-2) + (x_rows * weight[:, None]).T @ x_rows
    cov = np.linalg.inv(precision)
    mean = cov @ x_rows.T @ (weight * rows["_y"].to_numpy())
    se_mean = np.sqrt(np.diag(cov) / len(beta))
    assert np.all(np.abs(beta.mean(axis=0) - mean) < 5 * se_mean)
    np.testing.assert_allclose(np.cov(beta, rowvar=False), cov, atol=0.05 * np.max(np.diag(cov)))


def test_variance_groups_deviations_sum_to_zero_within_each_arm():
    from hte.variance import variance_groups

    rows = random_rows(np.random.default_rng(0), 200, binary=False)
    cells = aggregate(rows, ["a", "b"], "gaussian")
    groups = variance_groups(cells, ("a", "b"))
    assert groups.n_groups == 12 and groups.deviation.shape == (12, 2 * (2 + 1))
    for arm in (0, 1):
        block = groups.deviation[groups.arm == arm]
        np.testing.assert_allclose(block.sum(axis=0), 0, atol=1e-12)  # zero-sum over levels
        assert np.all(groups.deviation[groups.arm != arm][:, 3 * arm:3 * arm + 3] == 0)
    assert groups.labels[0] == "control, a = x, b = p"
    plain = variance_groups(cells, ())
    assert plain.n_groups == 2 and plain.deviation.shape == (2, 0)
    np.testing.assert_array_equal(plain.cell_group, cells.cells["z"].to_numpy())
