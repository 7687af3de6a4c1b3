"""Fit the model to a cell table: build model inputs, run NUTS, retry on divergences.

The cost of a fit depends on the number of cells and coefficients, never on the number of rows:
the Gaussian model sees only P x P cross-products of the design, the binary model one row per cell.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hte import model as m
from hte.cells import GAUSSIAN, CellTable
from hte.design import Design
from hte.diagnostics import arviz, summarize
from hte.errors import SpecError
from hte.result import Fit
from hte.sampler import EXECUTION_LOCK, Progress, precompile, run_nuts
from hte.spec import DEFAULT_TARGET_ACCEPT, ModelSpec, SamplerSettings
from hte.variance import DEVIATION_SD, variance_groups

#: Target acceptance rates tried, in order, when the sampler reports divergences.
RETRY_TARGET_ACCEPT = (0.95, 0.99)


@dataclass(frozen=True)
class ModelInputs:
    """Everything the NumPyro model needs, as arrays, plus the outcome's standardization."""

    design: Design
    hyper: m.Hyper
    args: tuple
    shape_key: tuple
    center: float
    scale: float


def outcome_scale(cells: CellTable) -> tuple[float, float]:
    """Mean and sd of the outcome over all people (Gaussian); (0, 1) for a binary outcome."""
    if cells.family != GAUSSIAN:
        return 0.0, 1.0
    c = cells.cells
    n = c["n"].to_numpy(float)
    mean = float(np.sum(n * c["mean"]) / n.sum())
    ss = float(np.sum(c["ss"]) + np.sum(n * (c["mean"].to_numpy() - mean) ** 2))
    sd = float(np.sqrt(ss / max(n.sum() - 1, 1)))
    if not sd > 0:
        raise SpecError("The outcome has the same value for everybody, so there is nothing to "
                        "explain. Check that the right outcome column is chosen.")
    return mean, sd


def model_inputs(cells: CellTable, spec: ModelSpec) -> ModelInputs:
    """Contract the cell table with the design into the model's arrays."""
    design = Design.build(cells.factors, cells.levels, spec.terms)
    table = cells.cells
    codes = cells.level_codes(table)
    z = table["z"].to_numpy(np.float64)
    x = design.rows(codes, z)
    n = table["n"].to_numpy(np.float64)
    center, scale = outcome_scale(cells)
    pr = spec.priors
    if cells.family == GAUSSIAN:
        ybar = (table["mean"].to_numpy(np.float64) - center) / scale
        ss = table["ss"].to_numpy(np.float64) / scale**2
        groups = variance_groups(cells)
        g = groups.cell_group
        k = groups.n_groups
        stats = m.GaussianStats(
            gram=jnp.asarray(np.stack([(x[g == j] * n[g == j, None]).T @ x[g == j]
                                       for j in range(k)])),
            xty=jnp.asarray(np.stack([x[g == j].T @ (n * ybar)[g == j] for j in range(k)])),
            yty=jnp.asarray(np.bincount(g, ss + n * ybar**2, minlength=k)),
            n=jnp.asarray(np.bincount(g, n, minlength=k)),
        )
        variance = m.VarianceDesign(arm=jnp.asarray(groups.arm),
                                    deviation=jnp.asarray(groups.deviation),
                                    deviation_sd=jnp.asarray(DEVIATION_SD))
        alpha_loc = 0.0
        args: tuple = (stats, variance)
        key = ("gaussian", design.n_terms, design.n_coefs, k, groups.deviation.shape[1],
               pr.effect_pooling)
    else:
        k = table["successes"].to_numpy(np.float64)
        control = z == 0
        # The control arm's empirical logit, with a continuity correction (finite for 0 or all
        # successes); no clipping, so a 0.05% conversion rate is centred where it is.
        alpha_loc = float(np.log((k[control].sum() + 0.5) / (n[control].sum() - k[control].sum()
                                                             + 0.5)))
        args = (m.BinomialCells(x=jnp.asarray(x), n=jnp.asarray(n)), jnp.asarray(k))
        key = ("binary", design.n_terms, design.n_coefs, len(table), pr.effect_pooling)
    hyper = m.Hyper(
        alpha_loc=jnp.asarray(alpha_loc), alpha_sd=jnp.asarray(pr.intercept_sd),
        tau_sd=jnp.asarray(pr.effect_sd if cells.family == GAUSSIAN else pr.binary_effect_sd),
        baseline_scale=jnp.asarray(pr.baseline_scale),
        modifier_scale=jnp.asarray(pr.modifier_scale),
        sigma_scale=jnp.asarray(pr.sigma_scale),
        binary_baseline_sd=jnp.asarray(pr.binary_baseline_sd),
        coef_term=jnp.asarray(design.coef_term), effect_shape=jnp.asarray(pr.effect_shape),
        slab_scale=jnp.asarray(pr.slab_scale), slab_share=jnp.asarray(pr.slab_share),
    )
    return ModelInputs(design=design, hyper=hyper, args=args, shape_key=key,
                       center=center, scale=scale)


