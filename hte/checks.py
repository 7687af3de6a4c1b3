"""Posterior predictive check: does the fitted model reproduce the data?

Cell means are replicated from the posterior: ``ybar_rep ~ N(mu_c, sigma_c^2 / n_c)`` for a
Gaussian outcome (``sigma_c`` the residual sd of the cell's variance group) and ``k_rep / n_c``
with ``k_rep ~ Binomial(n_c, p_c)`` for a binary one. Two comparisons that small, noisy cells
cannot fake:

- **bins**: per arm, cells grouped by the model's predicted mean into bins of about equal
  numbers of people; each bin's observed mean against the interval of its replicated means;
- **standardized cells**: each cell's observed mean minus its predicted mean, in units of its own
  replicated sd, so a cell of five people and a cell of five thousand are on one scale.

Plotting observed cell means against predicted ones instead shows a tilt even for a model that
fits (noisy small cells sit far out on the observed axis, their predictions are pooled in).

For an outcome that is never negative (or always between 0 and 1) the check also reports the
share of replicated individual values that are impossible (such as negative spend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from hte.cells import GAUSSIAN
from hte.result import Fit
from hte.variance import variance_groups

#: Replicated individual values outside the outcome's range for at least this share of people
#: are reported as impossible predictions.
IMPOSSIBLE_SHARE = 0.01
#: Bins per arm (fewer when there are fewer cells).
BINS = 10


@dataclass
class PredictiveCheck:
    """Results of :func:`predictive_check` (values; :meth:`summary` words them)."""

    cells: pd.DataFrame
    bins: pd.DataFrame
    interval: float
    binary: bool
    support: str | None = None
    impossible_share: float | None = None

    @property
    def cell_coverage(self) -> float:
        return float(self.cells["covered"].mean()) if len(self.cells) else float("nan")

    @property
    def bins_outside(self) -> int:
        return int((~self.bins["covered"]).sum())

    @property
    def bins_misfit(self) -> bool:
        """More bins outside their intervals than chance gives (binomial tail below 1%)."""
        n = len(self.bins)
        return n > 0 and sps.binom.sf(self.bins_outside - 1, n, 1 - self.interval) < 0.01

    @property
    def cells_misfit(self) -> bool:
        return len(self.cells) > 0 and self.cell_coverage < self.interval - 0.1

    @property
    def impossible(self) -> bool:
        return self.impossible_share is not None and self.impossible_share >= IMPOSSIBLE_SHARE

    @property
    def ok(self) -> bool:
        return not (self.bins_misfit or self.cells_misfit or self.impossible)

    def summary(self, outcome: str) -> str:
        """What the check found, in sentences that match the figure."""
        level = f"{self.interval:.0%}"
        parts = [
            f"Grouped by the model's prediction, the observed mean falls inside the model's "
            f"{level} interval in **{len(self.bins) - self.bins_outside} of {len(self.bins)} "
            f"bins**; cell by cell, **{self.cell_coverage:.0%} of {len(self.cells):,} cells** are "
            f"inside theirs (about {level} expected for both)."]
        if self.bins_misfit or self.cells_misfit:
            parts.append("That is fewer than expected: the model may miss something (an "
                         "intersection or a factor), or groups differ in ways it does not "
                         "describe. Look for a pattern in the cells outside their intervals.")
        else:
            parts.append("The model reproduces the means it was fitted to.")
        if self.impossible:
            never = ("negative" if self.support == "non-negative" else "below 0 or above 1")
            parts.append(
                f"**But its replicated values for single people are impossible for "
                f"{self.impossible_share:.0%} of them**: they are {never}, which '{outcome}' "
                "never is. The model describes averages, not individual people: trust it for "
                "means of groups with enough people, not for predicting a person.")
        return " ".join(parts)


def _cell_sigma(fit: Fit, idx: np.ndarray) -> np.ndarray:
    """Residual sd of every cell for the chosen draws (draws x cells), model scale."""
    draws = fit.draws
    cells = fit.cells.cells
    sigma = np.asarray(draws["sigma"])
    if "sigma_group" in draws:
        group = np.asarray(draws["sigma_group"])
        structure = variance_groups(fit.cells)
        if group.shape[-1] == structure.n_groups:
            flat = group.reshape(-1, group.shape[-1])[idx]
            return flat[:, structure.cell_group]
    if sigma.ndim == 3:                       # per arm
        flat = sigma.reshape(-1, sigma.shape[-1])[idx]
        return flat[:, cells["z"].to_numpy(np.int64)]
    return np.repeat(sigma.reshape(-1)[idx][:, None], len(cells), axis=1)  # one sd (old fits)


def _replicate(fit: Fit, n_draws: int, seed: int):
    """Predicted means (draws x cells), replicated cell means, and cell sds (outcome units)."""
    rng = np.random.default_rng(seed)
    cells = fit.cells.cells
    idx = rng.choice(fit.n_draws, size=min(n_draws, fit.n_draws), replace=False)
    x = fit.design.rows(fit.cells.level_codes(cells), cells["z"].to_numpy())
    eta = fit.beta[idx] @ x.T
    n = cells["n"].to_numpy(float)
    if fit.family == GAUSSIAN:
        sigma = _cell_sigma(fit, idx)
        rep = eta + rng.standard_normal(eta.shape) * sigma / np.sqrt(n)
        return fit.center + fit.scale * eta, fit.center + fit.scale * rep, fit.scale * sigma
    p = 1.0 / (1.0 + np.exp(-eta))
    return p, rng.binomial(n.astype(np.int64), p) / n, None


def replicated_cell_means(fit: Fit, n_draws: int = 200, seed: int = 0) -> np.ndarray:
    """Replicated cell means (n_draws x cells), in outcome units, cells as in ``fit.cells``."""
    return _replicate(fit, n_draws, seed)[1]


def _bins(arm: np.ndarray, predicted: np.ndarray, n: np.ndarray, count: int) -> np.ndarray:
    """Bin of every cell: per arm, by predicted mean, about equal people per bin."""
    out = np.zeros(len(arm), np.int64)
    for a in (0, 1):
        where = np.flatnonzero(arm == a)
        if not len(where):
            continue
        order = where[np.argsort(predicted[where], kind="stable")]
        k = min(count, max(1, len(order) // 5))       # at least ~5 cells per bin
        share = (np.cumsum(n[order]) - 0.5 * n[order]) / n[order].sum()
        out[order] = a * count + np.minimum((share * k).astype(np.int64), k - 1)
    return out


def predictive_check(fit: Fit, n_draws: int = 400, interval: float = 0.9, seed: int = 0,
                     bins: int = BINS) -> PredictiveCheck:
    """Bins and standardized cells against replicated data, and impossible values."""
    cells = fit.cells.cells
    mean, rep, sigma = _replicate(fit, n_draws, seed)
    tail = (1 - interval) / 2
    n = cells["n"].to_numpy(float)
    observed = (cells["mean"] if fit.family == GAUSSIAN
                else cells["successes"] / cells["n"]).to_numpy(float)
    arm = cells["z"].to_numpy(np.int64)
    out = cells[list(fit.cells.factors)].copy()
    out["arm"] = np.where(arm == 1, "treated", "control")
    out["n"] = cells["n"].to_numpy()
    out["observed"] = observed
    out["predicted"] = rep.mean(axis=0)
    out["lower"] = np.quantile(rep, tail, axis=0)
    out["upper"] = np.quantile(rep, 1 - tail, axis=0)
    out["covered"] = (out["observed"] >= out["lower"]) & (out["observed"] <= out["upper"])
    spread = rep.std(axis=0)
    out["standardized"] = np.where(spread > 0, (observed - out["predicted"]) / np.where(
        spread > 0, spread, 1.0), 0.0)

    which = _bins(arm, out["predicted"].to_numpy(), n, bins)
    rows = []
    for b in np.unique(which):
        members = which == b
        w = n[members] / n[members].sum()
        rep_b = rep[:, members] @ w
        obs_b = float(observed[members] @ w)
        lo, hi = np.quantile(rep_b, [tail, 1 - tail])
        rows.append({"arm": "treated" if arm[members][0] == 1 else "control",
                     "bin": int(b % bins) + 1, "cells": int(members.sum()),
                     "n": int(n[members].sum()), "predicted": float(rep_b.mean()),
                     "observed": obs_b, "lower": float(lo), "upper": float(hi),
                     "covered": bool(lo <= obs_b <= hi)})
    table = pd.DataFrame(rows, columns=["arm", "bin", "cells", "n", "predicted", "observed",
                                        "lower", "upper", "covered"])

    support = (fit.data_info.get("outcome_shape") or {}).get("support") \
        if fit.family == GAUSSIAN else None
    impossible = None
    if support and sigma is not None:
        below = sps.norm.cdf(-mean / sigma)
        if support == "between 0 and 1":
            below = below + sps.norm.sf((1.0 - mean) / sigma)
        impossible = float(below.mean(axis=0) @ n / n.sum())
    return PredictiveCheck(cells=out.reset_index(drop=True), bins=table, interval=interval,
                           binary=fit.family != GAUSSIAN, support=support,
                           impossible_share=impossible)


def cell_check(fit: Fit, n_draws: int = 200, interval: float = 0.9,
               seed: int = 0) -> pd.DataFrame:
    """Per cell: observed mean, replicated mean and interval, coverage, standardized residual.

    Columns: the factors, ``arm`` ("treated"/"control"), ``n``, ``observed``, ``predicted``,
    ``lower``, ``upper``, ``covered``, ``standardized``.
    """
    return predictive_check(fit, n_draws, interval, seed).cells
