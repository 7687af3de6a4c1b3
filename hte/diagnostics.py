"""Convergence checks with the standard names (R-hat, bulk/tail ESS), a verdict and advice.

ArviZ computes the numbers; this module applies named thresholds and words the result for the
people reading it. Values and presentation are kept apart: :class:`Diagnostics` holds numbers,
:meth:`Diagnostics.advice` and :meth:`Diagnostics.verdict` turn them into sentences.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

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


def parameter_table(draws: dict[str, np.ndarray]) -> pd.DataFrame:
    """mean, sd, r_hat, ess_bulk, ess_tail for every scalar in ``draws`` (chains, draws, ...)."""
    az = arviz()
    rows = []
    for name, arr in draws.items():
        arr = np.asarray(arr, dtype=np.float64)
        flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
        for j in range(flat.shape[2]):
            x = flat[:, :, j]
            label = name if flat.shape[2] == 1 and arr.ndim == 2 else f"{name}[{j}]"
            if np.ptp(x) == 0:  # a constant has no Monte Carlo error
                rhat, ess_b, ess_t = 1.0, float(x.size), float(x.size)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rhat = float(az.rhat(x))
                    ess_b = float(az.ess(x, method="bulk"))
                    ess_t = float(az.ess(x, method="tail"))
            rows.append({"parameter": label, "mean": float(x.mean()), "sd": float(x.std()),
                         "r_hat": rhat, "ess_bulk": ess_b, "ess_tail": ess_t})
    return pd.DataFrame(rows, columns=["parameter", "mean", "sd", "r_hat", "ess_bulk", "ess_tail"])


@dataclass
class Diagnostics:
    """Sampler health in numbers; ``ok`` when every named threshold is met."""

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

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        min_ess = MIN_ESS_PER_CHAIN * self.chains
        if self.divergences:
            out.append("divergences")
        if not self.max_r_hat <= MAX_R_HAT:
            out.append("r_hat")
        if not (self.min_ess_bulk >= min_ess and self.min_ess_tail >= min_ess):
            out.append("ess")
        if self.tree_depth_saturated > 0.01 * self.chains * self.draws:
            out.append("tree_depth")
        return out

    def verdict(self) -> str:
        if self.ok:
            return ("The sampler converged: all chains agree (R-hat ≤ 1.01), there are enough "
                    "effective draws, and no divergent transitions. The results can be trusted "
                    "as far as the model goes.")
        return ("The sampler shows warning signs, so treat the results with caution: "
                + " ".join(self.advice()))

    def advice(self) -> list[str]:
        tips = {
            "divergences": f"{self.divergences} divergent transitions: the sampler could not "
                           "follow the posterior everywhere. Increase the target acceptance "
                           "(e.g. 0.95 or 0.99) or use a stronger prior.",
            "r_hat": f"The chains disagree (largest R-hat {self.max_r_hat:.3f} > {MAX_R_HAT}). "
                     "Run more warm-up and draws.",
            "ess": f"Too few effective draws (smallest bulk ESS {self.min_ess_bulk:.0f}, tail "
                   f"ESS {self.min_ess_tail:.0f}; want {MIN_ESS_PER_CHAIN * self.chains}). "
                   "Run more draws.",
            "tree_depth": f"{self.tree_depth_saturated} draws hit the maximum tree depth "
                          f"({self.max_tree_depth}); the sampler is working hard. Increase the "
                          "maximum tree depth or simplify the model.",
        }
        return [tips[p] for p in self.problems()]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Diagnostics:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


def summarize(draws: dict[str, np.ndarray], *, divergences: int, tree_depth: np.ndarray,
              max_tree_depth: int, target_accept: float, seconds: float, seconds_compile: float,
              attempts: int = 1) -> tuple[Diagnostics, pd.DataFrame]:
    """Diagnostics over all parameters in ``draws`` plus the per-parameter table."""
    table = parameter_table(draws)
    chains, n_draws = next(iter(draws.values())).shape[:2]
    worst = pd.concat([table.nlargest(3, "r_hat"), table.nsmallest(3, "ess_bulk")])
    diag = Diagnostics(
        chains=int(chains), draws=int(n_draws),
        max_r_hat=float(table["r_hat"].max()),
        min_ess_bulk=float(table["ess_bulk"].min()),
        min_ess_tail=float(table["ess_tail"].min()),
        divergences=int(divergences),
        tree_depth_saturated=int((np.asarray(tree_depth) >= max_tree_depth).sum()),
        max_tree_depth=int(max_tree_depth), target_accept=float(target_accept),
        seconds=float(seconds), seconds_compile=float(seconds_compile), attempts=attempts,
        worst=list(dict.fromkeys(worst["parameter"])),
    )
    return diag, table
