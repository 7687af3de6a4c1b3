"""Fitting, tested statistically: recovery of planted effects, an exact posterior, coverage."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from conftest import FAST
from scipy import stats

import hte
from hte import fitting as fit_module
from hte.data import Roles, SummaryRoles, prepare, prepare_summaries
from hte.diagnostics import Diagnostics
from hte.simulate import DEFAULT_FACTORS, BaselineSpec, EffectSpec, Simulation, simulate

THREE = {f: DEFAULT_FACTORS[f] for f in ("gender", "race", "party")}


def fit_simulation(sim, **kw):
    return hte.fit(sim.data, outcome="outcome", treatment="treatment", treated="treatment",
                   by=list(sim.factors), interactions=["gender:race"], **{**FAST, **kw})


def test_planted_intersection_is_found_and_null_groups_are_not():
    sim = simulate(4000, factors=THREE, seed=11,
                   effect=EffectSpec(base=0.1, intersections={(("race", "Black"),
                                                               ("gender", "Male")): 0.8}),
                   baseline=BaselineSpec(intercept=1.0, levels={("party", "Democrat"): 0.5}))
    fit = fit_simulation(sim)
    delta = 0.3
    table = fit.effect_table(threshold=delta)
    truth = [sim.true_effect({f: row[f] for f in fit.factors if isinstance(row[f], str)})
             for _, row in table.iterrows()]
    table["truth"] = truth
    planted = table[table["label"] == "gender = Male, race = Black"].iloc[0]
    assert planted["p_above"] >= 0.9
    assert planted["verdict"] == "likely positive"
    null = table[table["truth"] < 0.15]
    assert len(null) >= 15
    assert (null["p_above"] < 0.9).all()
    # Partial pooling: small, noisy groups move towards the overall effect.
    assert fit.diagnostics.divergences == 0


def test_binary_outcome_end_to_end(binary_fit):
    truth = pd.read_csv("sample_data/true_effects.csv", keep_default_na=False)
    truth = truth[truth["dataset"] == "experiment_binary.csv"]
    overall = truth[(truth["factor_1"] == "")]["true_effect"].item()
    row = binary_fit.effects().iloc[0]
    assert abs(row["mean"] - overall) < 3 * row["sd"]
    assert -0.1 < row["lower"] < row["upper"] < 0.2  # a difference in probability
    men = binary_fit.effects(["gender", "race"]).set_index("label")
    black_men = men.loc["gender = Male, race = Black"]
    assert black_men["mean"] > row["mean"]
    assert black_men["p_above"] > 0.9  # threshold 0: the planted effect is positive
    assert binary_fit.formula.startswith("donated ~ treatment + (1 + treatment || gender)")


def quadrature_posterior(y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Exact posterior mean and sd of the effect for y ~ N(alpha + tau z, sigma_z^2) by quadrature.

    Priors as in hte on the standardized outcome: alpha, tau ~ N(0, 1), a residual sd per arm
    sigma_0, sigma_1 ~ HalfNormal(1). Given the two sds the posterior of (alpha, tau) is
    Gaussian; the sds are integrated on a fine grid.
    """
    center, scale = y.mean(), y.std(ddof=1)
    ys = (y - center) / scale
    n0, n1 = np.sum(z == 0), np.sum(z == 1)
    s0, s1 = ys[z == 0].sum(), ys[z == 1].sum()
    q0, q1 = ys[z == 0] @ ys[z == 0], ys[z == 1] @ ys[z == 1]
    grid = np.linspace(0.75, 1.25, 401)
    a, b = np.meshgrid(grid, grid, indexing="ij")          # sigma_0, sigma_1
    w0, w1 = 1 / a**2, 1 / b**2
    # precision of (alpha, tau): [[1 + n0 w0 + n1 w1, n1 w1], [n1 w1, 1 + n1 w1]]
    p11, p12, p22 = 1 + n0 * w0 + n1 * w1, n1 * w1, 1 + n1 * w1
    r1, r2 = s0 * w0 + s1 * w1, s1 * w1
    det = p11 * p22 - p12**2
    m1, m2 = (p22 * r1 - p12 * r2) / det, (p11 * r2 - p12 * r1) / det
    loglik = (-n0 * np.log(a) - n1 * np.log(b) - q0 * w0 / 2 - q1 * w1 / 2 - 0.5 * np.log(det)
              + 0.5 * (m1 * r1 + m2 * r2))
    logw = loglik + stats.halfnorm.logpdf(a) + stats.halfnorm.logpdf(b)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mu = float(np.sum(w * m2))
    var = float(np.sum(w * (p11 / det + m2**2)) - mu**2)
    return mu * scale, np.sqrt(var) * scale


