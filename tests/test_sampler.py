"""The chunked NUTS runner with an extra Gibbs step after each transition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from hte import sampler


def toy_model():
    """x ~ N(0, 1), y | x ~ N(x, 0.5^2): x | y ~ N(0.8 y, 0.2), y ~ N(0, 1.25)."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(x, 0.5))


def exact_x_given_y(key, z, args):
    return {**z, "x": 0.8 * z["y"] + jnp.sqrt(0.2) * jax.random.normal(key)}


def test_gibbs_step_between_transitions_keeps_the_target_and_its_energy():
    run = sampler.run_nuts(toy_model, (), ("toy",), chains=4, warmup=300, draws=1000, seed=0,
                           target_accept=0.8, max_tree_depth=8, move=exact_x_given_y)
    x, y = run.samples["x"].ravel(), run.samples["y"].ravel()
    assert abs(x.mean()) < 0.1 and abs(y.mean()) < 0.12
    assert 0.85 < np.var(x) < 1.15
    assert 1.05 < np.var(y) < 1.45
    # the residual x - 0.8 y is independent of y with variance 0.2 after every Gibbs step
    assert abs(np.var(x - 0.8 * y) - 0.2) < 0.02
    assert run.diverging.sum() == 0

    comp = sampler._compiled(toy_model, ("toy",), 4, 300, 0.8, 8, exact_x_given_y)
    state = jax.tree_util.tree_map(lambda a: a[0], comp.executables["start"](
        jax.random.PRNGKey(1), ()))
    state, _ = comp.executables["chunk"](state, (), 5)
    potential = comp.kernel._potential_fn_gen()
    value, grad = jax.value_and_grad(potential)(state.z)
    np.testing.assert_allclose(state.potential_energy, value, rtol=1e-12)
    np.testing.assert_allclose(state.z_grad["x"], grad["x"], rtol=1e-12)


def wide_model():
    """x ~ N(3, 0.5^2) in two coordinates: its Laplace approximation is exact (sd 0.5)."""
    numpyro.sample("x", dist.Normal(3.0, 0.5).expand([2]))


def test_chains_start_overdispersed_around_the_mode():
    chains = 400
    comp = sampler._compiled(wide_model, ("wide",), chains, 100, 0.8, 8, None)
    starts = np.asarray(comp.start(jax.random.PRNGKey(0), ()).z["x"])
    assert starts.shape == (chains, 2)
    assert np.abs(starts.mean(axis=0) - 3.0).max() < 0.15
    # the Laplace sd is 0.5; the starting points spread START_SPREAD (1.5) times as wide
    np.testing.assert_allclose(starts.std(axis=0), 0.5 * sampler.START_SPREAD, rtol=0.12)
    assert (starts.std(axis=0) > 1.3 * 0.5).all()