def _model_fn(family: str, n_terms: int, pooling: str = "shared"):
    if family == GAUSSIAN:
        return _GAUSSIAN_MODELS.setdefault(
            (n_terms, pooling), lambda stats, variance, hyper: m.gaussian_model(
                stats, variance, hyper, n_terms, pooling=pooling))
    return _BINOMIAL_MODELS.setdefault(
        (n_terms, pooling), lambda cells, successes, hyper: m.binomial_model(
            cells, hyper, n_terms, successes=successes, pooling=pooling))


def _move_fn(family: str, n_terms: int, pooling: str = "shared"):
    """The Gibbs step run after each NUTS iteration, if the family has one."""
    if family == GAUSSIAN or n_terms == 0:
        return None
    return _BINOMIAL_MOVES.setdefault(
        (n_terms, pooling), lambda key, z, args: m.interweave_effect_scales(
            key, z, args[-1], n_terms, pooling=pooling))


# One function object per shape, so the compiled sampler cache can key on it.
_GAUSSIAN_MODELS: dict = {}
_BINOMIAL_MODELS: dict = {}
_BINOMIAL_MOVES: dict = {}
_draw_shared_scale = jax.jit(m.draw_shared_scale)


@jax.jit
def _gaussian_coefficients(keys, stats, hyper, sigma, sigma_baseline, sigma_effect):
    draw = jax.vmap(m.draw_gaussian_coefficients, in_axes=(0, None, None, 0, 0, 0))
    return draw(keys, stats, hyper, sigma, sigma_baseline, sigma_effect)


#: Steps run once after sampling (Gaussian coefficients, binary shared scale), compiled by
#: function and the shapes and types of their arguments.
_EXECUTABLES: dict[tuple, Any] = {}
_EXECUTABLES_LOCK = threading.Lock()


def _executable(fn: Any, *args: Any) -> tuple[Any, float]:
    """The jitted ``fn`` compiled for arguments like ``args``, and the seconds spent compiling.

    Compiled ahead of time (``lower(...).compile()``), so compiling never runs it: a background
    compilation executes nothing (see :data:`hte.sampler.EXECUTION_LOCK`).
    """
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (fn, tree, tuple((np.shape(a), str(jnp.result_type(a))) for a in leaves))
    with _EXECUTABLES_LOCK:
        exe = _EXECUTABLES.get(key)
        if exe is not None:
            return exe, 0.0
        t0 = time.perf_counter()
        exe = _EXECUTABLES[key] = fn.lower(*args).compile()
        return exe, time.perf_counter() - t0


def _shared_scale_args(samples: dict, inputs: ModelInputs, seed: int) -> tuple:
    """Arguments of :func:`hte.model.draw_shared_scale` for ``samples`` (chains, draws, ...)."""
    return (jax.random.PRNGKey(seed + 2), np.asarray(samples["sigma_effect"]),
            inputs.hyper.modifier_scale, inputs.hyper.effect_shape)