def test_average_effect_matches_the_exact_posterior(sample_table):
    fit = hte.fit(sample_table, outcome="support", treatment="treatment", treated="treatment",
                  chains=4, warmup=500, draws=1000, seed=3)
    draws = fit.effect_draws([{}])[:, 0]
    y = sample_table["support"].to_numpy()
    z = (sample_table["treatment"] == "treatment").to_numpy().astype(float)
    mean, sd = quadrature_posterior(y, z)
    mcse = sd / np.sqrt(1000)  # effect draws are exact given sigma: ESS ~ draws
    assert draws.mean() == pytest.approx(mean, abs=5 * mcse)
    assert draws.std() == pytest.approx(sd, rel=0.06)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell and arm: n, mean, sd, as a warehouse would export them."""
    g = table.groupby(["gender", "race", "party", "treatment"])["support"]
    return g.agg(n="count", mean="mean", sd="std").reset_index()


def test_aggregated_input_gives_the_same_posterior_as_rows(sample_table, gaussian_fit):
    summaries = summary_table(sample_table)
    prepared = prepare_summaries(summaries, SummaryRoles(
        treatment="treatment", treated="treatment", factors=("gender", "race", "party"),
        outcome_name="support"))
    raw = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                      treated="treatment", factors=("gender", "race", "party")))
    a, b = prepared.cells.cells, raw.cells.cells
    pd.testing.assert_frame_equal(a[["gender", "race", "party", "z", "n"]],
                                  b[["gender", "race", "party", "z", "n"]])
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-12)
    np.testing.assert_allclose(a["ss"], b["ss"], rtol=1e-9)
    fit = hte.fit(prepared, interactions=["gender:race"], **FAST)
    ours = fit.effect_table()
    theirs = gaussian_fit.effect_table()
    # Same data, same seed: the same posterior up to Monte Carlo error.
    assert np.all(np.abs(ours["mean"] - theirs["mean"]) < 0.25 * theirs["sd"])
    assert np.allclose(ours["raw_mean"], theirs["raw_mean"], rtol=1e-9)


def test_second_fit_of_the_same_shape_reuses_the_compiled_sampler(sample_table, gaussian_fit):
    shuffled = sample_table.sample(frac=1.0, random_state=0)
    again = hte.fit(shuffled, outcome="support", treatment="treatment", treated="treatment",
                    by=["gender", "race", "party"], interactions=["gender:race"],
                    prior_strength="strong", **FAST)
    assert again.diagnostics.seconds_compile == 0.0
    assert again.spec.priors.modifier_scale < gaussian_fit.spec.priors.modifier_scale


def test_progress_is_reported_up_to_completion(sample_table):
    seen: list[tuple[float, str]] = []
    hte.fit(sample_table, outcome="support", treatment="treatment", treated="treatment",
            by=["gender"], chains=2, warmup=100, draws=100,
            progress=lambda f, m: seen.append((f, m)))
    # Compiling (a new model shape) is announced first; a retry (after divergences) starts
    # again from zero, saying so.
    starts = [i for i, (_, m) in enumerate(seen) if "starting point" in m]
    assert all("Compiling" in m for _, m in seen[:starts[0]]) and starts[0] <= 1
    assert all("Retry" in seen[i][1] for i in starts[1:])
    fractions = [f for f, _ in seen[starts[-1]:]]
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)
    assert any("Warm-up" in m for _, m in seen) and any("Sampling" in m for _, m in seen)


def test_divergences_trigger_a_retry_with_higher_target_acceptance(monkeypatch, sample_table):
    real = fit_module.run_nuts
    targets: list[float] = []

    def flaky(*args, **kwargs):
        run = real(*args, **kwargs)
        targets.append(kwargs["target_accept"])
        if len(targets) == 1:
            run.diverging[0, :3] = True
        return run

    monkeypatch.setattr(fit_module, "run_nuts", flaky)
    fit = hte.fit(sample_table, outcome="support", treatment="treatment", treated="treatment",
                  by=["gender"], chains=2, warmup=100, draws=100)
    assert targets == [0.8, 0.95]
    assert fit.diagnostics.attempts == 2 and fit.diagnostics.divergences == 0


def test_save_load_and_netcdf_round_trip(tmp_path, gaussian_fit):
    path = gaussian_fit.save(tmp_path / "fit.npz")
    loaded = hte.load(path)
    pd.testing.assert_frame_equal(loaded.effect_table(threshold=0.2),
                                  gaussian_fit.effect_table(threshold=0.2))
    assert loaded.formula == gaussian_fit.formula
    assert loaded.diagnostics.to_dict() == gaussian_fit.diagnostics.to_dict()
    idata = gaussian_fit.to_inference_data()
    assert {"tau", "sigma", "effect_gender_race"} <= set(idata.posterior.data_vars)
    assert idata.posterior["effect_gender_race"].shape[-1] == 8
    nc = gaussian_fit.to_netcdf(tmp_path / "fit.nc")
    assert nc.stat().st_size > 0
    with pytest.raises(hte.HteError, match="not a saved hte fit"):
        hte.load(tmp_path / "fit.nc")


def test_diagnostics_verdict_words_the_problems():
    diag = Diagnostics(chains=4, draws=1000, max_r_hat=1.05, min_ess_bulk=120, min_ess_tail=90,
                       divergences=7, tree_depth_saturated=100, max_tree_depth=10,
                       target_accept=0.8, seconds=1.0, seconds_compile=0.0)
    assert not diag.ok
    text = " ".join(diag.advice())
    assert "7 divergent transitions" in text and "target acceptance" in text
    assert "R-hat 1.050" in text and "bulk ESS 120" in text and "maximum tree depth" in text
    assert diag.verdict().startswith("The sampler shows warning signs")


#: Acceptance band of the coverage of 90% intervals. A normal posterior's interval made 30%
#: wider or narrower covers 2 Phi(1.3 x 1.645) - 1 = 0.968 or 2 Phi(0.7 x 1.645) - 1 = 0.750.
#: Over 100 experiments of 12 correlated groups the coverage has a standard error of about
#: 0.017 at 0.90, 0.008 at 0.968 and 0.022 at 0.75 (measured); each edge is about 2.8 of
#: them from the nominal 0.90 and from the +-30% coverage on its side.
COVERAGE_BAND = (0.835, 0.945)
TWO_FACTORS = {"f": {"a": 0.5, "b": 0.5}, "g": {"x": 0.4, "y": 0.35, "z": 0.25}}


def prior_like_experiment(seed: int) -> Simulation:
    """An experiment whose effects are drawn as the default prior draws them: effect scales
    omega_k = lambda xi_k (lambda ~ HalfNormal(0.2), xi_k ~ HalfNormal(1)) for f, g and f:g."""
    rng = np.random.default_rng(1000 + seed)
    omega = 0.2 * abs(rng.normal()) * np.abs(rng.normal(size=3))
    levels = {(f, lev): omega[i] * rng.normal() for i, f in enumerate(TWO_FACTORS)
              for lev in TWO_FACTORS[f]}
    pairs = {(("f", a), ("g", b)): omega[2] * rng.normal()
             for a in TWO_FACTORS["f"] for b in TWO_FACTORS["g"]}
    baseline = {(f, lev): 0.3 * rng.normal() for f in TWO_FACTORS for lev in TWO_FACTORS[f]}
    sim = simulate(600, factors=TWO_FACTORS, seed=seed,
                   effect=EffectSpec(base=rng.normal(0.1, 0.2), levels=levels,
                                     intersections=pairs),
                   baseline=BaselineSpec(levels=baseline))
    return sim


@pytest.mark.slow
def test_credible_intervals_cover_true_group_effects_at_the_nominal_rate():
    """90% intervals of every group (everyone, each level, each level pair: 12 per fit) over 100
    simulated experiments with effects drawn like the prior. Their coverage must lie in
    COVERAGE_BAND, and the same intervals stretched 1.3x or shrunk 0.7x about the median
    must fall outside it, so the test would catch intervals 30% too wide or too narrow."""
    covered = {1.0: [], 1.3: [], 0.7: []}
    for seed in range(100):
        sim = prior_like_experiment(seed)
        fit = hte.fit(sim.data, outcome="outcome", treatment="treatment", treated="treatment",
                      by=["f", "g"], interactions=["f:g"], chains=1, warmup=150, draws=300,
                      seed=seed)
        table = fit.effect_table(interval=0.9)
        truth = np.array([sim.true_effect({f: row[f] for f in fit.factors
                                            if isinstance(row[f], str)})
                          for _, row in table.iterrows()])
        mid = table["median"].to_numpy()
        for factor, hits in covered.items():
            lower = mid - factor * (mid - table["lower"].to_numpy())
            upper = mid + factor * (table["upper"].to_numpy() - mid)
            hits.append(np.mean((lower <= truth) & (truth <= upper)))
    rate = {factor: float(np.mean(hits)) for factor, hits in covered.items()}
    low, high = COVERAGE_BAND
    assert low <= rate[1.0] <= high, rate
    assert rate[1.3] > high and rate[0.7] < low, rate


COMPILED_STEPS = {"_start_chains", "run_chain", "_set_metric", "constrain_fn",
                  "_gaussian_coefficients"}


@contextmanager
def traced_functions():
    """Names of the functions JAX traces (so compiles) inside the block."""
    from jax._src import monitoring

    names: list[str] = []

    def listen(event: str, _seconds: float, **meta) -> None:
        if event.endswith("jaxpr_trace_duration"):
            names.append(meta.get("fun_name"))

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        monitoring.unregister_event_duration_listener(listen)


def test_precompiling_makes_the_next_fit_start_sampling_at_once(sample_table):
    from hte.api import model_spec
    from hte.fitting import fit_cells, precompile_for
    from hte.spec import SamplerSettings

    prepared = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                           treated="treatment", factors=("kids", "married")))
    spec = model_spec(prepared, ["kids:married"])
    settings = SamplerSettings(chains=2, warmup=120, draws=100, retry_on_divergence=False)
    with traced_functions() as first:
        assert precompile_for(prepared.cells, spec, settings) > 0
    assert set(first) >= COMPILED_STEPS        # everything a fit runs, sampler and after
    assert precompile_for(prepared.cells, spec, settings) == 0
    with traced_functions() as during_fit:
        fit = fit_cells(prepared.cells, spec, settings)
    assert fit.diagnostics.seconds_compile == 0
    assert not COMPILED_STEPS & set(during_fit), during_fit


def test_two_threads_can_compile_and_fit_different_models_at_once(sample_table):
    """Two app sessions (or a background warm-up beside a fit) use the engine concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    from hte.api import model_spec
    from hte.fitting import fit_cells
    from hte.spec import SamplerSettings

    settings = SamplerSettings(chains=1, warmup=60, draws=50, retry_on_divergence=False)
    jobs = []
    for factors in (("generation",), ("gender", "kids")):   # shapes no other test uses
        prepared = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                               treated="treatment", factors=factors))
        jobs.append((prepared.cells, model_spec(prepared)))
    with ThreadPoolExecutor(2) as pool:
        fits = list(pool.map(lambda job: fit_cells(*job, settings), jobs))
    for fit, (_, spec) in zip(fits, jobs, strict=True):
        assert fit.spec == spec
        assert np.isfinite(fit.effect_table(pairs=False)["mean"]).all()


