"""Treatment effects for groups, from the posterior draws of the cell-level effects.

The effect of a *covariate cell* (one combination of factor levels) is the difference between its
expected outcome treated and untreated: ``x_c(1) . beta - x_c(0) . beta`` for a Gaussian outcome,
``logit^-1(eta_c(1)) - logit^-1(eta_c(0))`` for a binary one (a difference in probability).
A *group* (women; Black men; everybody) is a set of covariate cells, and its effect is the
average of its cells' effects weighted by how many people are in each cell: the average treatment
effect among the people of that group in the sample (poststratification). With target-population
weights the same average uses population counts instead. Contrasts between groups are computed
draw by draw from the same joint draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hte.cells import GAUSSIAN, CellTable
from hte.design import Design
from hte.errors import SpecError

#: Cells per block when multiplying draws by weights (bounds memory to draws x BLOCK doubles).
BLOCK = 512


def cell_effect_draws(beta: np.ndarray, design: Design, codes: np.ndarray, family: str,
                      scale: float) -> np.ndarray:
    """Effect draws (draws x cells) of the covariate cells whose level codes are ``codes``."""
    if family == GAUSSIAN:
        return (beta @ design.effect_rows(codes).T) * scale
    eta1 = beta @ design.rows(codes, np.ones(len(codes))).T
    eta0 = beta @ design.rows(codes, np.zeros(len(codes))).T
    return _expit(eta1) - _expit(eta0)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def weighted_group_draws(beta: np.ndarray, design: Design, codes: np.ndarray, family: str,
                         scale: float, weights: np.ndarray) -> np.ndarray:
    """Group effect draws (draws x groups) = cell effects @ column-normalized ``weights``.

    ``weights`` is (cells x groups); each column is normalized to sum to one. Cells are processed
    in blocks so memory stays at draws x BLOCK.
    """
    w = np.asarray(weights, dtype=np.float64)
    totals = w.sum(axis=0)
    if np.any(totals <= 0):
        raise SpecError("A group has no people (or no population weight), so it has no effect "
                        "to estimate.")
    w = w / totals
    out = np.zeros((beta.shape[0], w.shape[1]))
    for start in range(0, len(codes), BLOCK):
        sl = slice(start, start + BLOCK)
        out += cell_effect_draws(beta, design, codes[sl], family, scale) @ w[sl]
    return out


def group_label(group: Mapping[str, str]) -> str:
    """'gender = Male, race = Black', or 'Everyone' for the empty group."""
    if not group:
        return "Everyone"
    return ", ".join(f"{k} = {v}" for k, v in group.items())


def group_membership(frame: pd.DataFrame, group: Mapping[str, str]) -> np.ndarray:
    """Boolean mask of the rows of ``frame`` (covariate cells) in ``group``."""
    mask = np.ones(len(frame), dtype=bool)
    for factor, level in group.items():
        if factor not in frame.columns:
            raise SpecError(f"'{factor}' is not one of the model's factors "
                            f"({', '.join(c for c in frame.columns if not c.startswith('n'))}).")
        mask &= (frame[factor].astype(str) == str(level)).to_numpy()
    return mask


def groups_of(cells: pd.DataFrame, by: Sequence[str], levels: Mapping[str, Sequence[str]],
              weight: str = "n") -> list[dict[str, str]]:
    """Every combination of levels of ``by`` that has weight in ``cells``, in level order."""
    if not by:
        return [{}]
    present = cells.loc[cells[weight] > 0, list(by)].astype(str).drop_duplicates()
    order = {f: {lev: i for i, lev in enumerate(levels[f])} for f in by}
    keys = present.apply(lambda r: tuple(order[f][r[f]] for f in by), axis=1)
    present = present.iloc[np.argsort(keys.to_numpy(), kind="stable")] if len(present) else present
    return [dict(zip(by, row, strict=True)) for row in present.itertuples(index=False)]


def population_cells(covariate: pd.DataFrame, population: pd.DataFrame,
                     factors: Sequence[str], levels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Covariate cells with a ``weight`` column holding target-population counts.

    ``population`` has some of the model's factor columns and a ``count`` or ``share`` column.
    If it names every factor, its rows are the cells (cells absent from the sample are predicted
    by the model). If it names some factors, each of its strata is split over the sample's cells
    in that stratum in proportion to the sample counts.
    """
    value = next((c for c in ("count", "share", "weight", "n") if c in population.columns), None)
    if value is None:
        raise SpecError("The population table needs a 'count' or 'share' column giving how many "
                        "people (or what share) each row stands for.")
    keys = [c for c in population.columns if c in factors]
    extra = [c for c in population.columns if c not in factors and c != value]
    if extra:
        raise SpecError(f"The population table has column(s) {', '.join(extra)} that are not "
                        f"model factors ({', '.join(factors)}). Remove them.")
    pop = population.copy()
    for k in keys:
        pop[k] = pop[k].astype(str)
        unknown = sorted(set(pop[k]) - set(levels[k]))
        if unknown:
            raise SpecError(f"The population table has {k} level(s) {', '.join(unknown[:5])} "
                            "that are not in the data.")
    pop[value] = pd.to_numeric(pop[value], errors="coerce")
    if pop[value].isna().any() or (pop[value] < 0).any() or pop[value].sum() <= 0:
        raise SpecError(f"The population column '{value}' must hold non-negative numbers that "
                        "are not all zero.")
    pop = pop.groupby(keys, observed=True)[value].sum().reset_index() if keys else pop
    if set(keys) == set(factors):
        out = pop.rename(columns={value: "weight"})[[*factors, "weight"]]
        out = out.merge(covariate, on=list(factors), how="left")
        for col in ("n", "n_treated", "n_control"):
            out[col] = out[col].fillna(0).astype(np.int64)
        return out
    if not keys:
        return covariate.assign(weight=covariate["n"] * float(pop[value].sum()) /
                                covariate["n"].sum())
    merged = covariate.merge(pop, on=keys, how="left")
    stratum_n = merged.groupby(keys, observed=True)["n"].transform("sum")
    missing = pop.merge(covariate[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    missing = missing[(missing["_merge"] == "left_only") & (missing[value] > 0)]
    if len(missing):
        row = missing.iloc[0]
        who = ", ".join(f"{k} = {row[k]}" for k in keys)
        raise SpecError(f"The population includes people with {who}, but nobody in the sample "
                        "has that combination. Give the population at the level of every factor "
                        "so the model can predict for them, or leave that group out.")
    merged["weight"] = merged[value].fillna(0.0) * merged["n"] / stratum_n
    return merged.drop(columns=[value])


def raw_estimates(cells: CellTable, by: Sequence[str]) -> pd.DataFrame:
    """Unpooled difference in means per group with its classical standard error.

    Columns: the ``by`` factors, ``n_treated``, ``n_control``, ``mean_treated``, ``mean_control``,
    ``raw_mean`` (treated minus control) and ``raw_se`` (Welch: sqrt(s1^2/n1 + s0^2/n0); for a
    binary outcome p(1 - p)/n in each arm). Missing where an arm has no one.
    """
    by = list(by)
    stats = cells.group_arm_stats(tuple(by))
    if cells.family != GAUSSIAN:
        stats["var"] = stats["mean"] * (1 - stats["mean"]) * stats["n"] / (stats["n"] - 1).clip(
            lower=1)
    t = stats[stats["z"] == 1].drop(columns="z")
    c = stats[stats["z"] == 0].drop(columns="z")
    if by:
        out = t.merge(c, on=by, how="outer", suffixes=("_treated", "_control"))
    else:
        out = pd.concat([t.add_suffix("_treated").reset_index(drop=True),
                         c.add_suffix("_control").reset_index(drop=True)], axis=1)
    for col in ("n_treated", "n_control"):
        out[col] = out[col].fillna(0).astype(np.int64)
    out["raw_mean"] = out["mean_treated"] - out["mean_control"]
    se2 = out["var_treated"] / out["n_treated"] + out["var_control"] / out["n_control"]
    out["raw_se"] = np.sqrt(se2.where((out["n_treated"] > 1) & (out["n_control"] > 1)))
    return out[[*by, "n_treated", "n_control", "mean_treated", "mean_control", "raw_mean",
                "raw_se"]]
