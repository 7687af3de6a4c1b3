"""Convergence checks with the standard names (R-hat, bulk/tail ESS), a verdict and advice.

ArviZ computes the numbers; this module applies named thresholds and words the result for the
people reading it. Values and presentation are kept apart: :class:`Diagnostics` holds numbers,
:meth:`Diagnostics.advice` and :meth:`Diagnostics.verdict` turn them into sentences.

The checks cover the model's parameters (scales, coefficients) and the numbers reported: every
group effect of :meth:`hte.result.Fit.effect_table` (:func:`effect_convergence`, on the effect
draws with their chains) and, per threshold, the Monte Carlo standard error of each probability
(:func:`probability_mcse`). Every sampling attempt (a fit with divergences is repeated at a
higher target acceptance) is kept in :attr:`Diagnostics.attempts_log` and told in the verdict.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

#: R-hat at most this is converged (Vehtari et al. 2021).
MAX_R_HAT = 1.01
#: Bulk and tail ESS at least this many per chain.
MIN_ESS_PER_CHAIN = 100


def arviz():
    """ArviZ, imported on first use (2-3 s: it loads matplotlib)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    return az


def convergence(x: np.ndarray) -> tuple[float, float, float]:
    """R-hat (rank-normalized split, NaN for one chain), bulk and tail ESS of (chains, draws)."""
    x = np.asarray(x, dtype=np.float64)
    if np.ptp(x) == 0:  # a constant has no Monte Carlo error
        return (1.0 if x.shape[0] > 1 else float("nan")), float(x.size), float(x.size)
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # ArviZ's split R-hat needs two chains (it logs a warning and returns NaN otherwise).
        rhat = float(az.rhat(x)) if x.shape[0] > 1 else float("nan")
        return rhat, float(az.ess(x, method="bulk")), float(az.ess(x, method="tail"))


def parameter_table(draws: dict[str, np.ndarray]) -> pd.DataFrame:
    """mean, sd, r_hat, ess_bulk, ess_tail for every scalar in ``draws`` (chains, draws, ...)."""
    rows = []
    for name, arr in draws.items():
        arr = np.asarray(arr, dtype=np.float64)
        flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
        for j in range(flat.shape[2]):
            x = flat[:, :, j]
            label = name if flat.shape[2] == 1 and arr.ndim == 2 else f"{name}[{j}]"
            rhat, ess_b, ess_t = convergence(x)
            rows.append({"parameter": label, "mean": float(x.mean()), "sd": float(x.std()),
                         "r_hat": rhat, "ess_bulk": ess_b, "ess_tail": ess_t})
    return pd.DataFrame(rows, columns=["parameter", "mean", "sd", "r_hat", "ess_bulk", "ess_tail"])