@pytest.mark.slow
def test_rare_binary_outcome_is_not_pulled_towards_the_prior():
    """0.05% vs 0.15% conversion in 40k people: the pooled overall effect stays within 0.3
    classical standard errors of the raw difference (a 1%-clipped intercept prior and a N(0, 1)
    effect prior put it ~0.7 SE below), and its posterior sd matches the standard error."""
    shifts, ratios = [], []
    factors = {"gender": {"F": 0.5, "M": 0.5}, "region": {"N": 0.3, "S": 0.4, "W": 0.3}}
    for seed in range(3):
        sim = simulate(40_000, family="binary", factors=factors,
                       effect=EffectSpec(base=float(np.log(3))),
                       baseline=BaselineSpec(intercept=float(np.log(0.0005 / 0.9995))), seed=seed)
        fit = hte.fit(sim.data, outcome="outcome", treatment="treatment", treated="treatment",
                      by=["gender", "region"], chains=2, warmup=400, draws=500, seed=seed)
        row = fit.effects().iloc[0]
        shifts.append((row["mean"] - row["raw_mean"]) / row["raw_se"])
        ratios.append(row["sd"] / row["raw_se"])
    assert abs(np.mean(shifts)) < 0.3, shifts
    assert 0.85 < np.mean(ratios) < 1.15, ratios


