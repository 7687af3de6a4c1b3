"""Simulation study of the prior on how much treatment effects vary across terms.

For each design (how the true effect varies), family and seed, one experiment is simulated with
:mod:`hte.simulate`, and fitted with each candidate prior; every group (each level of each
factor) and every pairwise intersection (each combination of levels of two factors) is compared
with its true sample effect. Two baselines come free with each experiment: **no pooling** (the
raw difference in means per group, Welch standard error, normal interval) and **complete
pooling** (the overall difference in means, with its interval, for every group).

    python bench/prior_study.py --family gaussian --seeds 0 1 2 3 4 5 --out bench/prior_study.csv
    python bench/prior_study.py --summarize bench/prior_study.csv

Reported per design x family x method, averaged over seeds: RMSE of groups and of
intersections against the true sample effects, the share of 90% intervals covering them, and the
Monte Carlo standard error of that share: the sd over seeds of each fit's coverage / sqrt(seeds).
A fit's intervals all share the overall effect's error, so one seed's coverage swings from 0.65
to 1.0 (binary, sd ~0.1 over seeds) and the seeds, not the ~135 intervals, are the sample size.
The designs of one seed share the people, the randomization and (binary) the uniforms behind the
outcomes, so their errors move together: compare priors within a seed, and designs with many
seeds.
The fits use 2 chains x 300 warm-up x 400 draws (enough for means and 90% intervals; the
benchmark in bench/run.py uses the defaults).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from hte.api import model_spec  # noqa: E402
from hte.data import Roles, prepare  # noqa: E402
from hte.fitting import fit_cells  # noqa: E402
from hte.simulate import DEFAULT_FACTORS, BaselineSpec, EffectSpec, simulate  # noqa: E402
from hte.spec import Priors, SamplerSettings  # noqa: E402

N_PEOPLE = 10_000
Z90 = 1.6448536269514722
SETTINGS = {"chains": 2, "warmup": 300, "draws": 400}

#: Candidate priors (name -> Priors keyword arguments). "chosen" is the default (shared scale);
#: "latent_sd" scales a binary outcome's presets by the latent logistic sd (pi / sqrt(3)), tried
#: and dropped (same coverage, more divergences; docs/model.md).
PRIORS: dict[str, dict] = {
    "chosen": {},
    "latent_sd": {"binary": {"modifier_scale": 0.2 * 1.8137993642342178}},
    "independent": {"effect_pooling": "independent", "modifier_scale": 0.5},
    "mixture": {"effect_pooling": "mixture"},
    "mixture_wide": {"effect_pooling": "mixture", "slab_share": 0.5, "slab_scale": 0.25},
    "shape_0.2": {"effect_shape": 0.2},
    # Tried on the binary dense design (docs/model.md): per-term scales at the preset's 0.2,
    # term shares closer to even, a looser fixed baseline prior.
    "independent_0.2": {"effect_pooling": "independent"},
    "shape_1": {"effect_shape": 1.0},
    "shape_2": {"effect_shape": 2.0},
    "baseline_sd_3": {"binary_baseline_sd": 3.0},
}


def prior_for(name: str, family: str) -> Priors:
    kwargs = PRIORS[name]
    return Priors(**kwargs.get(family, {}) if "binary" in kwargs else kwargs)

MORE_FACTORS = {
    **DEFAULT_FACTORS,
    "region": {"Northeast": 0.18, "Midwest": 0.21, "South": 0.38, "West": 0.23},
    "income": {"<30k": 0.25, "30-60k": 0.3, "60-100k": 0.25, "100k+": 0.2},
    "education": {"HS": 0.4, "College": 0.4, "Graduate": 0.2},
}


def design(name: str, family: str, seed: int):
    """(factors, EffectSpec, BaselineSpec, intersections modelled) for a named design.

    Effects are in outcome sds (Gaussian, noise sd 1) or log-odds (binary, twice as large).
    """
    unit = 1.0 if family == "gaussian" else 2.0
    factors = MORE_FACTORS if name == "many" else DEFAULT_FACTORS
    rng = np.random.default_rng(10_000 + seed)
    baseline = BaselineSpec(
        intercept=0.0 if family == "gaussian" else -0.4,
        levels={("party", "Democrat"): 0.3 * unit, ("party", "Republican"): -0.3 * unit,
                ("generation", "Gen Z"): 0.1 * unit, ("race", "Black"): 0.15 * unit},
        noise_sd=1.0)
    base = 0.2 * unit
    black_men = (("gender", "Male"), ("race", "Black"))
    if name == "none":
        effect = EffectSpec(base=base)
    elif name == "sparse":
        effect = EffectSpec(base=base, intersections={black_men: 0.35 * unit})
    elif name == "planted":  # as in the issue: small level effects and one planted intersection
        effect = EffectSpec(base=base, levels={
            ("gender", "Female"): 0.05 * unit, ("gender", "Male"): -0.05 * unit,
            ("party", "Democrat"): 0.1 * unit, ("party", "Republican"): -0.1 * unit},
            intersections={black_men: 0.35 * unit})
    elif name == "bench":  # bench/run.py's reference experiment (noise sd 1.5)
        from run import BASELINE, BINARY_BASELINE, BINARY_EFFECT, EFFECT
        if family == "gaussian":
            return factors, EFFECT, BASELINE, ["gender:race"]
        return factors, BINARY_EFFECT, BINARY_BASELINE, ["gender:race"]
    elif name == "modest":
        effect = EffectSpec(base=base, levels={
            ("party", "Democrat"): 0.1 * unit, ("party", "Republican"): -0.1 * unit,
            ("generation", "Gen Z"): 0.08 * unit, ("generation", "Boomer"): -0.08 * unit})
    elif name == "dense":
        levels = {(f, lev): float(rng.normal(0, 0.05 * unit))
                  for f, shares in factors.items() for lev in shares}
        inters = {((("gender", g), ("race", r))): float(rng.normal(0, 0.05 * unit))
                  for g in factors["gender"] for r in factors["race"]}
        effect = EffectSpec(base=base, levels=levels, intersections=inters)
    elif name == "many":
        effect = EffectSpec(base=base, levels={
            ("party", "Democrat"): 0.1 * unit, ("party", "Republican"): -0.1 * unit,
            ("income", "100k+"): 0.15 * unit}, intersections={black_men: 0.25 * unit})
    else:
        raise ValueError(name)
    return factors, effect, baseline, ["gender:race"]


DESIGNS = ("none", "sparse", "planted", "bench", "modest", "dense", "many")


def _truth(sim, by: tuple[str, ...]) -> pd.DataFrame:
    t = sim.true_effects(list(by))
    return t.rename(columns={"n": "n_true"})


def evaluate(table: pd.DataFrame, sim, factors: list[str]) -> pd.DataFrame:
    """Per group: estimate, interval and truth, for pooled, no-pooling and complete pooling."""
    rows = []
    overall = table[table["by"] == "Everyone"].iloc[0]
    for by in [(f,) for f in factors] + list(itertools.combinations(factors, 2)):
        label = " × ".join(by)
        part = table[table["by"] == label]
        truth = _truth(sim, by)
        merged = part.merge(truth.astype({f: str for f in by}), on=list(by), how="left")
        kind = "group" if len(by) == 1 else "intersection"
        for _, r in merged.iterrows():
            common = {"kind": kind, "by": label, "n": r["n"], "truth": r["true_effect"]}
            rows.append({**common, "method": "pooled", "est": r["mean"], "lo": r["lower"],
                         "hi": r["upper"]})
            se = r["raw_se"]
            rows.append({**common, "method": "no pooling", "est": r["raw_mean"],
                         "lo": r["raw_mean"] - Z90 * se, "hi": r["raw_mean"] + Z90 * se})
            rows.append({**common, "method": "complete pooling", "est": overall["raw_mean"],
                         "lo": overall["raw_mean"] - Z90 * overall["raw_se"],
                         "hi": overall["raw_mean"] + Z90 * overall["raw_se"]})
    return pd.DataFrame(rows)


def run(family: str, designs, seeds, priors, out: Path) -> None:
    done = pd.read_csv(out) if out.exists() else None
    for name, seed in itertools.product(designs, seeds):
        factors, effect, baseline, inters = design(name, family, seed)
        sim = simulate(N_PEOPLE, family=family, factors=factors, effect=effect,
                       baseline=baseline, seed=seed)
        prep = prepare(sim.data, Roles(outcome="outcome", treatment="treatment",
                                       treated="treatment", factors=tuple(sim.factors)))
        spec = model_spec(prep, inters)
        for prior in priors:
            if done is not None and ((done["family"] == family) & (done["design"] == name)
                                     & (done["seed"] == seed) & (done["prior"] == prior)).any():
                continue
            t0 = time.perf_counter()
            fit = fit_cells(prep.cells, dataclasses.replace(spec, priors=prior_for(prior, family)),
                            SamplerSettings(seed=seed, **SETTINGS))
            seconds = time.perf_counter() - t0
            table = fit.effect_table()
            ev = evaluate(table, sim, list(sim.factors))
            if prior != priors[0]:  # the baselines do not depend on the prior
                ev = ev[ev["method"] == "pooled"]
            ev["method"] = np.where(ev["method"] == "pooled", prior, ev["method"])
            d = fit.diagnostics
            ev = ev.assign(family=family, design=name, seed=seed, prior=prior,
                           divergences=d.divergences, attempts=d.attempts,
                           min_ess=d.min_ess_bulk, max_rhat=d.max_r_hat, seconds=seconds)
            ev.to_csv(out, mode="a", header=not out.exists(), index=False)
            print(f"{family} {name} seed {seed} {prior}: {seconds:.0f} s, div {d.divergences}, "
                  f"ESS {d.min_ess_bulk:.0f}", flush=True)


def summarize(path: Path) -> pd.DataFrame:
    """Mean over seeds of per-fit RMSE and 90% coverage, by family, design, method and kind."""
    ev = pd.read_csv(path)
    ev = ev.dropna(subset=["est", "lo", "hi", "truth"])
    ev["sq"] = (ev["est"] - ev["truth"]) ** 2
    ev["cover"] = (ev["lo"] <= ev["truth"]) & (ev["truth"] <= ev["hi"])
    per_fit = ev.groupby(["family", "design", "method", "kind", "seed"]).agg(
        rmse=("sq", lambda s: float(np.sqrt(s.mean()))), coverage=("cover", "mean"))
    out = per_fit.groupby(["family", "design", "method", "kind"]).agg(
        rmse=("rmse", "mean"), coverage=("coverage", "mean"),
        coverage_se=("coverage", lambda c: float(c.std(ddof=1) / np.sqrt(len(c)))),
        seeds=("rmse", "size"))
    return out.unstack("kind")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="gaussian", choices=["gaussian", "binary"])
    p.add_argument("--designs", nargs="+", default=list(DESIGNS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--priors", nargs="+", default=["chosen", "independent"], choices=list(PRIORS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "prior_study.csv")
    p.add_argument("--summarize", type=Path)
    args = p.parse_args(argv)
    if args.summarize:
        with pd.option_context("display.width", 250, "display.max_rows", 500,
                               "display.max_columns", 20):
            print(summarize(args.summarize).round(4))
        return
    run(args.family, args.designs, args.seeds, args.priors, args.out)


if __name__ == "__main__":
    main()