def by_chain(draws: np.ndarray, chains: int) -> np.ndarray:
    """Draws (chains * draws, k), chains stacked one after another, as (chains, draws, k)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    if chains < 1 or d.shape[0] % chains:
        raise ValueError(f"{d.shape[0]} draws cannot be split into {chains} chains.")
    return d.reshape(chains, d.shape[0] // chains, d.shape[1])


def effect_convergence(draws: np.ndarray, chains: int) -> pd.DataFrame:
    """``r_hat``, ``ess_bulk``, ``ess_tail`` of each column of effect draws (draws x effects).

    ``draws`` holds the chains one after another (as :meth:`hte.result.Fit.effect_draws`
    returns them), so each effect is checked with its chain structure: R-hat compares the
    chains, ESS accounts for autocorrelation within them.
    """
    d = by_chain(draws, chains)
    rows = [convergence(d[:, :, j]) for j in range(d.shape[2])]
    return pd.DataFrame(rows, columns=["r_hat", "ess_bulk", "ess_tail"], dtype=np.float64)


def probability_mcse(indicator: np.ndarray, chains: int) -> np.ndarray:
    """Monte Carlo standard error of the mean of each column of 0/1 draws (draws x effects).

    That mean is a posterior probability such as P(effect > delta); its MCSE is
    ``sqrt(p (1 - p) / ESS)`` with the ESS of the indicator's own draws (ArviZ's ``mcse`` of the
    mean), so it grows with autocorrelation. Independent draws give the binomial
    ``sqrt(p (1 - p) / n)``. A column whose draws all agree (p = 0 or 1) gets 0.
    """
    d = by_chain(indicator, chains)
    out = np.zeros(d.shape[2])
    varying = np.ptp(d, axis=(0, 1)) > 0
    if varying.any():
        az = arviz()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = az.convert_to_dataset({"p": d[:, :, varying]})
            out[varying] = np.asarray(az.mcse(ds, method="mean")["p"].values, dtype=np.float64)
    return out


@dataclass
class Diagnostics:
    """Sampler health in numbers; ``ok`` when every named threshold that can be checked is met.

    ``max_r_hat``, ``min_ess_*`` and ``worst`` cover the model's parameters; the ``effects_*``
    fields cover the group effects reported (None when they were not checked, e.g. in a fit
    saved by an older version). ``divergences`` and the tree-depth count are the final
    attempt's; ``attempts_log`` has one entry per attempt (:data:`ATTEMPT_FIELDS`).
    """

    chains: int
    draws: int
    max_r_hat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    tree_depth_saturated: int          # draws that hit the maximum tree depth
    max_tree_depth: int
    target_accept: float
    seconds: float                     # sampling wall time (warm-up + draws), all attempts
    seconds_compile: float
    attempts: int = 1
    worst: list[str] = field(default_factory=list)  # parameters with the worst R-hat / ESS
    effects_checked: int = 0           # group effects checked (0: not checked)
    effects_max_r_hat: float | None = None
    effects_min_ess_bulk: float | None = None
    effects_min_ess_tail: float | None = None
    effects_worst: list[str] = field(default_factory=list)  # effects with the worst R-hat / ESS
    attempts_log: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems()

    @property
    def chains_compared(self) -> bool:
        """R-hat compares chains: with one chain it cannot be checked."""
        return self.chains >= 2

    @property
    def largest_r_hat(self) -> float:
        """The largest R-hat over parameters and checked group effects."""
        return max(self.max_r_hat, _or(self.effects_max_r_hat, -np.inf))

    def problems(self) -> list[str]:
        out = []
        min_ess = MIN_ESS_PER_CHAIN * self.chains
        if self.divergences:
            out.append("divergences")
        if self.chains_compared and not self.largest_r_hat <= MAX_R_HAT:
            out.append("r_hat")
        if not (self._min_ess("bulk") >= min_ess and self._min_ess("tail") >= min_ess):
            out.append("ess")
        if self.tree_depth_saturated > 0.01 * self.chains * self.draws:
            out.append("tree_depth")
        return out

    def unchecked(self) -> list[str]:
        """What these draws cannot check, in words (empty when everything was checked)."""
        if self.chains_compared:
            return []
        return ["With one chain, R-hat cannot compare chains; run 2 or more chains to check "
                "convergence."]

    def _min_ess(self, kind: str) -> float:
        own = getattr(self, f"min_ess_{kind}")
        return min(own, _or(getattr(self, f"effects_min_ess_{kind}"), np.inf))

    def history(self) -> str:
        """The retries in words ("" when the first attempt's results are shown)."""
        log = self.attempts_log
        if len(log) < 2:
            return ""
        first = log[0]
        text = (f"The first attempt met {_count(first['divergences'])} at target acceptance "
                f"{first['target_accept']:g}; the fit was repeated")
        later = []
        for i, a in enumerate(log[1:]):
            met = "none" if not a["divergences"] else _count(a["divergences"], "")
            later.append(f"{'at' if i == 0 else 'then at'} {a['target_accept']:g}"
                         + (" with a new seed" if i == 0 else "")
                         + (" and then met " if len(log) == 2 else " and met ") + met)
        return (text + " " + ", ".join(later) + ". The results shown are from the "
                + f"{_ORDINAL.get(len(log), f'{len(log)}th')} attempt.")

    def verdict(self) -> str:
        history = self.history()
        history = history + " " if history else ""
        what = ("the model's parameters and the "
                f"{self.effects_checked:,} group effects reported" if self.effects_checked
                else "the model's parameters")
        if self.ok and self.chains_compared:
            return (history + "The sampler converged: all chains agree (R-hat ≤ 1.01), there "
                    "are enough effective draws, and no divergent transitions, for " + what
                    + ". The results can be trusted as far as the model goes.")
        if self.ok:
            return (history + " ".join(self.unchecked()) + " Otherwise no warning signs: "
                    "there are enough effective draws and no divergent transitions, for "
                    + what + ".")
        return (history + "The sampler shows warning signs, so treat the results with caution: "
                + " ".join([*self.advice(), *self.unchecked()]))

    def advice(self) -> list[str]:
        where_r = where_e = ""
        if self.effects_checked:
            failing = not self.effects_max_r_hat <= MAX_R_HAT
            where_r = (f" (parameters {self.max_r_hat:.3f}, group effects "
                       f"{self.effects_max_r_hat:.3f}"
                       + (f"; worst: {'; '.join(self.effects_worst[:3])}"
                          if failing and self.effects_worst else "") + ")")
            where_e = (f" (group effects: bulk {self.effects_min_ess_bulk:.0f}, tail "
                       f"{self.effects_min_ess_tail:.0f})")
        tips = {
            "divergences": f"{self.divergences} divergent transitions: the sampler could not "
                           "follow the posterior everywhere. Increase the target acceptance "
                           "(e.g. 0.95 or 0.99) or use a stronger prior.",
            "r_hat": f"The chains disagree: largest R-hat {self.largest_r_hat:.3f} > "
                     f"{MAX_R_HAT}{where_r}. Run more warm-up and draws.",
            "ess": f"Too few effective draws: smallest bulk ESS {self._min_ess('bulk'):.0f}, "
                   f"tail ESS {self._min_ess('tail'):.0f}{where_e}; want "
                   f"{MIN_ESS_PER_CHAIN * self.chains}. Run more draws.",
            "tree_depth": f"{self.tree_depth_saturated} draws hit the maximum tree depth "
                          f"({self.max_tree_depth}); the sampler is working hard. Increase the "
                          "maximum tree depth or simplify the model.",
        }
        return [tips[p] for p in self.problems()]

    def attempts_table(self) -> pd.DataFrame:
        """One row per sampling attempt, with column names for reading."""
        rows = [{"Attempt": a["attempt"], "Target acceptance": a["target_accept"],
                 "Seed": a["seed"], "Divergent transitions": a["divergences"],
                 "Draws at maximum tree depth": a["tree_depth_hits"], "Seconds": a["seconds"],
                 "Results shown": a["attempt"] == len(self.attempts_log)}
                for a in self.attempts_log]
        return pd.DataFrame(rows, columns=["Attempt", "Target acceptance", "Seed",
                                           "Divergent transitions",
                                           "Draws at maximum tree depth", "Seconds",
                                           "Results shown"])

    def with_effects(self, table: pd.DataFrame) -> Diagnostics:
        """A copy that also covers the group effects in ``table`` (``label``, ``r_hat``,
        ``ess_bulk``, ``ess_tail``; see :meth:`hte.result.Fit.effect_convergence`)."""
        if not len(table):
            return replace(self, effects_checked=0, effects_max_r_hat=None,
                           effects_min_ess_bulk=None, effects_min_ess_tail=None,
                           effects_worst=[])
        # worst R-hat first (the advice names those when R-hat fails), then smallest ESS
        worst = pd.concat([table.nlargest(3, "r_hat"), table.nsmallest(3, "ess_bulk")])
        return replace(
            self, effects_checked=len(table),
            effects_max_r_hat=float(table["r_hat"].max()),
            effects_min_ess_bulk=float(table["ess_bulk"].min()),
            effects_min_ess_tail=float(table["ess_tail"].min()),
            effects_worst=list(dict.fromkeys(worst["label"])))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["unchecked"] = self.unchecked()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Diagnostics:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


#: Keys of each entry of :attr:`Diagnostics.attempts_log`.
ATTEMPT_FIELDS = ("attempt", "target_accept", "seed", "divergences", "tree_depth_hits",
                  "seconds")
_ORDINAL = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


def _count(n: int, noun: str = " divergent transition") -> str:
    """'1 divergent transition', '3 divergent transitions' ('3' with an empty noun)."""
    return f"{n:,}{noun}{'s' if noun and n != 1 else ''}"


def _or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def summarize(draws: dict[str, np.ndarray], *, divergences: int, tree_depth: np.ndarray,
              max_tree_depth: int, target_accept: float, seconds: float, seconds_compile: float,
              attempts: int = 1, attempts_log: list[dict] | None = None,
              ) -> tuple[Diagnostics, pd.DataFrame]:
    """Diagnostics over all parameters in ``draws`` plus the per-parameter table."""
    table = parameter_table(draws)
    chains, n_draws = next(iter(draws.values())).shape[:2]
    worst = pd.concat([table.nlargest(3, "r_hat"), table.nsmallest(3, "ess_bulk")])
    log = [dict(a) for a in attempts_log or []]
    diag = Diagnostics(
        chains=int(chains), draws=int(n_draws),
        max_r_hat=float(table["r_hat"].max()),
        min_ess_bulk=float(table["ess_bulk"].min()),
        min_ess_tail=float(table["ess_tail"].min()),
        divergences=int(divergences),
        tree_depth_saturated=int((np.asarray(tree_depth) >= max_tree_depth).sum()),
        max_tree_depth=int(max_tree_depth), target_accept=float(target_accept),
        seconds=float(seconds), seconds_compile=float(seconds_compile),
        attempts=max(attempts, len(log)),
        worst=list(dict.fromkeys(worst["parameter"])), attempts_log=log,
    )
    return diag, table
