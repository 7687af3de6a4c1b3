"""Simulate randomized experiments whose treatment effects are known.

The simulator plants a treatment effect that varies across people according to their factor
levels (gender, race, ...), draws an experiment from it, and keeps the truth next to the data so
that estimates can be checked against it. It is used by the statistical tests and to make the
bundled sample data.

Generative model, for a person with factor levels ``x`` and arm ``z`` (1 treated, 0 control):

- each factor's level is drawn independently from that factor's population shares;
- complete randomization: exactly ``round(n * treated_share)`` people are treated;
- latent control outcome ``eta0(x) = intercept + sum of baseline level terms``;
- treatment effect ``tau(x) = base + sum of level terms + sum of intersection terms`` (an
  intersection term applies when the person has both of its levels);
- Gaussian: ``y = eta0 + z * tau + Normal(0, noise_sd)``; the true effect of a covariate cell
  is ``tau``;
- binary: ``y ~ Bernoulli(expit(eta0 + z * tau))``; the true effect of a covariate cell is on the
  probability scale, ``expit(eta0 + tau) - expit(eta0)``.

The true effect of a group is the average of the cell effects over the people of the simulated
data in that group (a sample average treatment effect given the covariates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

GAUSSIAN = "gaussian"
BINARY = "binary"
FAMILIES = (GAUSSIAN, BINARY)

#: Columns of ``Simulation.data`` besides the factors; no factor may take one of these names.
RESERVED_COLUMNS = ("id", "treatment", "outcome", "n", "true_effect")

#: Factor -> {level: population share}, roughly like a US adult population.
DEFAULT_FACTORS: dict[str, dict[str, float]] = {
    "gender": {"Female": 0.52, "Male": 0.48},
    "race": {"White": 0.60, "Black": 0.13, "Hispanic": 0.18, "Asian": 0.09},
    "generation": {"Gen Z": 0.20, "Millennial": 0.30, "Gen X": 0.25, "Boomer": 0.25},
    "married": {"No": 0.50, "Yes": 0.50},
    "kids": {"No": 0.55, "Yes": 0.45},
    "party": {"Democrat": 0.33, "Independent": 0.37, "Republican": 0.30},
}

Level = tuple[str, str]


def _frozen(mapping: Mapping) -> dict:
    # A private copy (plain dict so specs and simulations stay picklable): later changes to the
    # caller's mapping do not leak into the spec.
    return dict(mapping)


def _check_level_key(key: object, what: str) -> None:
    ok = (isinstance(key, tuple) and len(key) == 2
          and all(isinstance(part, str) for part in key))
    if not ok:
        raise ValueError(f"{what} keys must be (factor, level) pairs of strings, not {key!r}")


def _check_number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return number


@dataclass(frozen=True)
class EffectSpec:
    """True treatment effect on the latent scale (outcome units for gaussian, log-odds for binary).

    ``base`` applies to everybody; ``levels`` maps ``(factor, level)`` to an effect added for the
    people at that level; ``intersections`` maps ``((factor_1, level_1), (factor_2, level_2))``
    (two different factors) to an effect added for the people who have both levels.
    """

    base: float = 0.0
    levels: Mapping[Level, float] = field(default_factory=dict)
    intersections: Mapping[tuple[Level, Level], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_number(self.base, "EffectSpec.base")
        for key, value in self.levels.items():
            _check_level_key(key, "EffectSpec.levels")
            _check_number(value, f"EffectSpec.levels[{key!r}]")
        for key, value in self.intersections.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(
                    "EffectSpec.intersections keys must be ((factor, level), (factor, level)), "
                    f"not {key!r}"
                )
            for part in key:
                _check_level_key(part, "EffectSpec.intersections")
            if key[0][0] == key[1][0]:
                raise ValueError(
                    f"intersection {key!r} joins two levels of the same factor; it would never "
                    "apply (or duplicates a level term)"
                )
            _check_number(value, f"EffectSpec.intersections[{key!r}]")
        object.__setattr__(self, "levels", _frozen(self.levels))
        object.__setattr__(self, "intersections", _frozen(self.intersections))


@dataclass(frozen=True)
class BaselineSpec:
    """Outcome under control on the latent scale.

    ``intercept`` plus, for each ``(factor, level)`` in ``levels``, the term for people at that
    level. ``noise_sd`` is the residual standard deviation (Gaussian family only).
    """

    intercept: float = 0.0
    levels: Mapping[Level, float] = field(default_factory=dict)
    noise_sd: float = 1.0

    def __post_init__(self) -> None:
        _check_number(self.intercept, "BaselineSpec.intercept")
        if _check_number(self.noise_sd, "BaselineSpec.noise_sd") < 0:
            raise ValueError(f"BaselineSpec.noise_sd must be >= 0, not {self.noise_sd!r}")
        for key, value in self.levels.items():
            _check_level_key(key, "BaselineSpec.levels")
            _check_number(value, f"BaselineSpec.levels[{key!r}]")
        object.__setattr__(self, "levels", _frozen(self.levels))


@dataclass(frozen=True)
class Simulation:
    """A simulated experiment and its planted truth.

    ``data`` is the public table: ``id`` (1..n), one string column per factor, ``treatment``
    (``"treatment"``/``"control"``) and ``outcome`` (float for gaussian, 0/1 integers for
    binary). ``cell_effects`` has one row per covariate cell (combination of factor levels) that
    occurs in ``data``: the factor columns, ``n`` (people in ``data``, both arms) and
    ``true_effect`` (outcome units for gaussian, difference in probability for binary). Rows are
    in the order of ``levels``. ``levels`` gives each factor's levels in specification order,
    including levels nobody drew; when empty it is taken from ``cell_effects``.
    """

    data: pd.DataFrame
    family: str
    cell_effects: pd.DataFrame
    factors: tuple[str, ...]
    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, not {self.family!r}")
        object.__setattr__(self, "factors", tuple(self.factors))
        levels = dict(self.levels)
        for f in self.factors:
            if f not in levels:
                levels[f] = tuple(pd.unique(self.cell_effects[f].astype(str)))
        object.__setattr__(self, "levels", _frozen(levels))

    def _check_factors(self, names: Sequence[str]) -> None:
        unknown = [f for f in names if f not in self.factors]
        if unknown:
            raise ValueError(f"unknown factors {unknown}; the factors are {list(self.factors)}")

    def true_effect(self, group: Mapping[str, str] | None = None) -> float:
        """True average treatment effect among the people of ``data`` in ``group``.

        ``group`` maps factors to levels (``{}`` or ``None``: everybody). The result is the mean,
        over those people, of their covariate cell's true effect.
        """
        group = dict(group or {})
        self._check_factors(list(group))
        mask = np.ones(len(self.cell_effects), dtype=bool)
        for f, level in group.items():
            if level not in self.levels[f]:
                raise ValueError(
                    f"unknown level {level!r} of factor {f!r}; levels are {list(self.levels[f])}"
                )
            mask &= (self.cell_effects[f] == level).to_numpy()
        rows = self.cell_effects[mask]
        n = rows["n"].to_numpy(dtype=np.float64)
        if n.sum() == 0:
            raise ValueError(f"nobody in the simulated data is in group {group!r}")
        return float(np.dot(n, rows["true_effect"].to_numpy(dtype=np.float64)) / n.sum())

    def true_effects(self, by: Sequence[str]) -> pd.DataFrame:
        """True average treatment effect per observed level combination of ``by``.

        Columns: the ``by`` factors, ``n`` and ``true_effect``; rows follow the level order. With
        ``by`` empty, one row for everybody.
        """
        by = list(by)
        self._check_factors(by)
        if len(set(by)) != len(by):
            raise ValueError(f"repeated factors in {by}")
        cells = self.cell_effects
        if not by:
            return pd.DataFrame({"n": [int(cells["n"].sum())],
                                 "true_effect": [self.true_effect()]})
        work = pd.DataFrame({f: pd.Categorical(cells[f], categories=list(self.levels[f]))
                             for f in by})
        work["n"] = cells["n"].to_numpy()
        work["_w"] = cells["n"].to_numpy(dtype=np.float64) * cells["true_effect"].to_numpy()
        g = work.groupby(by, observed=True, sort=True)[["n", "_w"]].sum().reset_index()
        g = g[g["n"] > 0]
        out = pd.DataFrame({f: g[f].astype(str).to_numpy() for f in by})
        out["n"] = g["n"].to_numpy(dtype=np.int64)
        out["true_effect"] = g["_w"].to_numpy() / g["n"].to_numpy(dtype=np.float64)
        return out


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check_factors(factors: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Validate factor specs; return them with shares normalized to sum to one."""
    if not factors:
        raise ValueError("at least one factor is needed")
    out: dict[str, dict[str, float]] = {}
    for f, shares in factors.items():
        if not isinstance(f, str) or not f:
            raise ValueError(f"factor names must be non-empty strings, not {f!r}")
        if f in RESERVED_COLUMNS:
            raise ValueError(f"factor name {f!r} is reserved ({RESERVED_COLUMNS})")
        if not shares:
            raise ValueError(f"factor {f!r} has no levels")
        values = {}
        for level, share in shares.items():
            if not isinstance(level, str):
                raise ValueError(f"levels must be strings; factor {f!r} has {level!r}")
            value = _check_number(share, f"share of {f}={level}")
            if value < 0:
                raise ValueError(f"share of {f}={level} is negative ({share!r})")
            values[level] = value
        total = sum(values.values())
        if total <= 0:
            raise ValueError(f"shares of factor {f!r} sum to zero")
        out[f] = {level: v / total for level, v in values.items()}
    return out


