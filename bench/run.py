"""Engine benchmark: the reference model at 10k, 100k and 1M rows, and the binary version.

    python bench/run.py            # everything (a few minutes on 2 cores)
    python bench/run.py --quick    # 10k Gaussian only

Reference model: the six sample factors (2-4 levels each) plus gender x race, Gaussian outcome,
default sampler settings (4 chains x 1000 warm-up x 1000 draws). Reports, per case, the median
over repeated fits of the sampling wall time (warm-up + draws; compilation reported separately),
divergences, max R-hat and min bulk ESS over all parameters and over every group effect (overall,
each level, each pair of factors). The 1M-row end-to-end case (CSV file -> effects table) runs
in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hte.simulate import BaselineSpec, EffectSpec, simulate  # noqa: E402

FACTORS = ["gender", "race", "generation", "married", "kids", "party"]
EFFECT = EffectSpec(base=0.15, levels={("gender", "Female"): 0.05, ("gender", "Male"): -0.05,
                                       ("party", "Democrat"): 0.1, ("party", "Republican"): -0.1},
                    intersections={(("race", "Black"), ("gender", "Male")): 0.8})
BASELINE = BaselineSpec(intercept=5.0, levels={("party", "Democrat"): 1.0,
                                               ("party", "Republican"): -1.0}, noise_sd=1.5)
BINARY_EFFECT = EffectSpec(base=0.1, intersections={(("race", "Black"), ("gender", "Male")): 1.0})
BINARY_BASELINE = BaselineSpec(intercept=-0.4, levels={("party", "Democrat"): 0.5,
                                                       ("party", "Republican"): -0.5})


def experiment(n: int, family: str = "gaussian", seed: int = 0):
    if family == "gaussian":
        return simulate(n, seed=seed, effect=EFFECT, baseline=BASELINE).data
    return simulate(n, family="binary", seed=seed, effect=BINARY_EFFECT,
                    baseline=BINARY_BASELINE).data


def group_effect_checks(fit) -> dict:
    """Max R-hat and min bulk ESS over the draws of every group effect."""
    from hte.diagnostics import parameter_table

    groups = [{}]
    for f in fit.factors:
        groups += fit.groups(f)
    for i, a in enumerate(fit.factors):
        for b in fit.factors[i + 1:]:
            groups += fit.groups([a, b])
    draws = fit.effect_draws(groups)
    chains = fit.settings.chains
    table = parameter_table({"effect": draws.reshape(chains, -1, draws.shape[1])})
    return {"groups": len(groups), "max_r_hat": float(table["r_hat"].max()),
            "min_ess_bulk": float(table["ess_bulk"].min())}


def fit_case(n: int, family: str, repeats: int, seed: int = 0) -> dict:
    import hte

    data = experiment(n, family, seed)
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fit = hte.fit(data, outcome="outcome", treatment="treatment", treated="treatment",
                      by=FACTORS, interactions=["gender:race"], seed=r)
        wall = time.perf_counter() - t0
        d = fit.diagnostics
        runs.append({"sampling_s": d.seconds, "compile_s": d.seconds_compile, "wall_s": wall,
                     "divergences": d.divergences, "attempts": d.attempts,
                     "max_r_hat": d.max_r_hat, "min_ess_bulk": d.min_ess_bulk,
                     "min_ess_tail": d.min_ess_tail, **{f"effects_{k}": v for k, v in
                                                        group_effect_checks(fit).items()}})
    return {
        "rows": n, "family": family, "cells": len(fit.cells.cells), "repeats": repeats,
        "median_sampling_s": statistics.median(r["sampling_s"] for r in runs),
        "compile_s_first": runs[0]["compile_s"],
        "compile_s_later": max(r["compile_s"] for r in runs[1:]) if repeats > 1 else None,
        "divergences": [r["divergences"] for r in runs],
        "attempts": [r["attempts"] for r in runs],
        "max_r_hat": max(r["max_r_hat"] for r in runs),
        "min_ess_bulk": min(r["min_ess_bulk"] for r in runs),
        "min_ess_tail": min(r["min_ess_tail"] for r in runs),
        "effects_max_r_hat": max(r["effects_max_r_hat"] for r in runs),
        "effects_min_ess_bulk": min(r["effects_min_ess_bulk"] for r in runs),
        "effects_groups": runs[0]["effects_groups"],
    }


def end_to_end(path: str) -> None:
    """CSV -> effects table in this process; prints timings and peak memory as JSON."""
    import hte
    from hte.data import Roles, prepare, read_table

    t0 = time.perf_counter()
    table = read_table(path)
    t_read = time.perf_counter() - t0
    prepared = prepare(table, Roles(outcome="outcome", treatment="treatment",
                                    treated="treatment", factors=tuple(FACTORS)))
    t_prep = time.perf_counter() - t0 - t_read
    fit = hte.fit(prepared, interactions=["gender:race"])
    effects = fit.effect_table(threshold=0.2)
    total = time.perf_counter() - t0
    print(json.dumps({
        "rows": len(table), "read_s": t_read, "prepare_s": t_prep,
        "sampling_s": fit.diagnostics.seconds, "compile_s": fit.diagnostics.seconds_compile,
        "total_s": total, "effects_rows": len(effects),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def end_to_end_case(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment.csv"
        experiment(n, seed=7).to_csv(path, index=False)
        size_mb = path.stat().st_size / 2**20
        # Twice: the first run may compile (cold cache); the second is what a user sees next.
        results = []
        for _ in range(2):
            out = subprocess.run([sys.executable, __file__, "--end-to-end", str(path)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"csv_mb": size_mb, "first": results[0], "second": results[1]}


def machine() -> dict:
    import os

    import jax
    import numpyro

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "jax": jax.__version__,
            "numpyro": numpyro.__version__}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-to-end", metavar="CSV")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--cases", nargs="+", metavar="ROWS:FAMILY",
                        help="only these fit cases, e.g. 10000:gaussian 10000:binary "
                             "(no end-to-end run)")
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args.end_to_end)
        return
    results: dict = {"machine": machine(), "cases": []}
    cases = [(10_000, "gaussian")]
    if args.cases:
        cases = [(int(c.split(":")[0]), c.split(":")[1]) for c in args.cases]
        args.quick = True
    elif not args.quick:
        cases += [(100_000, "gaussian"), (1_000_000, "gaussian"), (10_000, "binary")]
    for n, family in cases:
        case = fit_case(n, family, args.repeats)
        results["cases"].append(case)
        print(json.dumps(case), flush=True)
    if not args.quick:
        results["end_to_end_1m"] = end_to_end_case(1_000_000)
        print(json.dumps(results["end_to_end_1m"]), flush=True)
        base = results["cases"][0]["median_sampling_s"]
        results["sampling_ratio_vs_10k"] = {
            str(c["rows"]): c["median_sampling_s"] / base
            for c in results["cases"] if c["family"] == "gaussian"}
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
