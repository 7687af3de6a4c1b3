"""The fit result: spec, cells, draws and diagnostics in one plain object.

Effects are computed from it on demand (:mod:`hte.effects`, :mod:`hte.decisions`), so changing
the threshold or the interval level never refits. It saves to and loads from one ``.npz`` file
and exports ArviZ InferenceData (netCDF).
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from hte import effects as fx
from hte.cells import BINARY, CellTable
from hte.decisions import EXTRAPOLATED, MIN_ARM, DecisionRule, arm_flags, summarize
from hte.design import Design
from hte.diagnostics import Diagnostics, effect_convergence, parameter_table, probability_mcse
from hte.errors import HteError, SpecError
from hte.spec import ModelSpec, Priors, SamplerSettings

FORMAT_VERSION = 1

#: Columns of :meth:`Fit.effects`, after the factor columns.
EFFECT_COLUMNS = ["n", "n_treated", "n_control", "mean", "median", "sd", "lower", "upper",
                  "p_above", "p_practically_zero", "p_below", "verdict", "extrapolated",
                  "small_arm", "raw_mean", "raw_se"]
#: Monte Carlo columns of :meth:`Fit.effects`, last: convergence of each effect's draws (R-hat,
#: bulk and tail ESS; see :meth:`Fit.effect_convergence`) and the Monte Carlo standard error of
#: its three probabilities at the threshold asked for (:func:`hte.diagnostics.probability_mcse`).
MC_COLUMNS = ["r_hat", "ess_bulk", "ess_tail", "mcse_p_above", "mcse_p_practically_zero",
              "mcse_p_below"]


@dataclass
class Fit:
    """A fitted model. ``draws`` arrays are (chains, draws, ...); ``beta`` is on the model scale."""

    spec: ModelSpec
    settings: SamplerSettings
    cells: CellTable
    center: float
    scale: float
    draws: dict[str, np.ndarray]
    diagnostics: Diagnostics
    parameter_table: pd.DataFrame
    sampler_stats: dict[str, np.ndarray] = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)
    seconds_total: float = 0.0

    # -- structure -----------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.spec.formula

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def binary(self) -> bool:
        return self.spec.family == BINARY

    @property
    def factors(self) -> tuple[str, ...]:
        return self.spec.factors

    @property
    def levels(self) -> dict[str, tuple[str, ...]]:
        return self.cells.levels

    @cached_property
    def design(self) -> Design:
        return Design.build(self.cells.factors, self.cells.levels, self.spec.terms)

    @cached_property
    def covariate(self) -> pd.DataFrame:
        """Observed covariate cells with people per arm (see :meth:`CellTable.covariate_cells`)."""
        return self.cells.covariate_cells()

    @cached_property
    def _covariate_codes(self) -> np.ndarray:
        return self.cells.level_codes(self.covariate)

    @cached_property
    def _raw(self) -> dict[tuple[str, ...], pd.DataFrame]:
        """Raw estimates per grouping, computed once (they do not depend on the decision rule)."""
        return {}

    @cached_property
    def beta(self) -> np.ndarray:
        """Coefficient draws, chains stacked: (chains * draws, P)."""
        b = self.draws["beta"]
        return b.reshape(-1, b.shape[-1])

    @property
    def n_draws(self) -> int:
        return self.beta.shape[0]

    # -- effects -------------------------------------------------------------------------------
    def _cells_and_weights(self, population: pd.DataFrame | None) -> pd.DataFrame:
        if population is None:
            return self.covariate.assign(weight=self.covariate["n"].astype(float))
        return fx.population_cells(self.covariate, population, self.factors, self.levels)

    def effect_draws(self, groups: Sequence[Mapping[str, str]],
                     population: pd.DataFrame | None = None) -> np.ndarray:
        """Posterior draws (draws x groups) of each group's average treatment effect."""
        cells = self._cells_and_weights(population)
        weights = np.column_stack(
            [fx.group_membership(cells, g) * cells["weight"].to_numpy() for g in groups]
        ) if groups else np.zeros((len(cells), 0))
        for g, total in zip(groups, weights.sum(axis=0), strict=True):
            if total <= 0:
                raise SpecError(f"Nobody in the data is in the group {fx.group_label(g)}, so "
                                "its effect cannot be estimated.")
        codes = self._covariate_codes if population is None else self.cells.level_codes(cells)
        return fx.weighted_group_draws(self.beta, self.design, codes, self.family, self.scale,
                                       weights)

    def groups(self, by: str | Sequence[str] | None = None) -> list[dict[str, str]]:
        """Every observed combination of levels of the factors ``by`` (``[{}]`` for everybody)."""
        by = self._by(by)
        return fx.groups_of(self.covariate, by, self.levels)

    def _by(self, by: str | Sequence[str] | None) -> tuple[str, ...]:
        if by is None:
            return ()
        by = (by,) if isinstance(by, str) else tuple(by)
        unknown = [f for f in by if f not in self.factors]
        left_out = self.data_info.get("left_out", {})
        if unknown and unknown[0] in left_out:
            raise SpecError(left_out[unknown[0]])
        if unknown:
            raise SpecError(f"'{unknown[0]}' is not one of the model's factors "
                            f"({', '.join(self.factors) or 'none'}).")
        return by

    def effects(self, by: str | Sequence[str] | None = None, threshold: float = 0.0,
                interval: float = 0.9, cutoff: float = 0.9,
                population: pd.DataFrame | None = None, min_arm: int = MIN_ARM) -> pd.DataFrame:
        """Tidy table of group effects: one row per combination of levels of ``by``.

        ``by=None`` gives the overall effect (ATE); ``by="gender"`` one row per gender;
        ``by=["gender", "race"]`` one row per observed gender x race combination. Columns: ``by``
        (e.g. "gender × race"), ``label``, one column per model factor (the level, or None),
        then :data:`EFFECT_COLUMNS`. A group with fewer than ``min_arm`` treated or control
        people in the sample is ``extrapolated`` (its verdict says so; see
        :mod:`hte.decisions`), one with fewer than :data:`hte.decisions.SMALL_ARM` is flagged
        ``small_arm``. With a ``population`` the counts, and so the flags, stay the sample's.
        The Monte Carlo columns :data:`MC_COLUMNS` come last.
        """
        rule = DecisionRule(threshold, interval, cutoff, min_arm)
        by = self._by(by)
        groups = self.groups(by)
        draws = self.effect_draws(groups, population)
        table = self._table(by, groups, draws, rule)
        return pd.concat([table, self._monte_carlo(by, draws, rule, population is None)], axis=1)

    @cached_property
    def _convergence(self) -> dict[tuple[str, ...], pd.DataFrame]:
        """Convergence of the sample's group effects per grouping (independent of the rule)."""
        return {}

    @property
    def chains(self) -> int:
        return int(self.draws["beta"].shape[0])

    def _monte_carlo(self, by: tuple[str, ...], draws: np.ndarray, rule: DecisionRule,
                     cache: bool) -> pd.DataFrame:
        """:data:`MC_COLUMNS` for effect draws (draws x groups), chains one after another."""
        conv = self._convergence.get(by) if cache else None
        if conv is None:
            conv = effect_convergence(draws, self.chains)
            if cache:
                self._convergence[by] = conv
        delta = rule.threshold
        above, below = draws > delta, draws < -delta
        mc = {"mcse_p_above": above, "mcse_p_practically_zero": ~(above | below),
              "mcse_p_below": below}
        out = conv.copy()
        for name, indicator in mc.items():
            out[name] = probability_mcse(indicator.astype(np.float64), self.chains)
        return out[MC_COLUMNS]

    def effect_convergence(self, pairs: bool = True) -> pd.DataFrame:
        """R-hat and bulk/tail ESS of every group effect :meth:`effect_table` reports.

        Columns ``by``, ``label``, ``r_hat``, ``ess_bulk``, ``ess_tail``; computed on each
        effect's draws with their chain structure. These do not depend on the threshold.
        """
        parts = []
        groupings: list[tuple[str, ...]] = [(), *((f,) for f in self.factors)]
        if pairs:
            groupings += list(itertools.combinations(self.factors, 2))
        for by in groupings:
            groups = self.groups(by)
            if by not in self._convergence:
                self._convergence[by] = effect_convergence(self.effect_draws(groups),
                                                           self.chains)
            parts.append(self._convergence[by].assign(
                by=" × ".join(by) if by else "Everyone",
                label=[fx.group_label(g) for g in groups]))
        out = pd.concat(parts, ignore_index=True)
        return out[["by", "label", "r_hat", "ess_bulk", "ess_tail"]]

    def _table(self, by: tuple[str, ...], groups: list[dict[str, str]], draws: np.ndarray,
               rule: DecisionRule) -> pd.DataFrame:
        if by not in self._raw:
            self._raw[by] = fx.raw_estimates(self.cells, by)
        raw = self._raw[by]
        head = pd.DataFrame([{f: g.get(f) for f in self.factors} for g in groups],
                            columns=list(self.factors))
        head.insert(0, "label", [fx.group_label(g) for g in groups])
        head.insert(0, "by", " × ".join(by) if by else "Everyone")
        if by:
            keyed = head[list(by)].astype(str).merge(raw.astype({f: str for f in by}), on=list(by),
                                                     how="left")
        else:
            keyed = raw
        head["n_treated"] = keyed["n_treated"].fillna(0).astype(np.int64).to_numpy()
        head["n_control"] = keyed["n_control"].fillna(0).astype(np.int64).to_numpy()
        head["n"] = head["n_treated"] + head["n_control"]
        summary = summarize(draws, rule, head["n_treated"], head["n_control"])
        out = pd.concat([head.reset_index(drop=True), summary], axis=1)
        out["raw_mean"] = keyed["raw_mean"].to_numpy()
        out["raw_se"] = keyed["raw_se"].to_numpy()
        return out[["by", "label", *self.factors, *EFFECT_COLUMNS]]

    def effect_table(self, threshold: float = 0.0, interval: float = 0.9, cutoff: float = 0.9,
                     pairs: bool = True, population: pd.DataFrame | None = None,
                     min_arm: int = MIN_ARM) -> pd.DataFrame:
        """Everybody, every level of every factor, and (``pairs``) every pair of factors."""
        groupings: list[tuple[str, ...]] = [(), *((f,) for f in self.factors)]
        if pairs:
            groupings += list(itertools.combinations(self.factors, 2))
        return pd.concat([self.effects(b, threshold, interval, cutoff, population, min_arm)
                          for b in groupings], ignore_index=True)

    def arm_counts(self, group: Mapping[str, str]) -> tuple[int, int]:
        """People (treated, control) of ``group`` in the sample."""
        cov = self.covariate
        mask = fx.group_membership(cov, group)
        return int(cov["n_treated"][mask].sum()), int(cov["n_control"][mask].sum())

    def contrast(self, a: Mapping[str, str], b: Mapping[str, str], threshold: float = 0.0,
                 interval: float = 0.9, cutoff: float = 0.9,
                 population: pd.DataFrame | None = None,
                 min_arm: int = MIN_ARM) -> tuple[dict, np.ndarray]:
        """Posterior of effect(a) - effect(b), draw by draw from the joint posterior.

        Returns the summary (as :func:`hte.decisions.summarize`, plus labels, each group's people
        per arm and the flags) and the draws. If either group is extrapolated, so is the
        difference: its verdict is "extrapolated".
        """
        rule = DecisionRule(threshold, interval, cutoff, min_arm)
        draws = self.effect_draws([dict(a), dict(b)], population)
        diff = draws[:, 0] - draws[:, 1]
        counts = [self.arm_counts(a), self.arm_counts(b)]
        return contrast_row(diff, rule, counts, fx.group_label(a), fx.group_label(b)), diff

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fit to one compressed ``.npz`` file (no person-level rows are stored)."""
        path = Path(path)
        meta = {
            "format": FORMAT_VERSION,
            "spec": _spec_to_dict(self.spec),
            "settings": asdict(self.settings),
            "cells": {"family": self.cells.family, "factors": list(self.cells.factors),
                      "levels": {k: list(v) for k, v in self.cells.levels.items()},
                      "table": self.cells.cells.to_dict(orient="list")},
            "center": self.center, "scale": self.scale,
            "diagnostics": self.diagnostics.to_dict(),
            "data_info": self.data_info,
            "seconds_total": self.seconds_total,
        }
        arrays = {f"draws__{k}": np.asarray(v) for k, v in self.draws.items()}
        arrays |= {f"stats__{k}": np.asarray(v) for k, v in self.sampler_stats.items()}
        with path.open("wb") as fh:
            np.savez_compressed(fh, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                                **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Fit:
        """Read a fit written by :meth:`save`."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                draws = {k[7:]: data[k] for k in data.files if k.startswith("draws__")}
                stats = {k[7:]: data[k] for k in data.files if k.startswith("stats__")}
        except (OSError, ValueError, KeyError) as err:
            raise HteError(f"'{path}' is not a saved hte fit ({err}).") from err
        if meta.get("format") != FORMAT_VERSION:
            raise HteError(f"'{path}' was saved by an incompatible version of hte.")
        c = meta["cells"]
        cells = CellTable(family=c["family"], factors=tuple(c["factors"]),
                          levels={k: tuple(v) for k, v in c["levels"].items()},
                          cells=pd.DataFrame(c["table"]))
        fit = cls(
            spec=_spec_from_dict(meta["spec"]), settings=SamplerSettings(**meta["settings"]),
            cells=cells, center=meta["center"], scale=meta["scale"], draws=draws,
            diagnostics=Diagnostics.from_dict(meta["diagnostics"]),
            parameter_table=parameter_table({k: v for k, v in draws.items()}),
            sampler_stats=stats, data_info=meta["data_info"],
            seconds_total=meta["seconds_total"],
        )
        if not fit.diagnostics.effects_checked:  # saved before the group effects were checked
            fit.diagnostics = fit.diagnostics.with_effects(fit.effect_convergence())
        return fit

    def to_inference_data(self):
        """ArviZ InferenceData: posterior (named scales, coefficients, level effects) + stats."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import arviz as az
        posterior = {k: v for k, v in self.draws.items() if k != "beta"}
        b = self.draws["beta"]
        posterior["alpha"] = b[..., 0]
        posterior["tau"] = b[..., 1]
        coords: dict[str, list[str]] = {}
        dims: dict[str, list[str]] = {"sigma_baseline": ["term"], "sigma_effect": ["term"]}
        coords["term"] = [":".join(t) for t in self.spec.terms]
        for k, term in enumerate(self.spec.terms):
            name = "_".join(term)
            a_k, b_k = self.design.level_effects(b, k)
            posterior[f"baseline_{name}"] = a_k
            posterior[f"effect_{name}"] = b_k
            dim = f"{name}_level"
            coords[dim] = [":".join(x) for x in itertools.product(*(self.levels[f] for f in term))]
            dims[f"baseline_{name}"] = [dim]
            dims[f"effect_{name}"] = [dim]
        stats = {k: v for k, v in self.sampler_stats.items()}
        if "diverging" in stats:
            stats["diverging"] = stats["diverging"].astype(bool)
        return az.from_dict(posterior=posterior, sample_stats=stats, coords=coords, dims=dims,
                            attrs={"formula": self.formula, "family": self.family,
                                   "outcome_center": self.center, "outcome_scale": self.scale})

    def to_netcdf(self, path: str | Path) -> Path:
        """Save :meth:`to_inference_data` as netCDF."""
        self.to_inference_data().to_netcdf(str(path))
        return Path(path)


def contrast_row(diff: np.ndarray, rule: DecisionRule, counts: Sequence[tuple[int, int]],
                 a: str, b: str) -> dict:
    """The summary of a difference of two groups' effects, flagged from both groups' arms."""
    row = summarize(diff, rule).iloc[0].to_dict()
    extrapolated, small = arm_flags([c[0] for c in counts], [c[1] for c in counts], rule)
    if extrapolated.any():
        row["verdict"] = EXTRAPOLATED
    row.update(extrapolated=bool(extrapolated.any()), small_arm=bool(small.any()), a=a, b=b,
               n_treated_a=counts[0][0], n_control_a=counts[0][1],
               n_treated_b=counts[1][0], n_control_b=counts[1][1])
    return row


def _spec_to_dict(spec: ModelSpec) -> dict:
    d = asdict(spec)
    d["factors"] = list(spec.factors)
    d["interactions"] = [list(t) for t in spec.interactions]
    return d


def _spec_from_dict(d: dict) -> ModelSpec:
    d = dict(d)
    d["factors"] = tuple(d["factors"])
    d["interactions"] = tuple(tuple(t) for t in d["interactions"])
    d["priors"] = Priors(**d["priors"])
    return ModelSpec(**d)
