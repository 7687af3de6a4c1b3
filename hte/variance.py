"""How the residual variance of a continuous outcome follows the data; what the outcome looks like.

The Gaussian model gives every *variance group* its own residual sd (docs/model.md, "Residual
variance"). The groups are always the two arms, and in addition the levels of up to
:data:`MAX_VARIANCE_FACTORS` factors whose within-cell variances clearly differ (chosen here,
from the within-cell sums of squares the cells already keep):

    log sigma_g = log sigma_arm(g) + sum_f Q_f e_(f, arm(g)) [level_f(g)]

with ``Q_f`` the zero-sum basis of factor ``f``'s levels and ``e ~ N(0, 1)`` on the log scale.
The likelihood stays exact: each group keeps its own cross-products of the design.

:func:`outcome_shape` describes the outcome's distribution (share of zeros, skewness, natural
bounds) for the sentence on the Data page and for the predictive check's impossible values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from hte.cells import GAUSSIAN, CellTable
from hte.design import zero_sum_basis

#: At most this many factors get their own residual sd per level (beyond the arms).
MAX_VARIANCE_FACTORS = 2
#: At most this many variance groups: the gradient costs about groups x P^2 (bench/README.md).
MAX_VARIANCE_GROUPS = 24
#: A factor's levels get their own residual sd only when their sds differ by at least this ratio
#: (within an arm) ...
MIN_SD_RATIO = 1.25
#: ... and the difference is this clear (upper tail of Bartlett's chi-square statistic).
MAX_P_VALUE = 1e-4
#: Levels with fewer within-cell degrees of freedom than this do not count towards the ratio.
MIN_LEVEL_DF = 30
#: Prior sd of the log-sd deviations of a variance factor's levels.
DEVIATION_SD = 1.0


@dataclass(frozen=True)
class VarianceGroups:
    """The residual-sd structure of a Gaussian fit.

    ``factors``: the factors whose levels get their own sd (besides the arm). ``cell_group``:
    the variance group of each row of the cell table. ``arm``: the arm (0 control, 1 treated)
    of each group. ``deviation``: (groups x J) design of the log-sd deviations. ``labels``: one
    readable name per group ("control", "treated, segment = $1,000+").
    """

    factors: tuple[str, ...]
    cell_group: np.ndarray
    arm: np.ndarray
    deviation: np.ndarray
    labels: tuple[str, ...]

    @property
    def n_groups(self) -> int:
        return len(self.arm)


def _bartlett(ss: np.ndarray, df: np.ndarray) -> float:
    """Bartlett's statistic (without its small-sample correction) for one stratum's levels."""
    keep = (df > 0) & (ss > 0)
    ss, df = ss[keep], df[keep]
    if len(df) < 2:
        return 0.0
    pooled = ss.sum() / df.sum()
    return float(df.sum() * np.log(pooled) - np.sum(df * np.log(ss / df)))


@dataclass(frozen=True)
class Heterogeneity:
    """How clearly and how much a factor's levels differ in residual sd (within strata)."""

    p_value: float
    ratio: float          # largest max/min sd ratio between levels with enough data
    statistic: float      # Bartlett's statistic (corrected for kurtosis) per degree of freedom


def kurtosis_factor(table: CellTable) -> float:
    """How much more log variances vary by chance than under normal data: (kurtosis - 1) / 2.

    Bartlett's statistic assumes normal data; under kurtosis k it is inflated by about
    (k - 1) / 2 (Box, 1953), so a skewed outcome would make nearly every factor look
    heterogeneous. The factor is estimated from the cells themselves: their log variances,
    weighted by degrees of freedom, are regressed on the arm and every factor (additively); the
    residual mean square estimates k - 1 (2 for normal data). At least 1; 1 when fewer than
    three residual degrees of freedom are left.
    """
    c = table.cells
    df = (c["n"] - 1).to_numpy(float)
    ss = c["ss"].to_numpy(float)
    use = (df >= 4) & (ss > 0)
    if use.sum() < 3:
        return 1.0
    cols = [np.ones(use.sum()), c["z"].to_numpy(float)[use]]
    codes = table.level_codes(c)[use]
    for j in range(codes.shape[1]):
        for level in np.unique(codes[:, j])[1:]:
            cols.append((codes[:, j] == level).astype(float))
    x = np.column_stack(cols)
    w = np.sqrt(df[use])
    y = np.log(ss[use] / df[use])
    coef, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    dof = int(use.sum()) - np.linalg.matrix_rank(x)
    if dof < 3:
        return 1.0
    rss = float(np.sum((w * (y - x @ coef)) ** 2))
    return max(1.0, rss / dof / 2.0)


def heterogeneity(cells: pd.DataFrame, strata: list[str], factor: str,
                  kurtosis: float = 1.0) -> Heterogeneity:
    """Do the levels of ``factor`` differ in residual sd within each stratum (arm x chosen)?

    Bartlett's test on the within-cell sums of squares pooled per level, with its statistic
    divided by ``kurtosis`` (:func:`kurtosis_factor`). The ratio compares the levels' pooled
    sds, counting only levels with at least :data:`MIN_LEVEL_DF` degrees of freedom.
    """
    work = cells.assign(_df=(cells["n"] - 1).clip(lower=0))
    g = work.groupby([*strata, factor], observed=True)[["ss", "_df"]].sum().reset_index()
    ratio = 1.0
    stat, dof = 0.0, 0
    for _, s in g.groupby(strata, observed=True):
        ss, df = s["ss"].to_numpy(float), s["_df"].to_numpy(float)
        stat += _bartlett(ss, df)
        dof += max(int(np.sum((df > 0) & (ss > 0))) - 1, 0)
        big = (df >= MIN_LEVEL_DF) & (ss > 0)
        if big.sum() >= 2:
            sd = np.sqrt(ss[big] / df[big])
            ratio = max(ratio, float(sd.max() / sd.min()))
    if dof == 0:
        return Heterogeneity(p_value=1.0, ratio=ratio, statistic=0.0)
    stat /= kurtosis
    return Heterogeneity(p_value=float(sps.chi2.sf(stat, dof)), ratio=ratio,
                         statistic=stat / dof)