def _coefficient_args(samples: dict, inputs: ModelInputs, seed: int) -> tuple:
    """Arguments of :func:`_gaussian_coefficients` for ``samples`` (chains, draws, ...)."""
    chains, n_draws = np.shape(samples["sigma_group"])[:2]
    flat = {k: np.asarray(v).reshape(chains * n_draws, *np.shape(v)[2:])
            for k, v in samples.items()}
    empty = np.zeros((chains * n_draws, 0))
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), chains * n_draws)
    return (keys, inputs.args[0], inputs.hyper, flat["sigma_group"],
            flat.get("sigma_baseline", empty), flat.get("sigma_effect", empty))


def _import_arviz_meanwhile() -> threading.Thread | None:
    """Import the diagnostics' library (2-3 s the first time) in a thread while JAX works."""
    if "arviz" in sys.modules:
        return None
    importing = threading.Thread(target=arviz, daemon=True)
    importing.start()
    return importing


def precompile_for(cells: CellTable, spec: ModelSpec,
                   settings: SamplerSettings | None = None) -> float:
    """Compile what :func:`fit_cells` will run for this model shape and these settings; no sampling.

    The sampler (its start, steps and metric update), the steps after it (the draws' sites and,
    for a Gaussian outcome, the coefficients' exact conditional), and ArviZ's import. A later fit
    of the same shape (same factors' level counts, intersections, family, chains, warm-up,
    draws, target acceptance) then starts sampling at once. Returns the seconds spent compiling
    (0 when all of it was compiled before).
    """
    settings = settings or SamplerSettings()
    if tuple(spec.factors) != tuple(cells.factors):
        cells = regroup(cells, spec.factors)
    inputs = model_inputs(cells, spec)
    importing = _import_arviz_meanwhile()
    pooling = spec.priors.effect_pooling
    seconds, template = precompile(
        _model_fn(cells.family, inputs.design.n_terms, pooling), (*inputs.args, inputs.hyper),
        inputs.shape_key, chains=settings.chains, warmup=settings.warmup,
        target_accept=settings.target_accept or DEFAULT_TARGET_ACCEPT[cells.family],
        max_tree_depth=settings.max_tree_depth, draws=settings.draws,
        move=_move_fn(cells.family, inputs.design.n_terms, pooling))
    if importing is not None:
        importing.join()
    if cells.family == GAUSSIAN:
        seconds += _executable(_gaussian_coefficients,
                               *_coefficient_args(template, inputs, 0))[1]
    elif "sigma_effect" in template and pooling == "shared":  # the shared scale, drawn later
        seconds += _executable(_draw_shared_scale, *_shared_scale_args(template, inputs, 0))[1]
    return seconds


