"""Aggregate people into cells: one row per combination of factor levels and arm.

A *cell* is every observed combination of the factor levels and the arm (treated or control).
Its sufficient statistics carry everything the likelihood needs, so fitting cost depends on the
number of cells, not on the number of rows:

- Gaussian outcome: ``n``, ``mean`` and ``ss``, the within-cell sum of squared deviations from
  the cell mean;
- binary outcome: ``n`` and ``successes``.

A *covariate cell* drops the arm: one row per combination of factor levels, with the number of
people in each arm. Group effects are averages over covariate cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hte.errors import DataError

GAUSSIAN = "gaussian"
BINARY = "binary"
FAMILIES = (GAUSSIAN, BINARY)


@dataclass(frozen=True)
class CellTable:
    """Sufficient statistics of an experiment, one row per (factor levels, arm).

    ``cells`` has one column per factor (level names as strings), ``z`` (1 treated, 0 control),
    ``n``, and either ``mean`` and ``ss`` (Gaussian) or ``successes`` (binary). ``levels`` gives the
    order of each factor's levels, which is the order used everywhere downstream.
    """

    family: str
    factors: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]
    cells: pd.DataFrame

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, not {self.family!r}")
        stats = ["mean", "ss"] if self.family == GAUSSIAN else ["successes"]
        missing = [c for c in [*self.factors, "z", "n", *stats] if c not in self.cells.columns]
        if missing:
            raise ValueError(f"cell table lacks columns {missing}")

    @property
    def n_rows(self) -> int:
        """Number of people behind the table."""
        return int(self.cells["n"].sum())

    def covariate_cells(self) -> pd.DataFrame:
        """One row per observed combination of factor levels, with people per arm.

        Columns: the factors, ``n_treated``, ``n_control``, ``n`` (both arms).
        """
        arms = self.cells.assign(arm=np.where(self.cells["z"] == 1, "n_treated", "n_control"))
        if not self.factors:
            wide = arms.pivot_table(index=np.zeros(len(arms)), columns="arm", values="n",
                                    aggfunc="sum", fill_value=0)
            wide = wide.reset_index(drop=True)
        else:
            wide = arms.pivot_table(index=list(self.factors), columns="arm", values="n",
                                    aggfunc="sum", fill_value=0, observed=True).reset_index()
        for col in ("n_treated", "n_control"):
            if col not in wide.columns:
                wide[col] = 0
        wide.columns.name = None
        wide["n_treated"] = wide["n_treated"].astype(np.int64)
        wide["n_control"] = wide["n_control"].astype(np.int64)
        wide["n"] = wide["n_treated"] + wide["n_control"]
        return self._sorted(wide[[*self.factors, "n_treated", "n_control", "n"]])

    def level_codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer level codes (rows x factors) of ``frame``'s factor columns (``levels`` order)."""
        codes = np.zeros((len(frame), len(self.factors)), dtype=np.int64)
        for j, f in enumerate(self.factors):
            lookup = {lev: i for i, lev in enumerate(self.levels[f])}
            values = frame[f].astype(str)
            unknown = sorted(set(values) - set(lookup))
            if unknown:
                raise DataError(
                    f"Column '{f}' has levels {unknown[:5]} that the model was not fitted with."
                )
            codes[:, j] = values.map(lookup).to_numpy()
        return codes

    def _sorted(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not self.factors or frame.empty:
            return frame.reset_index(drop=True)
        order = np.lexsort(self.level_codes(frame).T[::-1])
        return frame.iloc[order].reset_index(drop=True)

    def level_counts(self) -> pd.DataFrame:
        """People per level of each factor, by arm: ``factor``, ``level``, ``treated``, ``control``.

        Levels in their order (``levels``), factors in theirs; a level nobody has counts 0.
        """
        rows = []
        for f in self.factors:
            n = self.cells.groupby([f, "z"], observed=True)["n"].sum()
            for level in self.levels[f]:
                rows.append({"factor": f, "level": level,
                             "treated": int(n.get((level, 1), 0)),
                             "control": int(n.get((level, 0), 0))})
        return pd.DataFrame(rows, columns=["factor", "level", "treated", "control"])

    def group_arm_stats(self, by: tuple[str, ...] = ()) -> pd.DataFrame:
        """Per group of ``by`` and arm: ``n``, outcome mean and within-group variance.

        These are the raw (unpooled) statistics the pooled estimates are compared with.
        """
        c = self.cells
        keys = [*by, "z"]
        y_sum = c["n"] * c["mean"] if self.family == GAUSSIAN else c["successes"].astype(float)
        work = c.assign(_sum=y_sum)
        g = work.groupby(keys, observed=True, sort=False)[["n", "_sum"]].sum().reset_index()
        g["mean"] = g["_sum"] / g["n"]
        if self.family == GAUSSIAN:
            # Pooled sum of squares: within cells plus between cell means and the group mean
            # (no cancellation from subtracting large raw second moments).
            merged = work.merge(g[[*keys, "mean"]].rename(columns={"mean": "_gm"}), on=keys)
            merged["_ss"] = merged["ss"] + merged["n"] * (merged["mean"] - merged["_gm"]) ** 2
            ss = merged.groupby(keys, observed=True, sort=False)["_ss"].sum().reset_index()
            g = g.merge(ss, on=keys)
        else:
            g["_ss"] = g["_sum"] * (1 - g["mean"])  # sum of (y - p)^2 for 0/1 outcomes
        g["var"] = np.where(g["n"] > 1, g["_ss"] / (g["n"] - 1).clip(lower=1), np.nan)
        return g[[*keys, "n", "mean", "var"]]


def aggregate(frame: pd.DataFrame, factors: tuple[str, ...] | list[str], family: str,
              levels: dict[str, tuple[str, ...]] | None = None) -> CellTable:
    """Collapse person rows to cells.

    ``frame`` holds the factor columns, ``_z`` (0/1) and ``_y`` (float; 0/1 for binary).
    ``levels`` fixes the level order; by default each factor's levels are sorted as strings.
    """
    factors = tuple(factors)
    work = pd.DataFrame({f: frame[f].astype(str) for f in factors})
    work["z"] = frame["_z"].astype(np.int64).to_numpy()
    y = frame["_y"].astype(np.float64).to_numpy()
    work["_y"] = y
    keys = [*factors, "z"]
    grouped = work.groupby(keys, sort=False, observed=True)["_y"]
    if family == GAUSSIAN:
        stats = grouped.agg(n="count", mean="mean").reset_index()
        # Within-cell sum of squares around the cell mean, computed from centred values.
        centred = y - grouped.transform("mean").to_numpy()
        ss = (work.assign(_c2=centred**2).groupby(keys, sort=False, observed=True)["_c2"]
              .sum().reset_index(drop=True))
        stats["ss"] = ss.to_numpy()
    else:
        stats = grouped.agg(n="count", successes="sum").reset_index()
        stats["successes"] = stats["successes"].round().astype(np.int64)
    stats["n"] = stats["n"].astype(np.int64)
    if levels is None:
        levels = {f: tuple(sorted(work[f].unique())) for f in factors}
    table = CellTable(family=family, factors=factors, levels=dict(levels), cells=stats)
    return CellTable(family=family, factors=factors, levels=dict(levels),
                     cells=_sort_cells(table))


def _sort_cells(table: CellTable) -> pd.DataFrame:
    cells = table.cells
    if not table.factors:
        return cells.sort_values("z").reset_index(drop=True)
    codes = table.level_codes(cells)
    order = np.lexsort(np.column_stack([codes, cells["z"].to_numpy()]).T[::-1])
    return cells.iloc[order].reset_index(drop=True)


def from_summaries(cells: pd.DataFrame, factors: tuple[str, ...] | list[str], family: str,
                   levels: dict[str, tuple[str, ...]] | None = None) -> CellTable:
    """Build a cell table from per-cell summaries (``n``, ``mean``, ``sd`` or ``successes``).

    ``cells`` has the factor columns, ``z`` (0/1), ``n`` and the family's statistics; for a
    Gaussian outcome ``sd`` is the within-cell sample standard deviation (n - 1 denominator).
    Rows with the same levels and arm are pooled exactly. Validation of user tables happens in
    :mod:`hte.data`; this function trusts its input.
    """
    factors = tuple(factors)
    work = pd.DataFrame({f: cells[f].astype(str) for f in factors})
    work["z"] = cells["z"].astype(np.int64).to_numpy()
    n = cells["n"].astype(np.float64).to_numpy()
    work["n"] = n
    keys = [*factors, "z"]
    if family == GAUSSIAN:
        mean = cells["mean"].astype(np.float64).to_numpy()
        sd = cells["sd"].astype(np.float64).fillna(0.0).to_numpy() if "sd" in cells else 0.0 * n
        # Pooled around the pooled mean: SS = sum[(n_i - 1) sd_i^2 + n_i (mean_i - mean)^2],
        # exact algebra without the cancellation of sum(n_i mean_i^2) - n mean^2.
        # The pooled mean is a reference (the first row's mean) plus the weighted mean of the
        # deviations from it, which keeps its digits when the means are large and close.
        work["_mean"] = mean
        grouped = work.groupby(keys, sort=False, observed=True)
        ref = grouped["_mean"].transform("first").to_numpy()
        work["_dev"] = n * (mean - ref)
        pooled = ref + (grouped["_dev"].transform("sum") / grouped["n"].transform("sum")).to_numpy()
        work["_pooled"] = pooled
        work["_ss"] = np.where(n > 1, (n - 1) * sd**2, 0.0) + n * (mean - pooled) ** 2
        g = (work.groupby(keys, sort=False, observed=True)
             .agg(n=("n", "sum"), mean=("_pooled", "first"), ss=("_ss", "sum")).reset_index())
        out = g[[*keys, "n", "mean", "ss"]].copy()
    else:
        work["successes"] = cells["successes"].astype(np.float64).to_numpy()
        out = work.groupby(keys, sort=False, observed=True)[["n", "successes"]].sum().reset_index()
        out["successes"] = out["successes"].round().astype(np.int64)
    out["n"] = out["n"].round().astype(np.int64)
    if levels is None:
        levels = {f: tuple(sorted(out[f].unique())) for f in factors}
    table = CellTable(family=family, factors=factors, levels=dict(levels), cells=out)
    return CellTable(family=family, factors=factors, levels=dict(levels),
                     cells=_sort_cells(table))