def choose_variance_factors(table: CellTable) -> tuple[str, ...]:
    """The factors whose levels clearly differ in residual sd, most different first.

    Greedy: at each step the factor with the largest statistic among those that are both clear
    (p below :data:`MAX_P_VALUE`) and material (sd ratio at least :data:`MIN_SD_RATIO`), as
    long as the groups stay within :data:`MAX_VARIANCE_GROUPS`.
    """
    if table.family != GAUSSIAN or not table.factors:
        return ()
    cells = table.cells
    kurtosis = kurtosis_factor(table)
    chosen: list[str] = []
    while len(chosen) < MAX_VARIANCE_FACTORS:
        best, best_stat = None, 0.0
        for f in table.factors:
            if f in chosen:
                continue
            groups = len(cells[["z", *chosen, f]].drop_duplicates())
            if groups > MAX_VARIANCE_GROUPS:
                continue
            h = heterogeneity(cells, ["z", *chosen], f, kurtosis)
            if h.ratio < MIN_SD_RATIO or h.p_value > MAX_P_VALUE:
                continue
            if h.statistic > best_stat:
                best, best_stat = f, h.statistic
        if best is None:
            break
        chosen.append(best)
    return tuple(chosen)


def variance_groups(table: CellTable, factors: tuple[str, ...] | None = None) -> VarianceGroups:
    """The variance groups of ``table``'s cells: arm x levels of ``factors`` (chosen if None)."""
    if factors is None:
        factors = choose_variance_factors(table)
    cells = table.cells
    z = cells["z"].to_numpy(np.int64)
    if factors:
        codes = table.level_codes(cells)[:, [table.factors.index(f) for f in factors]]
    else:
        codes = np.zeros((len(cells), 0), np.int64)
    keys = np.column_stack([z, codes])
    uniq, cell_group = np.unique(keys, axis=0, return_inverse=True)
    cell_group = cell_group.reshape(-1)
    arm = uniq[:, 0]
    bases = [zero_sum_basis(len(table.levels[f])) for f in factors]
    width = sum(q.shape[1] for q in bases)
    deviation = np.zeros((len(uniq), 2 * width))
    for g, key in enumerate(uniq):
        col = key[0] * width
        for j, q in enumerate(bases):
            deviation[g, col:col + q.shape[1]] = q[key[1 + j]]
            col += q.shape[1]
    labels = tuple(
        ", ".join(["treated" if key[0] == 1 else "control",
                   *(f"{f} = {table.levels[f][key[1 + j]]}" for j, f in enumerate(factors))])
        for key in uniq)
    return VarianceGroups(factors=tuple(factors), cell_group=cell_group, arm=arm,
                          deviation=deviation, labels=labels)


# -- the outcome's distribution ---------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeShape:
    """What a continuous outcome's distribution looks like (None where unknown).

    ``support`` is "non-negative" when every value is at least 0, "between 0 and 1" when every
    value is in [0, 1] (and not all are 0 or 1), else None.
    """

    zero_share: float | None
    skewness: float | None
    support: str | None

    @property
    def unusual(self) -> bool:
        """Mostly zeros or strongly skewed: worth a sentence on how it is modelled."""
        return ((self.zero_share is not None and self.zero_share > 0.5)
                or (self.skewness is not None and abs(self.skewness) > 2))


def outcome_shape(y: np.ndarray | None) -> OutcomeShape:
    """Share of zeros, sample skewness and natural bounds of the outcome values ``y``."""
    if y is None or len(y) == 0:
        return OutcomeShape(None, None, None)
    y = np.asarray(y, float)
    sd = y.std()
    skew = float(np.mean((y - y.mean()) ** 3) / sd**3) if sd > 0 else 0.0
    low, high = float(y.min()), float(y.max())
    support = None
    if low >= 0:
        support = "between 0 and 1" if high <= 1 else "non-negative"
    return OutcomeShape(zero_share=float(np.mean(y == 0)), skewness=skew, support=support)


def outcome_note(shape: OutcomeShape, outcome: str) -> str | None:
    """A sentence on how an unusual continuous outcome is modelled and what that means."""
    if not shape.unusual:
        return None
    what = []
    if shape.zero_share is not None and shape.zero_share > 0.5:
        what.append(f"{shape.zero_share:.0%} of the values are 0")
    if shape.skewness is not None and abs(shape.skewness) > 2:
        what.append(f"the distribution is {'right' if shape.skewness > 0 else 'left'}-skewed "
                    f"(skewness {shape.skewness:.1f})")
    impossible = {"non-negative": "negative", "between 0 and 1": "below 0 or above 1"}
    example = impossible.get(shape.support or "", "")
    return (f"'{outcome}' is far from bell-shaped: {' and '.join(what)}. It is modelled by its "
            "mean: a normal model for the average per group, with a residual spread of its own "
            "for each arm (and for groups whose spread clearly differs), so the effects are "
            "differences in means. Intervals for the means are honest for groups with enough "
            "people (averages of many values are close to normal), but the model says nothing "
            "reliable about single people"
            + (f": its individual predictions can be {example}, which '{outcome}' never is."
               if example else ".")
            + " Small groups with a few extreme values can still surprise.")