def fit_cells(cells: CellTable, spec: ModelSpec, settings: SamplerSettings | None = None,
              progress: Progress | None = None, data_info: dict | None = None) -> Fit:
    """Fit ``spec`` to ``cells`` with NUTS; retry with a higher target acceptance on divergences."""
    settings = settings or SamplerSettings()
    if spec.family != cells.family:
        raise SpecError(f"The model is for a {spec.family} outcome but the data are "
                        f"{cells.family}.")
    unknown = [f for f in spec.factors if f not in cells.factors]
    if unknown:
        raise SpecError(f"The factor(s) {', '.join(unknown)} are not in the data.")
    if tuple(spec.factors) != tuple(cells.factors):
        cells = regroup(cells, spec.factors)
    inputs = model_inputs(cells, spec)
    pooling = spec.priors.effect_pooling
    fn = _model_fn(cells.family, inputs.design.n_terms, pooling)
    move = _move_fn(cells.family, inputs.design.n_terms, pooling)
    _import_arviz_meanwhile()
    first = settings.target_accept or DEFAULT_TARGET_ACCEPT[cells.family]
    targets = [first]
    if settings.retry_on_divergence:
        targets += [t for t in RETRY_TARGET_ACCEPT if t > first]
    seconds = compile_s = 0.0
    attempts: list[dict] = []  # every attempt's settings and outcome, kept in the diagnostics
    t_start = time.perf_counter()
    for attempt, target in enumerate(targets, start=1):
        label = "" if attempt == 1 else f"Retry {attempt - 1} (target acceptance {target}): "
        seed = settings.seed + 7919 * (attempt - 1)
        run = run_nuts(
            fn, (*inputs.args, inputs.hyper), inputs.shape_key, chains=settings.chains,
            warmup=settings.warmup, draws=settings.draws, seed=seed,
            target_accept=target, max_tree_depth=settings.max_tree_depth, progress=progress,
            label=label, move=move,
        )
        seconds += run.seconds_sampling
        compile_s += run.seconds_compile
        attempts.append({
            "attempt": attempt, "target_accept": float(target), "seed": int(seed),
            "divergences": int(run.diverging.sum()),
            "tree_depth_hits": int((run.tree_depth >= settings.max_tree_depth).sum()),
            "seconds": round(float(run.seconds_sampling), 3)})
        if not run.diverging.any():
            break
    draws = _named_draws(run, inputs, settings, cells.family)
    diag, table = summarize(
        draws, divergences=int(run.diverging.sum()), tree_depth=run.tree_depth,
        max_tree_depth=settings.max_tree_depth, target_accept=target, seconds=seconds,
        seconds_compile=compile_s, attempts=attempt, attempts_log=attempts,
    )
    fit = Fit(
        spec=spec, settings=settings, cells=cells, center=inputs.center, scale=inputs.scale,
        draws=draws, diagnostics=diag, parameter_table=table,
        sampler_stats={"diverging": run.diverging, "tree_depth": run.tree_depth,
                       "accept_prob": run.accept_prob},
        data_info=dict(data_info or {}),
    )
    fit.diagnostics = diag.with_effects(fit.effect_convergence())  # the numbers reported
    fit.seconds_total = time.perf_counter() - t_start
    return fit


def _named_draws(run, inputs: ModelInputs, settings: SamplerSettings,
                 family: str) -> dict[str, np.ndarray]:
    s = run.samples
    chains, n_draws = run.diverging.shape
    draws = {k: s[k] for k in ("sigma_baseline", "effect_scale", "sigma_effect") if k in s}
    integrated = "sigma_effect" in s and "effect_scale" not in s
    if integrated and inputs.shape_key[-1] == "shared":  # integrated out: draw it now
        args = _shared_scale_args(s, inputs, settings.seed)
        exe, _ = _executable(_draw_shared_scale, *args)
        with EXECUTION_LOCK:
            draws["effect_scale"] = np.asarray(exe(*args))
    if family == GAUSSIAN:
        args = _coefficient_args(s, inputs, settings.seed)
        exe, _ = _executable(_gaussian_coefficients, *args)
        with EXECUTION_LOCK:
            beta = jax.block_until_ready(exe(*args))
        draws["sigma"] = s["sigma"]                   # per arm: control, treated
        if "sigma_deviation" in s:                     # per variance group
            draws["sigma_group"] = s["sigma_group"]
        draws["beta"] = np.asarray(beta).reshape(chains, n_draws, -1)
    else:
        draws["beta"] = s["beta"]
    return draws


def regroup(cells: CellTable, factors: tuple[str, ...]) -> CellTable:
    """The same cells pooled over the factors not in ``factors`` (exact for both families)."""
    from hte.cells import from_summaries

    c = cells.cells.copy()
    if cells.family == GAUSSIAN:
        c["sd"] = np.sqrt(c["ss"] / (c["n"] - 1).clip(lower=1))
        c.loc[c["n"] <= 1, "sd"] = 0.0
    return from_summaries(c, factors, cells.family, {f: cells.levels[f] for f in factors})
