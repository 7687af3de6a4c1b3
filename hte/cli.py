"""Command line: ``python -m hte fit DATA --outcome ... --treatment ... --treated ... --by ...``.

Prints a readable summary to standard output and, with ``--json``, writes the overall effect,
every level of every factor and every pair of factors' level combinations. Mistakes in the
input exit with status 2 and one plain sentence on standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hte.decisions import MIN_ARM, SMALL_ARM
from hte.errors import HteError

JSON_EFFECT_FIELDS = ["n", "n_treated", "n_control", "mean", "sd", "lower", "upper", "p_above",
                      "p_practically_zero", "p_below", "verdict", "extrapolated", "small_arm",
                      "raw_mean", "raw_se", "r_hat", "ess_bulk", "ess_tail", "mcse_p_above",
                      "mcse_p_practically_zero", "mcse_p_below"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hte",
        description="Who does the treatment work for? Multilevel models of varying treatment "
                    "effects, fitted with NUTS.")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit the model to a table and report subgroup effects",
                       description="Fit y ~ z + (1 + z || x1) + ... to DATA and report the effect "
                                   "for everybody, every factor level and every pair of levels.")
    f.add_argument("data", help="CSV, TSV, Parquet or Excel file, one row per person")
    f.add_argument("--outcome", required=True, help="outcome column")
    f.add_argument("--treatment", required=True, help="treatment column (two values)")
    f.add_argument("--treated", required=True, help="the treatment value that means treated")
    f.add_argument("--by", nargs="+", default=[], metavar="FACTOR",
                   help="pre-treatment factor columns")
    f.add_argument("--interact", nargs="+", default=[], metavar="F1:F2",
                   help="intersections to model, e.g. gender:race")
    f.add_argument("--family", choices=["auto", "gaussian", "binary"], default="auto")
    f.add_argument("--success", help="binary outcome: the value that counts as success")
    f.add_argument("--bin", nargs="+", default=[], metavar="COLUMN=N",
                   help="cut numeric factor columns into N quantile groups, e.g. age=4")
    f.add_argument("--threshold", type=float, default=0.0, metavar="D",
                   help="practical-significance threshold in outcome units (binary: a "
                        "difference in probability, 0.05 = 5 points); default 0")
    f.add_argument("--interval", type=float, default=0.9, help="credible interval level")
    f.add_argument("--cutoff", type=float, default=0.9,
                   help="probability a verdict needs (default 0.9)")
    f.add_argument("--min-arm", type=int, default=MIN_ARM, metavar="N",
                   help="people a group needs in each arm for a verdict; with fewer treated or "
                        f"control people it is 'extrapolated' (default {MIN_ARM})")
    f.add_argument("--prior-strength", default="moderate",
                   help="weak, moderate (default) or strong pooling of subgroup effects")
    f.add_argument("--chains", type=int, default=4)
    f.add_argument("--warmup", type=int, default=1000)
    f.add_argument("--draws", type=int, default=1000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--json", type=Path, metavar="OUT.json", help="write results as JSON")
    f.add_argument("--save", type=Path, metavar="FIT.npz", help="save the fit for later use")
    f.add_argument("--netcdf", type=Path, metavar="FIT.nc",
                   help="export the posterior as ArviZ InferenceData (netCDF)")
    f.add_argument("--quiet", action="store_true", help="no progress or summary output")
    return parser


def _bins(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, n = item.rpartition("=")
        if not name or not n.isdigit():
            raise HteError(f"'--bin {item}' should look like COLUMN=N, e.g. age=4.")
        out[name] = int(n)
    return out


def _clean(value: object) -> object:
    """JSON-safe scalars: NaN becomes null, numpy types become Python ones."""
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def effects_json(fit, table, min_arm: int = MIN_ARM) -> dict:
    """The documented JSON document for a fit and its effect table."""
    effects = []
    for _, row in table.iterrows():
        group = {f: row[f] for f in fit.factors if isinstance(row[f], str)}
        effects.append({"group": group, **{k: _clean(row[k]) for k in JSON_EFFECT_FIELDS}})
    d = fit.diagnostics
    return {
        "formula": fit.formula,
        "family": fit.family,
        "diagnostics": {
            "max_r_hat": _clean(d.max_r_hat), "min_ess_bulk": _clean(d.min_ess_bulk),
            "min_ess_tail": _clean(d.min_ess_tail),
            "effects_checked": d.effects_checked,
            "effects_max_r_hat": _clean(d.effects_max_r_hat),
            "effects_min_ess_bulk": _clean(d.effects_min_ess_bulk),
            "effects_min_ess_tail": _clean(d.effects_min_ess_tail),
            "chains": d.chains, "draws": d.draws,
            "divergences": int(d.divergences), "seconds": round(d.seconds, 3),
            "attempts": [{k: _clean(v) for k, v in a.items()} for a in d.attempts_log],
            "ok": d.ok, "verdict": d.verdict(), "advice": d.advice(),
            "unchecked": d.unchecked()},
        "decision": {"min_arm": int(min_arm), "small_arm": SMALL_ARM},
        "notices": list(fit.data_info.get("notices", [])),
        "effects": effects,
    }


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        last = [-1]

        def report(fraction: float, message: str) -> None:
            step = int(fraction * 10)
            if not quiet and step != last[0]:
                last[0] = step
                print(f"{fraction:4.0%} {message}", file=sys.stderr)
        return report

    def bar(fraction: float, message: str) -> None:
        filled = int(30 * fraction)
        print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {message[:60]:60s}", end="",
              file=sys.stderr, flush=True)
        if fraction >= 1:
            print(file=sys.stderr)
    return bar


def run_fit(args: argparse.Namespace) -> int:
    from hte.api import fit as fit_model
    from hte.data import Roles, prepare, read_table
    from hte.decisions import DecisionRule

    t0 = time.perf_counter()
    DecisionRule(args.threshold, args.interval, args.cutoff,
                 args.min_arm)  # refuse bad settings before fitting
    table = read_table(args.data)
    prepared = prepare(table, Roles(outcome=args.outcome, treatment=args.treatment,
                                    treated=args.treated, factors=tuple(args.by),
                                    family=args.family, success=args.success,
                                    bins=_bins(args.bin)))
    if not args.quiet:
        print(prepared.describe(), file=sys.stderr)
    fit = fit_model(prepared, interactions=args.interact, prior_strength=args.prior_strength,
                    chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed,
                    progress=_progress(args.quiet))
    for notice in fit.data_info.get("notices", []):
        print(f"note: {notice}", file=sys.stderr)
    table = fit.effect_table(threshold=args.threshold, interval=args.interval,
                             cutoff=args.cutoff, min_arm=args.min_arm)
    if args.json:
        args.json.write_text(json.dumps(effects_json(fit, table, args.min_arm), indent=2))
    if args.save:
        fit.save(args.save)
    if args.netcdf:
        fit.to_netcdf(args.netcdf)
    if not args.quiet:
        print(summary_text(fit, table, args.threshold, args.interval,
                           time.perf_counter() - t0, args.min_arm))
    return 0


def summary_text(fit, table, threshold: float, interval: float, seconds: float,
                 min_arm: int = MIN_ARM) -> str:
    """A plain-text report: model, diagnostics verdict, and the effect table."""
    from hte.decisions import verdict_text

    binary = fit.binary
    unit = " (difference in probability)" if binary else ""
    lines = [f"Model: {fit.formula}", fit.diagnostics.verdict(), "",
             f"Treatment effects{unit}, {interval:.0%} intervals, threshold {threshold:g}:"]
    width = max(len(s) for s in table["label"])
    lines.append(f"  {'group':{width}s} {'n':>7s} {'mean':>8s} {'lower':>8s} {'upper':>8s} "
                 f"{'P(>d)':>6s} {'P(~0)':>6s} {'P(<-d)':>6s}  verdict")
    for _, r in table.iterrows():
        lines.append(f"  {r['label']:{width}s} {r['n']:7d} {r['mean']:8.3f} {r['lower']:8.3f} "
                     f"{r['upper']:8.3f} {r['p_above']:6.2f} {r['p_practically_zero']:6.2f} "
                     f"{r['p_below']:6.2f}  {verdict_text(r, min_arm)}")
    if table["extrapolated"].any():
        lines.append(f"\nExtrapolated: fewer than {min_arm:,} treated or control people, so the "
                     "model borrows the estimate from other groups and gives no verdict.")
    lines.append(f"\nDone in {seconds:.1f} s.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fit":
            return run_fit(args)
    except HteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an engine bug, not the user's fault: keep the trace on request
        if os.environ.get("HTE_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {err}. This is a bug in hte; run again "
              "with HTE_DEBUG=1 for details.", file=sys.stderr)
        return 1
    return 0
