"""Run NumPyro's NUTS kernel in compiled chunks, with progress reported between chunks.

NumPyro's ``MCMC`` runs warm-up and sampling as single compiled loops, which leaves nothing to
report progress from. Here the NUTS kernel's own ``sample`` step is scanned over a fixed chunk
of iterations. Everything compiled (starting-point search, chain initialization, chunk) is
cached per model shape and sampler setting, so a second fit of the same shape (new data, new
priors) reuses it; JAX's persistent compilation cache also carries it across processes.

Before sampling, the posterior mode and the Hessian there are found in the unconstrained space
(:func:`_newton`). Chains start from overdispersed draws of that Laplace approximation (its
covariance inflated :data:`START_SPREAD` squared times), with the covariance itself as the
initial dense mass matrix, which NUTS then adapts as usual.

A model may add a Gibbs step that runs after every NUTS transition (``move``; the binary model
redraws its effect scales given the centred coefficients, :mod:`hte.model`).

Chains run one after another, each as an unbatched loop. On CPU this measured faster than
batching chains with ``vmap`` (batched while-loops and LAPACK calls) or spreading them over
host devices with ``pmap`` (no speed-up on two cores); see bench/README.md.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer import NUTS, init_to_median
from numpyro.infer.hmc_util import _initialize_mass_matrix, dual_averaging

import hte._jax  # noqa: F401  (64-bit floats, compilation cache)

Progress = Callable[[float, str], None]
#: An extra exact Gibbs step after each NUTS iteration: (key, unconstrained z, model args) -> z.
Move = Callable[[jax.Array, dict, tuple], dict]

#: Chains start from the Laplace approximation widened this many times (covariance x 2.25):
#: overdispersed relative to the posterior, so R-hat can see chains that have not forgotten
#: where they started (e.g. a second mode), as its derivation assumes (Gelman and Rubin 1992).
#: 2.0 (covariance x 4) cost the binary benchmark tail ESS (306-428 in 3 seeds vs 532-1635);
#: 1.5 did not (bench/README.md).
START_SPREAD = 1.5
#: Iterations per compiled chunk: progress is reported this often.
CHUNK = 50
#: XLA options for the steps that run once or a few times per fit (start, metric update,
#: post-processing): without LLVM's optimizations they compile in less than half the time
#: (start: 2.4 s instead of 5.6 s) and run in milliseconds either way. The chunk, which runs
#: thousands of iterations, is compiled fully optimized.
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


@dataclass
class SamplerRun:
    """Unconstrained draws and per-iteration sampler statistics, chains first."""

    samples: dict[str, np.ndarray]     # constrained draws (chains, draws, ...)
    diverging: np.ndarray              # (chains, draws) bool
    num_steps: np.ndarray              # (chains, draws) leapfrog steps
    tree_depth: np.ndarray             # (chains, draws)
    accept_prob: np.ndarray            # (chains, draws)
    step_size: np.ndarray              # (chains,) adapted step size
    warmup_divergences: int
    seconds_sampling: float            # warm-up + draws, wall clock, excluding compilation
    seconds_compile: float             # compilation (0 when the compiled sampler was reused)


@dataclass
class _Compiled:
    """A NUTS kernel and its jitted functions, compiled on first use (``executables``)."""

    kernel: NUTS
    start: Callable[..., Any]
    move: Move | None = None
    chunk: Callable[..., Any] | None = None
    set_metric: Callable[..., Any] = field(default_factory=lambda: jax.jit(_set_metric))
    postprocess: Callable[..., Any] | None = None
    executables: dict = field(default_factory=dict)
    state_shape: Any = None      # one chain's state, abstract (set when compiled)
    timings: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[tuple, _Compiled] = {}
_CACHE_LOCK = threading.Lock()
#: Held while JAX traces a NumPyro model. NumPyro's stack of effect handlers is one global list,
#: so two threads tracing at once (two app sessions fitting, or a background warm-up beside a
#: fit) corrupt each other's traces ("all sites must have unique names"). Compiling the traced
#: program and running it need no lock.
TRACE_LOCK = threading.RLock()
#: Held while a compiled sampler step runs. XLA:CPU deadlocked when several threads ran
#: programs with LAPACK calls (Cholesky, eigh) at once (seen with six background compilations
#: and a fit in one app server), and on a few cores concurrent runs gain nothing: fits in
#: different threads take turns, one compiled step (at most 50 iterations) at a time.
EXECUTION_LOCK = threading.RLock()


def _compiled(model: Callable[..., Any], key: tuple, chains: int, warmup: int,
              target_accept: float, max_tree_depth: int, move: Move | None) -> _Compiled:
    cache_key = (model, move, *key, chains, warmup, target_accept, max_tree_depth)
    with _CACHE_LOCK:
        found = _CACHE.get(cache_key)
        if found is None:
            kernel = NUTS(model, dense_mass=True, target_accept_prob=target_accept,
                          adapt_mass_matrix=False,
                          max_tree_depth=max_tree_depth,
                          init_strategy=init_to_median(num_samples=15))

            found = _Compiled(kernel=kernel, move=move,
                              start=jax.jit(partial(_start_chains, kernel, warmup, chains)))
            found.chunk = _chunk_fn(found)
            _CACHE[cache_key] = found
        return found


def _local_fit(energy: Callable[[jax.Array], jax.Array], x: jax.Array, h: float = 1e-5):
    """Value, gradient and Hessian of ``energy`` at ``x`` from 2P + 1 gradient evaluations.

    The Hessian is by central differences of the gradient (accurate to ~h^2, far more than a
    starting metric needs); everything comes from one sequential map over points, so the
    potential is traced once. (Batching the evaluations with ``vmap`` deadlocked XLA:CPU's
    batched LAPACK calls inside a loop, jax 0.10.)
    """
    p = x.shape[0]
    points = jnp.concatenate([x[None] + h * jnp.eye(p), x[None] - h * jnp.eye(p), x[None]])
    values, grads = jax.lax.map(jax.value_and_grad(energy), points)
    hess = (grads[:p] - grads[p:2 * p]) / (2 * h)
    return values[-1], grads[-1], 0.5 * (hess + hess.T)


def _newton(energy: Callable[[jax.Array], jax.Array], x0: jax.Array,
            iterations: int = 40) -> tuple[jax.Array, jax.Array]:
    """Minimize ``energy`` by damped saddle-free Newton steps; return the point and Hessian.

    Each trial step is ``-(|H| + lambda I)^-1 g`` (eigenvalues of the Hessian in absolute value,
    so saddles and flat directions are handled), capped at length 3 per coordinate. A trial that
    lowers the energy is accepted and the damping ``lambda`` shrinks; otherwise it grows. More
    robust here than BFGS, whose line search stalls on the skewed scale posteriors.
    """
    def propose(x, g, hess, damping):
        eigval, eigvec = jnp.linalg.eigh(hess)
        d = -eigvec @ ((eigvec.T @ g) / (jnp.abs(eigval) + damping + 1e-8))
        d = d * jnp.minimum(1.0, 3.0 / (jnp.max(jnp.abs(d)) + 1e-12))
        return jnp.where(jnp.all(jnp.isfinite(d)), x + d, x)

    f0, g0, h0 = _local_fit(energy, x0)

    def step(_, state):
        x, f, g, hess, damping, trial = state
        f_t, g_t, h_t = _local_fit(energy, trial)
        better = jnp.isfinite(f_t) & (f_t < f) & jnp.all(jnp.isfinite(h_t))
        x, f, g, hess = (jnp.where(better, new, old) for new, old in
                         ((trial, x), (f_t, f), (g_t, g), (h_t, hess)))
        damping = jnp.where(better, damping / 3.0, damping * 4.0 + 1e-3)
        return x, f, g, hess, damping, propose(x, g, hess, damping)

    state = (x0, f0, g0, h0, jnp.asarray(0.0), propose(x0, g0, h0, 0.0))
    x, _, _, hess, _, _ = jax.lax.fori_loop(0, iterations, step, state)
    return x, hess


def _start_chains(kernel: NUTS, warmup: int, chains: int, rng_key: jax.Array, args: tuple):
    """Initial NUTS states of all chains, started from the Laplace approximation.

    The posterior mode and the Hessian there are found in the unconstrained space
    (:func:`_newton`); each chain starts from a draw of that Gaussian approximation with its
    covariance inflated :data:`START_SPREAD` squared times, so chains start overdispersed
    relative to the posterior, with the (uninflated) covariance as the first metric.
    Starting from the mode with that metric removes the expensive first warm-up windows, where
    an identity metric forces tiny steps along the best-determined directions (e.g. the residual
    sd) and trees of maximum depth along the others.

    ``kernel.init`` traces the model once; its potential function is then reused, so one chain's
    state serves as the template for all (a second trace per chain only costs compile time).
    The model must have a proper mode in the unconstrained space: with centred hierarchical
    coefficients the joint mode sits at zero scale, the neck of the funnel; the binary model is
    non-centred for this reason too.
    """
    key_init, key_jitter, key_chains = jax.random.split(rng_key, 3)
    template = kernel.init(key_init, warmup, None, model_args=args, model_kwargs={})
    potential = kernel._potential_fn_gen(*args)  # set by init; NumPyro has no public accessor
    start, unravel = ravel_pytree(template.z)

    def energy(x):
        return potential(unravel(x))

    mode, hess = _newton(energy, start)
    eigval, eigvec = jnp.linalg.eigh(hess)
    good = jnp.all(jnp.isfinite(eigval)) & jnp.all(jnp.isfinite(mode))
    eigval = jnp.clip(jnp.abs(jnp.where(good, eigval, 1.0)), 1e-8)
    cov = jnp.where(good, (eigvec / eigval) @ eigvec.T, jnp.eye(start.shape[0]))
    mode = jnp.where(good, mode, start)
    chol = jnp.linalg.cholesky(cov)
    eps = START_SPREAD * jax.random.normal(key_jitter, (chains, start.shape[0]))

    def chain_state(e, key):
        z = unravel(mode + chol @ e)
        value, grad = jax.value_and_grad(potential)(z)
        state = template._replace(z=z, z_grad=grad, potential_energy=value, energy=value,
                                  rng_key=key)
        return _set_metric(state, cov)

    return jax.lax.map(lambda a: chain_state(*a), (eps, jax.random.split(key_chains, chains)))


def _chunk_fn(comp: _Compiled) -> Callable[..., Any]:
    """Compiled: run ``n <= CHUNK`` NUTS iterations of one chain, recording into a buffer.

    With a ``move``, each NUTS iteration is followed by that Gibbs step; the state's potential
    energy and gradient are then recomputed at the moved point for the next trajectory.
    """
    kernel, move = comp.kernel, comp.move

    def moved(s, args):
        rng_key, key_move = jax.random.split(s.rng_key)
        z = move(key_move, s.z, args)
        value, grad = jax.value_and_grad(kernel._potential_fn_gen(*args))(z)
        return s._replace(z=z, z_grad=grad, potential_energy=value, energy=value,
                          rng_key=rng_key)

    def record(s):
        return s.z, s.diverging, s.num_steps, s.accept_prob

    def run_chain(state, args, n):
        buf = jax.tree_util.tree_map(
            lambda v: jnp.zeros((CHUNK, *jnp.shape(v)), jnp.result_type(v)), record(state))

        def body(i, carry):
            s, b = carry
            s = kernel.sample(s, args, {})
            if move is not None:
                s = moved(s, args)
            b = jax.tree_util.tree_map(lambda bb, v: bb.at[i].set(v), b, record(s))
            return s, b

        return jax.lax.fori_loop(0, n, body, (state, buf))

    return jax.jit(run_chain)


def _set_metric(state, inverse_mass: jax.Array):
    """Give a chain a new dense inverse mass matrix and restart its step-size adaptation."""
    z = state.z
    dense = [tuple(sorted(z))]
    inv, sqrt, sqrt_inv = _initialize_mass_matrix(z, {dense[0]: inverse_mass}, dense)
    step = state.adapt_state.step_size
    adapt = state.adapt_state._replace(
        inverse_mass_matrix=inv, mass_matrix_sqrt=sqrt, mass_matrix_sqrt_inv=sqrt_inv,
        ss_state=_DA_INIT(jnp.log(10.0) + jnp.log(step)))
    return state._replace(adapt_state=adapt)


_DA_INIT = dual_averaging()[0]


#: Warm-up stages as (share of warm-up, re-estimate the metric afterwards).
WARMUP_STAGES = ((0.05, False), (0.10, True), (0.25, True), (0.50, True), (0.10, False))


def warmup_stages(warmup: int) -> list[tuple[int, bool]]:
    """Warm-up split into (length, update metric afterwards) stages (:data:`WARMUP_STAGES`).

    A short step-size-only start from the Laplace metric, then three doubling windows whose
    draws, pooled over all chains, each set a new dense metric, then step size only. Pooling
    chains gives the covariance estimate 4x the draws of per-chain windows; NumPyro's first
    per-chain window (25 draws for ~40 parameters in the binary model) gave near-singular
    metrics and trees of maximum depth for the next hundreds of iterations. The short first
    window replaces a poor starting metric early (the binary model's Laplace approximation is
    rough: its posterior is far from Gaussian in the scales).
    """
    lengths = [max(1, round(share * warmup)) for share, _ in WARMUP_STAGES[:-1]]
    last = warmup - sum(lengths)
    if last < 1 or warmup < 60:
        return [(warmup, False)]
    return [(n, update) for n, (_, update) in zip([*lengths, last], WARMUP_STAGES, strict=True)]


def pooled_metric(draws: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Regularized covariance of unconstrained draws pooled over chains (Stan's shrinkage)."""
    flat = np.concatenate([
        np.concatenate([np.reshape(d[k], (np.shape(d[k])[0], -1)) for k in sorted(d)], axis=1)
        for d in draws])
    n = flat.shape[0]
    cov = np.cov(flat, rowvar=False).reshape(flat.shape[1], flat.shape[1])
    return (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * np.eye(flat.shape[1])


def _postprocess(comp: _Compiled, model_args: tuple) -> Callable[[dict], dict]:
    """Unconstrained draws (chains, draws, ...) to the model's sites, jitted (call under lock)."""
    if comp.postprocess is None:
        post = comp.kernel.postprocess_fn(model_args, {})
        comp.postprocess = jax.jit(jax.vmap(jax.vmap(post)))
    return comp.postprocess


def precompile(model: Callable[..., Any], model_args: tuple, shape_key: tuple, *, chains: int,
               warmup: int, target_accept: float, max_tree_depth: int,
               draws: int | None = None, move: Move | None = None,
               ) -> tuple[float, dict[str, np.ndarray]]:
    """Compile everything :func:`run_nuts` needs for this model shape, without sampling.

    With ``draws``, also the step that turns ``draws`` draws per chain into the model's sites.
    Returns the seconds spent compiling (0 when already compiled) and, with ``draws``, a
    template of what :func:`run_nuts` returns as ``samples`` (arrays of the right shapes, values
    meaningless), for callers that compile their own post-processing too. Apps call this in the
    background when a likely model is known, so the user's first fit does not wait for XLA.
    """
    comp = _compiled(model, shape_key, chains, warmup, target_accept, max_tree_depth, move)
    timer = _Timer()
    with comp.lock:
        state = _compile_all(comp, model_args, chains, draws, timer)
    if not draws:
        return timer.compile, {}
    shapes = _site_shapes(comp, model_args, state, chains, draws)
    return timer.compile, {k: np.zeros((chains, draws, *v.shape), v.dtype)
                           for k, v in shapes.items()}


def _compile_all(comp: _Compiled, model_args: tuple, chains: int, draws: int | None,
                 timer: _Timer) -> Any:
    """Compile the start, chunk and metric steps (and the post-processing of ``draws`` draws).

    Everything is traced first, one function after another under :data:`TRACE_LOCK` (tracing
    the start initializes the kernel the chunk uses), then the XLA compilations, which take
    most of the time and release the GIL, run in parallel threads. Returns the abstract state
    of one chain. Call with ``comp.lock`` held.
    """
    names = _step_names(draws)
    if all(n in comp.executables for n in names):
        return comp.state_shape
    t0 = time.perf_counter()
    with TRACE_LOCK:
        lowered = {"start": comp.start.lower(jax.random.PRNGKey(0), model_args)}
        state = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, weak_type=a.weak_type),
            lowered["start"].out_info)
        z = jax.tree_util.tree_leaves(state.z)
        dim = sum(int(np.prod(a.shape)) for a in z)
        lowered["chunk"] = comp.chunk.lower(state, model_args, 1)
        lowered["metric"] = comp.set_metric.lower(
            state, jax.ShapeDtypeStruct((dim, dim), z[0].dtype))
        if draws:
            lowered["postprocess", draws] = _postprocess(comp, model_args).lower(
                _draws_like(state, chains, draws))
    todo = [n for n in names if n not in comp.executables]

    def compile_one(name: Any) -> Any:
        return lowered[name].compile(None if name == "chunk" else RUN_ONCE_OPTIONS)

    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        for name, exe in zip(todo, pool.map(compile_one, todo), strict=True):
            comp.executables[name] = exe
    comp.state_shape = state
    comp.timings["all"] = time.perf_counter() - t0
    timer.compile += comp.timings["all"]
    return state