def _check_known(key: Level, levels: Mapping[str, Sequence[str]], what: str) -> None:
    f, level = key
    if f not in levels:
        raise ValueError(f"{what} names unknown factor {f!r}; the factors are {list(levels)}")
    if level not in levels[f]:
        raise ValueError(
            f"{what} names unknown level {level!r} of factor {f!r}; levels are {list(levels[f])}"
        )


def _linear(frame: pd.DataFrame, constant: float, levels: Mapping[Level, float],
            intersections: Mapping[tuple[Level, Level], float] | None = None) -> np.ndarray:
    """``constant`` + level terms (+ intersection terms) for each row of ``frame``."""
    out = np.full(len(frame), float(constant))
    for (f, level), value in levels.items():
        out += float(value) * (frame[f] == level).to_numpy()
    for ((f1, l1), (f2, l2)), value in (intersections or {}).items():
        both = (frame[f1] == l1).to_numpy() & (frame[f2] == l2).to_numpy()
        out += float(value) * both
    return out


def simulate(n: int, *, family: str = GAUSSIAN,
             factors: Mapping[str, Mapping[str, float]] | None = None,
             effect: EffectSpec = EffectSpec(), baseline: BaselineSpec = BaselineSpec(),
             treated_share: float = 0.5, seed: int = 0) -> Simulation:
    """Simulate an experiment with ``n`` people and a planted, varying treatment effect.

    ``factors`` maps each factor to ``{level: population share}`` (default ``DEFAULT_FACTORS``;
    shares are normalized to sum to one). The result is deterministic given ``seed``. Unknown
    factor or level names in ``effect`` or ``baseline`` raise ``ValueError``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    n = int(n)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    share = _check_number(treated_share, "treated_share")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"treated_share must be in [0, 1], not {treated_share!r}")
    spec = _check_factors(DEFAULT_FACTORS if factors is None else factors)
    levels = {f: tuple(shares) for f, shares in spec.items()}
    for key in baseline.levels:
        _check_known(key, levels, "BaselineSpec.levels")
    for key in effect.levels:
        _check_known(key, levels, "EffectSpec.levels")
    for pair in effect.intersections:
        for key in pair:
            _check_known(key, levels, "EffectSpec.intersections")

    rng = np.random.default_rng(seed)
    people = pd.DataFrame({"id": np.arange(1, n + 1, dtype=np.int64)})
    for f, shares in spec.items():
        names = np.array(list(shares), dtype=object)
        codes = rng.choice(len(names), size=n, p=np.array(list(shares.values())))
        people[f] = pd.Series(names[codes], dtype=str)
    n_treated = round(n * share)
    z = np.zeros(n, dtype=np.int64)
    z[:n_treated] = 1
    z = rng.permutation(z)

    eta0 = _linear(people, baseline.intercept, baseline.levels)
    tau = _linear(people, effect.base, effect.levels, effect.intersections)
    eta = eta0 + z * tau
    if family == GAUSSIAN:
        outcome = eta + rng.normal(0.0, float(baseline.noise_sd), size=n)
    else:
        outcome = (rng.random(n) < _expit(eta)).astype(np.int64)
    people["treatment"] = pd.Series(np.where(z == 1, "treatment", "control"), dtype=str)
    people["outcome"] = outcome

    factor_names = list(spec)
    ordered = pd.DataFrame({f: pd.Categorical(people[f], categories=list(levels[f]))
                            for f in factor_names})
    counts = ordered.groupby(factor_names, observed=True, sort=True).size().reset_index(name="n")
    cells = pd.DataFrame({f: counts[f].astype(str).to_numpy() for f in factor_names})
    cells["n"] = counts["n"].to_numpy(dtype=np.int64)
    cell_eta0 = _linear(cells, baseline.intercept, baseline.levels)
    cell_tau = _linear(cells, effect.base, effect.levels, effect.intersections)
    if family == GAUSSIAN:
        cells["true_effect"] = cell_tau
    else:
        cells["true_effect"] = _expit(cell_eta0 + cell_tau) - _expit(cell_eta0)

    return Simulation(data=people, family=family, cell_effects=cells,
                      factors=tuple(factor_names), levels=levels)
