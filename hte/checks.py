"""Posterior predictive check of the cell means: does the fitted model reproduce the data?

For each cell (factor levels x arm) the observed mean is compared with means replicated from
the posterior: ``ybar_rep ~ N(mu_c, sigma^2 / n_c)`` for a Gaussian outcome and
``k_rep / n_c`` with ``k_rep ~ Binomial(n_c, p_c)`` for a binary one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hte.cells import GAUSSIAN
from hte.result import Fit


def replicated_cell_means(fit: Fit, n_draws: int = 200, seed: int = 0) -> np.ndarray:
    """Replicated cell means (n_draws x cells), in outcome units, cells as in ``fit.cells``."""
    rng = np.random.default_rng(seed)
    cells = fit.cells.cells
    idx = rng.choice(fit.n_draws, size=min(n_draws, fit.n_draws), replace=False)
    beta = fit.beta[idx]
    x = fit.design.rows(fit.cells.level_codes(cells), cells["z"].to_numpy())
    eta = beta @ x.T
    n = cells["n"].to_numpy(float)
    if fit.family == GAUSSIAN:
        sigma = fit.draws["sigma"].reshape(-1)[idx][:, None]
        rep = eta + rng.standard_normal(eta.shape) * sigma / np.sqrt(n)
        return fit.center + fit.scale * rep
    p = 1.0 / (1.0 + np.exp(-eta))
    return rng.binomial(n.astype(np.int64), p) / n


def cell_check(fit: Fit, n_draws: int = 200, interval: float = 0.9,
               seed: int = 0) -> pd.DataFrame:
    """Per cell: observed mean, replicated mean and interval, and whether the interval covers it.

    Columns: the factors, ``arm`` ("treated"/"control"), ``n``, ``observed``, ``predicted``,
    ``lower``, ``upper``, ``covered``.
    """
    cells = fit.cells.cells
    rep = replicated_cell_means(fit, n_draws, seed)
    tail = (1 - interval) / 2
    observed = (cells["mean"] if fit.family == GAUSSIAN
                else cells["successes"] / cells["n"]).to_numpy(float)
    out = cells[list(fit.cells.factors)].copy()
    out["arm"] = np.where(cells["z"] == 1, "treated", "control")
    out["n"] = cells["n"].to_numpy()
    out["observed"] = observed
    out["predicted"] = rep.mean(axis=0)
    out["lower"] = np.quantile(rep, tail, axis=0)
    out["upper"] = np.quantile(rep, 1 - tail, axis=0)
    out["covered"] = (out["observed"] >= out["lower"]) & (out["observed"] <= out["upper"])
    return out.reset_index(drop=True)