def test_other_effect_scale_priors_can_be_chosen(sample_table):
    """Per-term (rstanarm-like) scales have no shared scale; the mixture samples it."""
    from hte.spec import Priors

    kw = {"outcome": "support", "treatment": "treatment", "treated": "treatment",
          "by": ["gender", "party"], **FAST}
    alone = hte.fit(sample_table, priors=Priors(effect_pooling="independent"), **kw)
    assert alone.spec.priors.effect_pooling == "independent"
    assert "effect_scale" not in alone.draws and alone.draws["sigma_effect"].shape[-1] == 2
    mixed = hte.fit(sample_table, priors=Priors(effect_pooling="mixture"), **kw)
    assert "effect_scale" in mixed.draws
    with pytest.raises(hte.SpecError, match="effect pooling"):
        Priors(effect_pooling="sideways")


# -- residual sd that follows the data ------------------------------------------------------------

def revenue_experiment(n: int, seed: int, treated_share: float = 0.2,
                       scales: tuple[float, float, float] = (20.0, 60.0, 250.0)) -> pd.DataFrame:
    """Spend: mostly zeros, a heavy tail, a spread that differs by arm and segment."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(["low", "mid", "high"], n, p=[0.5, 0.35, 0.15])
    region = rng.choice(["north", "south"], n)
    z = np.zeros(n, int)
    z[rng.choice(n, round(n * treated_share), replace=False)] = 1
    buy = rng.random(n) < np.where(z == 1, 0.14, 0.10)
    scale = pd.Series(segment).map(dict(zip(["low", "mid", "high"], scales, strict=True)))
    scale = scale.to_numpy(float)
    amount = scale * rng.lognormal(0.0, np.where(z == 1, 1.2, 0.8))
    return pd.DataFrame({"segment": segment, "region": region,
                         "treatment": np.where(z == 1, "mail", "none"),
                         "spend": np.where(buy, amount, 0.0)})


def welch_se(d: pd.DataFrame) -> float:
    t, c = d.loc[d["treatment"] == "mail", "spend"], d.loc[d["treatment"] == "none", "spend"]
    return float(np.sqrt(t.var() / len(t) + c.var() / len(c)))


def test_residual_sd_per_arm_is_recovered():
    rng = np.random.default_rng(5)
    n = 3000
    d = pd.DataFrame({"gender": rng.choice(["F", "M"], n), "treatment": rng.integers(0, 2, n)})
    d["y"] = 10 + 0.5 * d["treatment"] + rng.normal(0, np.where(d["treatment"] == 1, 3.0, 1.0))
    fit = hte.fit(d, outcome="y", treatment="treatment", treated="1", by=["gender"], **FAST)
    sigma = fit.draws["sigma"].reshape(-1, 2) * fit.scale          # outcome units
    assert sigma.mean(axis=0) == pytest.approx([1.0, 3.0], rel=0.06)
    assert "sigma_group" not in fit.draws                            # gender's spread is equal
    row = fit.effects().iloc[0]
    assert row["sd"] == pytest.approx(row["raw_se"], rel=0.12)


def test_variance_factors_are_chosen_where_the_spread_clearly_differs(sample_table):
    from hte.data import Roles, prepare
    from hte.variance import choose_variance_factors

    d = revenue_experiment(5000, 0)
    prepared = prepare(d, Roles(outcome="spend", treatment="treatment", treated="mail",
                                factors=("region", "segment")))
    assert choose_variance_factors(prepared.cells) == ("segment",)
    homoscedastic = prepare(sample_table, Roles(outcome="support", treatment="treatment",
                                                treated="treatment",
                                                factors=("gender", "race", "party")))
    assert choose_variance_factors(homoscedastic.cells) == ()


@pytest.mark.slow
def test_overall_effect_sd_matches_welch_on_skewed_unbalanced_heteroscedastic_data():
    """20% treated, spread differing by arm and segment: the posterior sd is the Welch SE.

    One residual sd for everybody gave 0.61-0.73x on these data (3 seeds); the tolerance fails
    that in every seed. (With segments whose spreads differ tenfold the overall sd is smaller than
    Welch's whatever the residual sds: partial pooling of the segments' effects lets the noisy
    segment borrow precision from the quiet ones; see docs/model.md.)
    """
    ratios = []
    for seed in range(4):
        d = revenue_experiment(5000, seed, scales=(40.0, 60.0, 100.0))
        fit = hte.fit(d, outcome="spend", treatment="treatment", treated="mail",
                      by=["segment", "region"], **FAST)
        ratios.append(fit.effects().iloc[0]["sd"] / welch_se(d))
    # Measured 1.04, 0.96, 0.95, 0.84: on average within 10%, each seed within 20%.
    assert 0.9 < np.mean(ratios) < 1.1 and all(0.8 < r < 1.2 for r in ratios), ratios


def test_predictive_check_flags_negative_spend():
    from hte.checks import predictive_check

    d = revenue_experiment(3000, 1)
    fit = hte.fit(d, outcome="spend", treatment="treatment", treated="mail", by=["segment"],
                  **FAST)
    assert fit.data_info["outcome_shape"]["support"] == "non-negative"
    check = predictive_check(fit)
    assert check.impossible_share > 0.2           # most replicated zeros go negative
    assert not check.ok
    text = check.summary("spend")
    assert "negative" in text and "reproduces the means" in text


@pytest.mark.slow
def test_predictive_check_is_calibrated_with_many_small_cells():
    """Data drawn from the model, ~400 cells of a few people: no misfit, no tilt."""
    from hte.checks import predictive_check

    sim = simulate(1500, seed=4, effect=EffectSpec(base=0.2),
                   baseline=BaselineSpec(intercept=1.0, levels={("party", "Democrat"): 0.5}))
    fit = fit_simulation(sim)
    check = predictive_check(fit)
    assert len(check.cells) > 300 and check.cells["n"].median() < 6
    assert not check.bins_misfit and not check.cells_misfit and check.ok
    assert check.impossible_share is None
    # standardized residuals show no trend against the prediction (the old picture's tilt)
    slope = np.polyfit(check.cells["predicted"], check.cells["standardized"], 1)[0]
    spread = check.cells["predicted"].std()
    assert abs(slope * spread) < 0.1
