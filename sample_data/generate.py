"""Regenerate the bundled sample experiments and their planted truth.

Run from anywhere: ``python sample_data/generate.py [OUTPUT_DIR]`` (default: this folder).
The output is deterministic (fixed seeds), so rerunning reproduces the committed files exactly.

Writes ``experiment.csv`` (Gaussian outcome ``support``), ``experiment_binary.csv`` (0/1 outcome
``donated``) and ``true_effects.csv`` (the planted truth for both, per group).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # let the script run without installing the package
    sys.path.insert(0, str(HERE.parent))

import pandas as pd  # noqa: E402

from hte.simulate import (  # noqa: E402
    DEFAULT_FACTORS,
    BaselineSpec,
    EffectSpec,
    Simulation,
    simulate,
)

N_PEOPLE = 4000
GAUSSIAN_FILE = "experiment.csv"
BINARY_FILE = "experiment_binary.csv"
TRUTH_FILE = "true_effects.csv"
GAUSSIAN_SEED = 20240601
BINARY_SEED = 20240602
TRUTH_DECIMALS = 10
BLACK_MEN = (("race", "Black"), ("gender", "Male"))


def gaussian_simulation() -> Simulation:
    """The Gaussian experiment: a 0–10-ish support score, with a large effect for Black men."""
    baseline = BaselineSpec(
        intercept=5.0,
        levels={
            ("party", "Democrat"): 1.0,
            ("party", "Republican"): -1.0,
            ("generation", "Gen Z"): 0.3,
            ("generation", "Boomer"): -0.3,
            ("gender", "Female"): 0.2,
        },
        noise_sd=1.5,
    )
    effect = EffectSpec(
        base=0.15,
        levels={
            ("gender", "Female"): 0.05,
            ("gender", "Male"): -0.05,
            ("party", "Democrat"): 0.1,
            ("party", "Republican"): -0.1,
        },
        intersections={BLACK_MEN: 0.8},
    )
    return simulate(N_PEOPLE, family="gaussian", factors=DEFAULT_FACTORS, effect=effect,
                    baseline=baseline, seed=GAUSSIAN_SEED)


def binary_simulation() -> Simulation:
    """The binary twin: did the person donate (0/1)? Effects are on the log-odds scale."""
    baseline = BaselineSpec(
        intercept=-0.4,
        levels={
            ("party", "Democrat"): 0.5,
            ("party", "Republican"): -0.5,
            ("generation", "Boomer"): 0.3,
            ("generation", "Gen Z"): -0.3,
        },
    )
    effect = EffectSpec(
        base=0.1,
        levels={("party", "Democrat"): 0.1, ("party", "Republican"): -0.1},
        intersections={BLACK_MEN: 1.0},
    )
    return simulate(N_PEOPLE, family="binary", factors=DEFAULT_FACTORS, effect=effect,
                    baseline=baseline, seed=BINARY_SEED)


def public_table(sim: Simulation, outcome: str) -> pd.DataFrame:
    """The CSV table: ``id``, the factors, ``treatment`` and the renamed outcome column."""
    table = sim.data[["id", *sim.factors, "treatment", "outcome"]].rename(
        columns={"outcome": outcome})
    if sim.family == "gaussian":
        table[outcome] = table[outcome].round(2)
    return table


def truth_table(sim: Simulation, dataset: str) -> pd.DataFrame:
    """Planted truth: everybody, each level of each factor, each level pair of each factor pair."""
    parts = []
    groupings: list[tuple[str, ...]] = [()]
    groupings += [(f,) for f in sim.factors]
    groupings += list(itertools.combinations(sim.factors, 2))
    for by in groupings:
        effects = sim.true_effects(list(by))
        part = pd.DataFrame({"dataset": dataset}, index=effects.index)
        for i in (1, 2):
            if i <= len(by):
                part[f"factor_{i}"] = by[i - 1]
                part[f"level_{i}"] = effects[by[i - 1]].to_numpy()
            else:
                part[f"factor_{i}"] = ""
                part[f"level_{i}"] = ""
        part["n"] = effects["n"].to_numpy()
        # Rounded so the file does not depend on last-digit floating-point noise.
        part["true_effect"] = effects["true_effect"].round(TRUTH_DECIMALS).to_numpy()
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def build() -> dict[str, pd.DataFrame]:
    """All sample files, keyed by file name."""
    gaussian = gaussian_simulation()
    binary = binary_simulation()
    truth = pd.concat([truth_table(gaussian, GAUSSIAN_FILE), truth_table(binary, BINARY_FILE)],
                      ignore_index=True)
    return {
        GAUSSIAN_FILE: public_table(gaussian, "support"),
        BINARY_FILE: public_table(binary, "donated"),
        TRUTH_FILE: truth,
    }


def write(out_dir: str | Path = HERE) -> list[Path]:
    """Write the sample files into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in build().items():
        path = out / name
        table.to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``generate.py [OUTPUT_DIR]``."""
    args = sys.argv[1:] if argv is None else argv
    for path in write(args[0] if args else HERE):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