def _step_names(draws: int | None) -> list:
    """The compiled steps of a fit: start, chunk, metric update, post-processing of ``draws``."""
    return ["start", "chunk", "metric"] + ([("postprocess", draws)] if draws else [])


def _draws_like(state: Any, chains: int, draws: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract unconstrained draws (chains, draws, ...) of chains in ``state``'s shape."""
    return {k: jax.ShapeDtypeStruct((chains, draws, *v.shape), v.dtype)
            for k, v in state.z.items()}


def _site_shapes(comp: _Compiled, model_args: tuple, state: Any, chains: int,
                 draws: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes of one draw of each site the post-processing returns."""
    with TRACE_LOCK:
        out = jax.eval_shape(_postprocess(comp, model_args), _draws_like(state, chains, draws))
    return {k: jax.ShapeDtypeStruct(v.shape[2:], v.dtype) for k, v in out.items()}


def run_nuts(model: Callable[..., Any], model_args: tuple, shape_key: tuple, *, chains: int,
             warmup: int, draws: int, seed: int, target_accept: float, max_tree_depth: int,
             progress: Progress | None = None, label: str = "",
             move: Move | None = None) -> SamplerRun:
    """Sample ``model(*model_args)`` with NUTS (dense mass matrix); return constrained draws.

    Chains run one after another, each as an unbatched compiled loop: on CPU this is faster
    than batching chains with ``vmap`` (batched while-loops) or running them concurrently
    (measured in bench/). The metric is adapted across chains (:func:`warmup_stages`).
    ``shape_key`` must change whenever the model's static structure or array shapes change.
    With a ``move``, that exact Gibbs step follows every NUTS transition (warm-up included).
    """
    comp = _compiled(model, shape_key, chains, warmup, target_accept, max_tree_depth, move)
    report = progress or (lambda _f, _m: None)
    total = chains * (warmup + draws)
    timer = _Timer()
    done = 0
    with comp.lock:  # the kernel keeps per-init closures: one fit at a time per compiled shape
        if not all(n in comp.executables for n in _step_names(draws)):
            report(0.0, f"{label}Compiling the sampler for this model (once per model shape)")
            _compile_all(comp, model_args, chains, draws, timer)
        report(0.0, f"{label}Finding a starting point")
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        stacked = timer.call(comp, "start", key, model_args)
        states = [jax.tree_util.tree_map(lambda a, c=c: a[c], stacked) for c in range(chains)]
        records: list[list] = [[] for _ in range(chains)]
        stages = [(n, update, "warm-up") for n, update in warmup_stages(warmup)]
        stages.append((draws, False, "sampling"))
        for length, update, phase in stages:
            window: list[dict] = []
            for c in range(chains):
                left = length
                chain_z = []
                while left:
                    n = min(CHUNK, left)
                    states[c], buf = timer.call(comp, "chunk", states[c], model_args, n)
                    buf = jax.device_get(buf)
                    rec = jax.tree_util.tree_map(lambda a, n=n: np.asarray(a[:n]), buf)
                    records[c].append(rec)
                    chain_z.append(rec[0])
                    left -= n
                    done += n
                    report(done / total, f"{label}{phase.capitalize()}: chain {c + 1} of "
                                         f"{chains}, {done / total:.0%} done")
                if update:
                    window.append(jax.tree_util.tree_map(lambda *xs: np.concatenate(xs),
                                                         *chain_z))
            if update:
                metric = jnp.asarray(pooled_metric(window))
                states = [timer.call(comp, "metric", s, metric) for s in states]
        postprocess = comp.executables["postprocess", draws]

    per_chain = [jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *r) for r in records]
    z, diverging, num_steps, accept = (
        jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[pc[i] for pc in per_chain])
        for i in range(4)
    )
    with EXECUTION_LOCK:
        samples = jax.device_get(postprocess({k: v[:, warmup:] for k, v in z.items()}))
    steps = np.asarray(num_steps)[:, warmup:].astype(np.int64)
    if os.environ.get("HTE_DEBUG"):
        ws = np.asarray(num_steps)[:, :warmup]
        print("compile timings", comp.timings)
        print("warm-up steps per 50 iterations:",
              ws[:, : warmup // 50 * 50].reshape(chains, -1, 50).mean(axis=(0, 2)).round(1))
    return SamplerRun(
        samples={k: np.asarray(v) for k, v in samples.items()},
        diverging=np.asarray(diverging)[:, warmup:].astype(bool),
        num_steps=steps,
        tree_depth=np.ceil(np.log2(steps + 1)).astype(np.int64),
        accept_prob=np.asarray(accept)[:, warmup:],
        step_size=np.array([float(s.adapt_state.step_size) for s in states]),
        warmup_divergences=int(np.asarray(diverging)[:, :warmup].sum()),
        seconds_sampling=timer.run,
        seconds_compile=timer.compile,
    )


class _Timer:
    """Runs compiled functions and keeps compile and run time apart."""

    def __init__(self) -> None:
        self.run = 0.0
        self.compile = 0.0

    def call(self, comp: _Compiled, name: str, *args: Any) -> Any:
        exe = comp.executables[name]
        t0 = time.perf_counter()
        with EXECUTION_LOCK:
            out = jax.block_until_ready(exe(*args))
        self.run += time.perf_counter() - t0
        return out
