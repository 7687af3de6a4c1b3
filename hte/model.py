"""The NumPyro models: one function per outcome family.

Notation (see docs/model.md for the full statement and the reasons behind each choice):

    beta = [alpha, tau, u_1..u_K, v_1..v_K]          (hte.design)
    eta_c = x_c . beta                               linear predictor of cell c
    alpha ~ N(m_alpha, s_alpha^2),  tau ~ N(0, s_tau^2)
    u_k ~ N(0, sigma_k^2 I)                          baseline variation of term k (zero-sum levels)
                                                     (binary: sigma_k fixed, see binomial_model)
    v_k ~ N(0, omega_k^2 I)                          treatment-effect variation of term k
    sigma_k ~ HalfNormal(s_base)
    omega_k ~ HalfNormal(lambda),  lambda ~ HalfNormal(s_mod)
                       (Gaussian: omega_k = lambda xi_k, xi_k ~ HalfNormal(1); binary: lambda
                        integrated out, drawn afterwards)

Gaussian: y_i ~ N(eta_c(i), sigma_g(i)^2) on the standardized outcome, with one residual sd per
variance group g (each arm, and the levels of factors whose spread clearly differs;
:mod:`hte.variance`): sigma_arm ~ HalfNormal(s_y), log sigma_g = log sigma_arm(g) + deviations.
Because every coefficient in beta enters linearly with a Gaussian prior, beta is integrated out
exactly given the scales; NUTS samples only the scales, and beta is then drawn from its exact
Gaussian conditional (:func:`draw_gaussian_coefficients`).

Binary: k_c ~ Binomial(n_c, logit^-1(eta_c)); NUTS samples everything, with the effect
coefficients non-centred and the baseline coefficients on a fixed scale, and each NUTS
transition is followed by an exact Gibbs step for the effect scales given the centred
coefficients (:func:`interweave_effect_scales`).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

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
    effect_shape: jax.Array | float = 0.5   # a: xi_k^2 ~ Gamma(a, a) (EffectScales)
    slab_scale: jax.Array | float = 0.5     # c: scale of a term's own effect variation (mixture)
    slab_share: jax.Array | float = 0.2     # pi: prior chance a term has its own scale (mixture)


class GaussianStats(NamedTuple):
    """Cell sufficient statistics contracted with the design (standardized outcome), per group.

    One entry per *variance group* g (a set of cells sharing a residual sd, :mod:`hte.variance`):
    ``gram[g] = X_g' W_g X_g``, ``xty[g] = X_g' W_g ybar_g`` with W = diag(n_c); ``yty[g]`` the
    sum of y_i^2 over the group's rows, ``n[g]`` its people. Arrays without the group axis
    (``gram`` P x P) are one group.
    """

    gram: jax.Array
    xty: jax.Array
    yty: jax.Array
    n: jax.Array


class VarianceDesign(NamedTuple):
    """The residual sd of each variance group: log sigma_g = log sigma[arm_g] + deviation_g . e."""

    arm: jax.Array             # (groups,) int: 0 control, 1 treated
    deviation: jax.Array       # (groups, J) design of the log-sd deviations e ~ N(0, dev_sd^2)
    deviation_sd: jax.Array    # prior sd of e


class BinomialCells(NamedTuple):
    x: jax.Array               # (cells, P) design rows
    n: jax.Array               # (cells,) people


def log_bessel_k(nu: jax.Array, z: jax.Array, points: int = 256) -> jax.Array:
    """log K_nu(z), the modified Bessel function of the second kind, for nu >= 0 and z > 0.

    From K_nu(z) = int_0^inf exp(-z cosh t) cosh(nu t) dt by the trapezoidal rule, which converges
    geometrically for this integrand. The range [0, T] reaches past the integrand's peak (at
    sinh t = nu / z) until it has fallen by e^-40; T does not depend on (nu, z) smoothly and
    needs no gradient.
    """
    peak = jnp.arcsinh(nu / z)
    top = jax.lax.stop_gradient(peak + jnp.arccosh(1.0 + (40.0 + nu) / z) + 1.0)
    t = jnp.linspace(0.0, 1.0, points) * top
    log_f = -z * jnp.cosh(t) + jnp.logaddexp(nu * t, -nu * t) - jnp.log(2.0)
    weights = jnp.full(points, 1.0).at[0].set(0.5).at[-1].set(0.5)
    return jax.nn.logsumexp(log_f, b=weights) + jnp.log(top / (points - 1))


class EffectScales(dist.Distribution):
    """The K treatment-effect scales omega_k = lambda * xi_k, with xi_k^2 ~ Gamma(a, a).

    ``shared``: lambda ~ HalfNormal(s) is common to all terms and integrated out here (drawn
    afterwards from its exact conditional, :func:`draw_shared_scale`); otherwise lambda = s is
    fixed and the terms are independent. The shape ``a`` sets how unevenly effect variation may
    be spread over the terms: a = 1/2 is omega_k | lambda ~ HalfNormal(lambda); a smaller ``a``
    lets one term carry most of the variation while the others stay near zero (the
    normal-gamma prior of Griffin and Brown, applied to term variances; docs/model.md).

    Each omega_k has density 2 a^a omega^(2a-1) lambda^(-2a) exp(-a omega^2 / lambda^2) / Gamma(a)
    given lambda. Integrating lambda ~ HalfNormal(s) out, with r = |omega| and nu = 1 - 2aK,

        p(omega) = (2 a^a / Gamma(a))^K prod_k omega_k^(2a-1) (2/pi)^(1/2) s^-1
                   (2a s^2 r^2)^(nu/4) K_(nu/2)(r sqrt(2a) / s)

    (K_nu the modified Bessel function of the second kind, :func:`log_bessel_k`).
    """

    arg_constraints: ClassVar[dict] = {"scale": dist.constraints.positive,
                                       "concentration": dist.constraints.positive}
    support = dist.constraints.independent(dist.constraints.positive, 1)
    reparametrized_params: ClassVar[list] = []

    def __init__(self, scale: jax.Array, size: int, concentration: jax.Array = 0.5, *,
                 shared: bool = True, validate_args: bool | None = None):
        self.scale, self.size, self.concentration = scale, size, concentration
        self.shared = shared
        super().__init__(batch_shape=(), event_shape=(size,), validate_args=validate_args)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        key_shared, key_terms = jax.random.split(key)
        shared = (self.scale * jnp.abs(jax.random.normal(key_shared, (*sample_shape, 1)))
                  if self.shared else self.scale)
        g = jax.random.gamma(key_terms, self.concentration, (*sample_shape, self.size))
        g = g / self.concentration
        return shared * jnp.sqrt(g)

    def log_prob(self, value: jax.Array) -> jax.Array:
        k, a, s = self.size, self.concentration, self.scale
        log_omega = jnp.log(value)
        per_term = jnp.log(2.0) + a * jnp.log(a) - jax.scipy.special.gammaln(a)
        if not self.shared:
            return jnp.sum(per_term + (2 * a - 1) * log_omega - 2 * a * jnp.log(s)
                           - a * value**2 / s**2, axis=-1)
        r2 = jnp.sum(value**2, axis=-1)
        nu = 1.0 - 2.0 * a * k
        return (k * per_term + (2 * a - 1) * jnp.sum(log_omega, axis=-1)
                + 0.5 * jnp.log(2.0 / jnp.pi) - jnp.log(s)
                + nu / 4 * jnp.log(2 * a * s**2 * r2)
                + log_bessel_k(jnp.abs(nu) / 2, jnp.sqrt(2 * a * r2) / s))


class SpikeSlabScale(dist.Distribution):
    """One term's effect scale: HalfNormal(c) with probability pi, else HalfNormal(lambda).

    The mixture over terms (``pooling="mixture"``): a term either shares the common scale
    lambda that all terms without clear variation pull down together, or has its own scale on
    a fixed half-normal(c) prior, so one term whose effect clearly varies is not shrunk towards
    the others (docs/model.md). The indicator is summed out.
    """

    arg_constraints: ClassVar[dict] = {"shared": dist.constraints.positive,
                                       "slab": dist.constraints.positive,
                                       "share": dist.constraints.unit_interval}
    support = dist.constraints.positive
    reparametrized_params: ClassVar[list] = []

    def __init__(self, shared: jax.Array, slab: jax.Array, share: jax.Array, size: int,
                 validate_args: bool | None = None):
        self.shared, self.slab, self.share = shared, slab, share
        batch_shape = jnp.broadcast_shapes(jnp.shape(shared), jnp.shape(slab), jnp.shape(share),
                                           (size,))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        key_pick, key_value = jax.random.split(key)
        shape = (*sample_shape, *self.batch_shape)
        own = jax.random.uniform(key_pick, shape) < self.share
        return jnp.where(own, self.slab, self.shared) * jnp.abs(jax.random.normal(key_value, shape))

    def log_prob(self, value: jax.Array) -> jax.Array:
        return jnp.logaddexp(jnp.log(self.share) + dist.HalfNormal(self.slab).log_prob(value),
                             jnp.log1p(-self.share)
                             + dist.HalfNormal(self.shared).log_prob(value))


def sample_effect_scales(hyper: Hyper, n_terms: int, *, pooling: str,
                         integrated: bool) -> jax.Array:
    """Treatment-effect scales omega_k of the K grouping terms (docs/model.md).

    ``pooling``:

    - "shared": omega_k = lambda * xi_k, xi_k^2 ~ Gamma(a, a), lambda ~ HalfNormal(s_mod): a term
      with two or three levels cannot estimate its own variance, so the terms borrow strength.
      ``integrated`` samples omega with lambda integrated out (:class:`EffectScales`; drawn
      afterwards, :func:`draw_shared_scale`), otherwise xi_k^2 and lambda separately.
    - "independent": omega_k ~ HalfNormal(s_mod) (a = 1/2), each term on its own.
    - "mixture": lambda ~ HalfNormal(s_mod), omega_k ~ pi HalfNormal(c) + (1 - pi)
      HalfNormal(lambda) (:class:`SpikeSlabScale`), lambda sampled.
    """
    if n_terms == 0:  # one average effect, no subgroups
        return jnp.zeros(0)
    if pooling == "mixture":
        effect_scale = numpyro.sample("effect_scale", dist.HalfNormal(hyper.modifier_scale))
        return numpyro.sample("sigma_effect", SpikeSlabScale(effect_scale, hyper.slab_scale,
                                                             hyper.slab_share, n_terms))
    shared = pooling == "shared"
    if integrated or not shared:
        return numpyro.sample("sigma_effect", EffectScales(
            hyper.modifier_scale, n_terms, hyper.effect_shape, shared=shared))
    with numpyro.plate("terms", n_terms):
        xi2 = numpyro.sample("xi2_effect", dist.Gamma(hyper.effect_shape, hyper.effect_shape))
    effect_scale = numpyro.sample("effect_scale", dist.HalfNormal(hyper.modifier_scale))
    return numpyro.deterministic("sigma_effect", effect_scale * jnp.sqrt(xi2))


def draw_shared_scale(key: jax.Array, sigma_effect: jax.Array, modifier_scale: float,
                      effect_shape: float = 0.5) -> jax.Array:
    """Exact draws of lambda from p(lambda | omega), one per row of ``sigma_effect``.

    p(lambda | omega) ~ exp(-lambda^2 / (2 s^2)) lambda^(-2aK) exp(-a r^2 / lambda^2), so
    x = lambda^2 is generalized inverse Gaussian with p = 1/2 - aK, a' = 1 / s^2, b = 2 a r^2
    (:func:`log_gig_draw`). A row with a zero or non-finite scale gives nan.
    """
    sigma_effect = jnp.asarray(sigma_effect)
    k = sigma_effect.shape[-1]
    t = log_gig_draw(key, 0.5 - effect_shape * k, 1.0 / modifier_scale**2,
                     2.0 * effect_shape * jnp.sum(sigma_effect**2, axis=-1))
    return jnp.exp(t / 2)


#: Rounds of proposals before :func:`log_gig_draw` gives up on an element. Devroye's envelope
#: keeps over 80% of proposals (area ratio computed over |p| = 0..100, sqrt(ab) = 1e-8..1e3),
#: so giving up has odds below 1e-40 unless the parameters are degenerate.
GIG_ROUNDS = 64


def log_gig_draw(key: jax.Array, p: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """log x for x ~ GIG(p, a, b), density ~ x^(p-1) exp(-(a x + b / x) / 2); a, b > 0.

    Devroye's (2014) rejection sampler, "Random variate generation for the generalized inverse
    Gaussian distribution", Statistics and Computing 24: 239-246. With l = |p| and w = sqrt(ab),
    y = x sqrt(a / b) (or its reciprocal when p < 0) is GIG(l, w, w); u = log y - asinh(l / w)
    has the concave log-density psi(u) = -c (cosh u - 1) - l (e^u - u - 1), c = sqrt(w^2 + l^2)
    - l, whose maximum psi(0) = 0 is enveloped by a flat top on [-s', t'] and exponential tails
    tangent to psi at -s and t, points chosen so the envelope's area stays bounded for every
    (l, w). Elementwise over the broadcast shape of (p, a, b), in one compiled loop that runs until
    every element is kept. An element with parameters that are not finite and positive, or refused
    :data:`GIG_ROUNDS` times, is nan; callers then keep their current value, which leaves their
    target unchanged because the odds of that depend only on (p, a, b). (SciPy's ``geninvgauss``
    draws the same distribution but took over a second for 4000 draws and cannot run inside the
    compiled sampler.)
    """
    p, a, b = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.result_type(float)) for v in (p, a, b)))
    valid = jnp.isfinite(p) & jnp.isfinite(a) & jnp.isfinite(b) & (a > 0) & (b > 0)
    log_a, log_b = jnp.log(jnp.where(valid, a, 1.0)), jnp.log(jnp.where(valid, b, 1.0))
    lam = jnp.abs(p)
    log_w = 0.5 * (log_a + log_b)
    w = jnp.exp(log_w)
    c = w * w / (jnp.sqrt(w * w + lam * lam) + lam)          # sqrt(w^2 + l^2) - l, no cancellation

    def psi(u):
        return -c * (jnp.cosh(u) - 1.0) - lam * (jnp.expm1(u) - u)

    def dpsi(u):
        return -c * jnp.sinh(u) - lam * jnp.expm1(u)

    def middle(x):
        return (x >= 0.5) & (x <= 2.0)

    at_plus, at_minus = -psi(1.0), -psi(-1.0)
    t = jnp.where(middle(at_plus), 1.0, jnp.where(at_plus > 2.0, jnp.sqrt(2.0 / (c + lam)),
                                                  jnp.log(4.0 / (c + 2.0 * lam))))
    s_far = jnp.minimum(1.0 / lam, jnp.log(c + 1.0 + jnp.sqrt(1.0 + 2.0 * c)) - jnp.log(c))
    s = jnp.where(middle(at_minus), 1.0,
                  jnp.where(at_minus > 2.0, jnp.sqrt(4.0 / (c * jnp.cosh(1.0) + lam)), s_far))
    eta, zeta, theta, xi = -psi(t), -dpsi(t), -psi(-s), dpsi(-s)
    left, right = 1.0 / xi, 1.0 / zeta                       # tail lengths (1 / slopes)
    top_right, top_left = t - right * eta, s - left * theta  # flat top is [-top_left, top_right]
    flat = top_right + top_left
    total = left + flat + right
    valid &= jnp.isfinite(total) & (xi > 0) & (zeta > 0)

    def propose(carry):
        key, u_kept, done, rounds = carry
        key, k_piece, k_where, k_keep = jax.random.split(key, 4)
        pick = jax.random.uniform(k_piece, p.shape) * total
        v = 1.0 - jax.random.uniform(k_where, p.shape)      # in (0, 1]
        u = jnp.where(pick < flat, -top_left + flat * v,
                      jnp.where(pick < flat + right, top_right - right * jnp.log(v),
                                -top_left + left * jnp.log(v)))
        log_envelope = jnp.where(u > top_right, -eta - zeta * (u - t),
                                 jnp.where(u < -top_left, -theta + xi * (u + s), 0.0))
        keep = ~done & (jnp.log(jax.random.uniform(k_keep, p.shape)) + log_envelope <= psi(u))
        return key, jnp.where(keep, u, u_kept), done | keep, rounds + 1

    def more(carry):
        return ~jnp.all(carry[2]) & (carry[3] < GIG_ROUNDS)

    _, u, _, _ = jax.lax.while_loop(more, propose, (key, jnp.full(p.shape, jnp.nan), ~valid, 0))
    ratio = lam * jnp.exp(-log_w)
    shift = jnp.where(ratio < 1e150, jnp.arcsinh(ratio), jnp.log(2.0 * lam) - log_w)
    return jnp.where(p < 0, -1.0, 1.0) * (u + shift) + 0.5 * (log_b - log_a)


def interweave_effect_scales(key: jax.Array, z: dict, hyper: Hyper, n_terms: int, *,
                             pooling: str = "shared") -> dict:
    """One exact Gibbs update of the effect scales given the centred effect coefficients.

    NUTS moves the binary model's non-centred coordinates (omega, raw), in which omega is
    nearly independent of raw when the data say little about a term, and tied to it when they
    say much (the centred coefficients v = omega * raw are then pinned down, and omega can only
    move with raw). This step moves omega with v held fixed instead, so the two kinds of move
    interweave (Yu & Meng's ancillarity-sufficiency interweaving). With a = effect_shape:

        lambda^2 | omega       ~ GIG(1/2 - aK, 1 / s_mod^2, 2a sum_k omega_k^2)   (shared only;
                                                                  otherwise lambda = s_mod)
        omega_k^2 | lambda, v  ~ GIG(a - d_k / 2, 2a / lambda^2, sum_{j in k} v_j^2)

    (d_k coefficients in term k), then raw = v / omega. For the "mixture" pooling, first each
    term's indicator g_k (own scale c or shared lambda) is drawn given omega_k and lambda, then
    lambda^2 | omega, g ~ GIG(1/2 - K_0/2, 1/s^2, sum over shared terms of omega_k^2) (K_0
    terms share it), then omega_k^2 | g_k, v ~ GIG((1 - d_k)/2, 1/c_k^2, sum v_j^2) with c_k = c
    or lambda; g is discarded. Each draw is from an exact conditional
    of the joint (lambda, omega, v), so the posterior is left unchanged. ``z`` holds the
    unconstrained values (log omega for ``sigma_effect``).
    """
    if n_terms == 0:
        return z
    a = hyper.effect_shape
    omega = jnp.exp(z["sigma_effect"])
    v = omega[hyper.coef_term] * z["effect_raw"]
    sum_sq = jax.ops.segment_sum(v * v, hyper.coef_term, n_terms)
    dims = jax.ops.segment_sum(jnp.ones_like(v), hyper.coef_term, n_terms)
    key_shared, key_terms = jax.random.split(key)
    if pooling == "mixture":
        return _mixture_gibbs(key, z, hyper, omega, v, sum_sq, dims)
    if pooling == "shared":
        log_shared2 = log_gig_draw(key_shared, 0.5 - a * n_terms, 1.0 / hyper.modifier_scale**2,
                                   2.0 * a * jnp.sum(omega * omega))
    else:
        log_shared2 = 2.0 * jnp.log(hyper.modifier_scale)
    log_omega = 0.5 * log_gig_draw(key_terms, a - dims / 2.0, 2.0 * a * jnp.exp(-log_shared2),
                                   sum_sq)
    log_omega = jnp.where(jnp.isfinite(log_omega), log_omega, z["sigma_effect"])  # not drawn
    return {**z, "sigma_effect": log_omega,
            "effect_raw": v / jnp.exp(log_omega)[hyper.coef_term]}


def _mixture_gibbs(key: jax.Array, z: dict, hyper: Hyper, omega: jax.Array, v: jax.Array,
                   sum_sq: jax.Array, dims: jax.Array) -> dict:
    """The Gibbs step of :func:`interweave_effect_scales` for the spike-and-slab scales."""
    key_pick, key_shared, key_terms = jax.random.split(key, 3)
    shared = jnp.exp(z["effect_scale"])
    log_own = jnp.log(hyper.slab_share) + dist.HalfNormal(hyper.slab_scale).log_prob(omega)
    log_common = jnp.log1p(-hyper.slab_share) + dist.HalfNormal(shared).log_prob(omega)
    own = jax.random.uniform(key_pick, omega.shape) < jax.nn.sigmoid(log_own - log_common)
    common_sq = jnp.sum(jnp.where(own, 0.0, omega * omega))
    k_common = jnp.sum(~own)
    log_shared2 = log_gig_draw(key_shared, 0.5 - k_common / 2.0, 1.0 / hyper.modifier_scale**2,
                               common_sq)
    log_shared2 = jnp.where(jnp.isfinite(log_shared2), log_shared2, 2.0 * z["effect_scale"])
    rate = jnp.where(own, hyper.slab_scale**-2, jnp.exp(-log_shared2))
    log_omega = 0.5 * log_gig_draw(key_terms, (1.0 - dims) / 2.0, rate, sum_sq)
    log_omega = jnp.where(jnp.isfinite(log_omega), log_omega, z["sigma_effect"])
    return {**z, "effect_scale": 0.5 * log_shared2, "sigma_effect": log_omega,
            "effect_raw": v / jnp.exp(log_omega)[hyper.coef_term]}


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


def _grouped(stats: GaussianStats, sigma: jax.Array) -> tuple[GaussianStats, jax.Array]:
    """Statistics and residual sds with a leading group axis (one group if they have none)."""
    if stats.gram.ndim == 2:
        stats = GaussianStats(*(jnp.asarray(a)[None] for a in stats))
    return stats, jnp.reshape(sigma, (-1,))


def _marginal_parts(stats: GaussianStats, sd: jax.Array, sigma: jax.Array):
    """Value of log p(y | scales) and its gradient with respect to ``sd`` and ``sigma``.

    Group g of cells has residual variance phi_g = sigma_g^2. With v = sd^2,
    G = sum_g X_g'W_gX_g / phi_g, b = sum_g X_g'W_g y_g / phi_g, Lambda = V^-1 + G (posterior
    precision of beta) and M = I + S G S = L L' (S = diag(sd), so Lambda = S^-1 M S^-1):

        log p(y) = sum_g [-n_g/2 log(2 pi phi_g) - y_g'y_g / (2 phi_g)] - log|L| + |L^-1 r|^2 / 2,
        r = S b.

    The gradient is the posterior expectation of the complete-data score (Fisher's identity),
    with mu = E[beta | y] and Sigma = Cov[beta | y] = S M^-1 S:

        d/dv_j    = (Sigma_jj + mu_j^2) / (2 v_j^2) - 1 / (2 v_j)
        d/dphi_g  = E|y_g - X_g beta|^2 / (2 phi_g^2) - n_g / (2 phi_g),
        E|y_g - X_g beta|^2 = y_g'y_g - 2 mu'X_g'W_g y_g + tr(X_g'W_gX_g (Sigma + mu mu')).

    One Cholesky factor and one triangular inverse give all of it, about half the cost of
    differentiating through the Cholesky factorization; each group adds a P x P product.
    """
    shape = jnp.shape(sigma)
    stats, sigma = _grouped(stats, sigma)
    phi = sigma**2
    p = sd.shape[0]
    gram = jnp.einsum("g,gij->ij", 1.0 / phi, stats.gram)
    m = jnp.eye(p) + sd[:, None] * gram * sd[None, :]
    chol = jax.lax.linalg.cholesky(m, symmetrize_input=False)
    chol_inv = jax.lax.linalg.triangular_solve(chol, jnp.eye(p), left_side=True, lower=True)
    r = sd * (stats.xty.T @ (1.0 / phi))
    w = chol_inv @ r
    value = (jnp.sum(-0.5 * stats.n * jnp.log(2 * jnp.pi * phi) - 0.5 * stats.yty / phi)
             - jnp.sum(jnp.log(jnp.diag(chol))) + 0.5 * jnp.dot(w, w))
    m_inv_diag = jnp.sum(chol_inv**2, axis=0)
    mu = sd * (chol_inv.T @ w)
    v = sd**2
    d_v = (v * m_inv_diag + mu**2) / (2 * v**2) - 0.5 / v
    if stats.gram.shape[0] == 1:   # tr(X'WX Sigma) = phi (P - tr M^-1): no P x P product
        spread = phi * (p - jnp.sum(m_inv_diag))
        fitted = stats.gram @ mu @ mu
    else:
        a = chol_inv * sd[None, :]                       # L^-1 S: Sigma = A'A
        second = a.T @ a + mu[:, None] * mu[None, :]     # E[beta beta']
        spread = jnp.einsum("gij,ij->g", stats.gram, second)
        fitted = 0.0
    resid = stats.yty - 2 * (stats.xty @ mu) + fitted + spread
    d_phi = resid / (2 * phi**2) - 0.5 * stats.n / phi
    return value, d_v * 2 * sd, jnp.reshape(d_phi * 2 * sigma, shape)


@jax.custom_vjp
def gaussian_marginal_loglik(stats: GaussianStats, sd: jax.Array, sigma: jax.Array) -> jax.Array:
    """log p(y | scales) with beta ~ N(0, diag(sd^2)) integrated out, from cell statistics.

    ``sigma`` holds one residual sd per variance group of ``stats`` (a scalar for one group).
    """
    return _marginal_parts(stats, sd, sigma)[0]


def _marginal_fwd(stats, sd, sigma):
    value, d_sd, d_sigma = _marginal_parts(stats, sd, sigma)
    return value, (stats, d_sd, d_sigma)


def _marginal_bwd(res, g):
    stats, d_sd, d_sigma = res
    zeros = jax.tree_util.tree_map(jnp.zeros_like, stats)
    return zeros, g * d_sd, g * d_sigma


gaussian_marginal_loglik.defvjp(_marginal_fwd, _marginal_bwd)


def sample_residual_sds(variance: VarianceDesign, hyper: Hyper) -> jax.Array:
    """Residual sd of every variance group: one per arm, times level deviations where chosen.

    sigma_arm ~ HalfNormal(s_y) for each arm; log sigma_g = log sigma_arm(g) + deviation_g . e
    with e ~ N(0, dev_sd^2) (zero-sum over each variance factor's levels within an arm).
    """
    sigma = numpyro.sample("sigma", dist.HalfNormal(hyper.sigma_scale).expand([2]).to_event(1))
    log_sd = jnp.log(sigma)[variance.arm]
    if variance.deviation.shape[1]:
        e = numpyro.sample("sigma_deviation", dist.Normal(0.0, variance.deviation_sd)
                           .expand([variance.deviation.shape[1]]).to_event(1))
        log_sd = log_sd + variance.deviation @ e
    return numpyro.deterministic("sigma_group", jnp.exp(log_sd))


def gaussian_model(stats: GaussianStats, variance: VarianceDesign, hyper: Hyper,
                   n_terms: int, pooling: str = "shared") -> None:
    """Gaussian outcome with the coefficients integrated out (a collapsed linear-Gaussian model)."""
    sigma = sample_residual_sds(variance, hyper)
    sigma_baseline = sample_baseline_scales(hyper, n_terms)
    sigma_effect = sample_effect_scales(hyper, n_terms, pooling=pooling, integrated=False)
    sd = prior_sd(hyper, sigma_baseline, sigma_effect)
    numpyro.factor("y", gaussian_marginal_loglik(stats, sd, sigma))


def draw_gaussian_coefficients(key: jax.Array, stats: GaussianStats, hyper: Hyper,
                               sigma: jax.Array, sigma_baseline: jax.Array,
                               sigma_effect: jax.Array) -> jax.Array:
    """One exact draw of beta from p(beta | scales, y) = N(D^1/2 M^-1 r, D^1/2 M^-1 D^1/2).

    ``sigma``: the residual sd of each variance group (a scalar for one group).
    """
    stats, sigma = _grouped(stats, sigma)
    precision = 1.0 / sigma**2
    sd = prior_sd(hyper, sigma_baseline, sigma_effect)
    gram = jnp.einsum("g,gij->ij", precision, stats.gram)
    m = jnp.eye(sd.shape[0]) + sd[:, None] * gram * sd[None, :]
    chol = jnp.linalg.cholesky(m)
    w = jsl.solve_triangular(chol, sd * (stats.xty.T @ precision), lower=True)
    eps = jax.random.normal(key, sd.shape)
    return sd * jsl.solve_triangular(chol.T, w + eps, lower=False)


def binomial_loglik(eta: jax.Array, n: jax.Array, successes: jax.Array) -> jax.Array:
    """Sum over cells of k * eta - n * log(1 + e^eta): the Bernoulli log-likelihood of the rows."""
    return jnp.sum(successes * eta - n * jax.nn.softplus(eta))


def binomial_model(cells: BinomialCells, hyper: Hyper, n_terms: int,
                   successes: jax.Array | None = None, pooling: str = "shared") -> None:
    """Binary outcome, logit link, likelihood on cells.

    Baseline level coefficients have a fixed weakly informative scale, ``u ~ N(0, s_base_bin)``,
    and are sampled centred: they are nuisance parameters that experiments pin down well, and
    learning their scale added a funnel that doubled sampling time (bench/README.md). Effect
    coefficients keep the hierarchical, pooled scales and are non-centred, ``v = omega * raw``
    with ``raw ~ N(0, 1)``; centred and partially centred versions diverged. The sampler
    interleaves :func:`interweave_effect_scales`, which moves omega in the centred coordinates.
    """
    alpha = numpyro.sample("alpha", dist.Normal(hyper.alpha_loc, hyper.alpha_sd))
    tau = numpyro.sample("tau", dist.Normal(0.0, hyper.tau_sd))
    sigma_effect = sample_effect_scales(hyper, n_terms, pooling=pooling, integrated=True)
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
