"""What to fit: the model specification, its priors, and the sampler settings.

These are frozen dataclasses built from user input at the edge (API, CLI, pages) and validated
once, here, with messages written for the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hte.cells import BINARY, FAMILIES, GAUSSIAN
from hte.errors import SpecError

#: Target acceptance per outcome family when none is chosen: the binary model's posterior has
#: more curvature: at 0.9 three fits in five met a divergence (and were refit), at 0.95 none
#: did, and the smaller steps cost less than the refits (bench/README.md).
DEFAULT_TARGET_ACCEPT = {GAUSSIAN: 0.8, BINARY: 0.95}

#: How the terms' treatment-effect scales relate (docs/model.md).
EFFECT_POOLING = ("shared", "independent", "mixture")

#: Prior scale of the shared scale of treatment-effect variation, per preset. The scale is in
#: standard deviations of the outcome (Gaussian) or in log-odds (binary); see docs/model.md
#: (bench/prior_study.py compared it with the alternatives).
PRIOR_STRENGTHS: dict[str, float] = {"weak": 0.5, "moderate": 0.2, "strong": 0.1}
PRIOR_STRENGTH_HELP: dict[str, str] = {
    "weak": "lets subgroup effects differ a lot before the data say so; more noise chasing.",
    "moderate": "subgroup effects are expected to differ modestly; the default.",
    "strong": "subgroup effects are pulled hard towards the overall effect unless the data "
              "clearly disagree.",
}


@dataclass(frozen=True)
class Priors:
    """Prior scales, on the standardized outcome (Gaussian) or the log-odds scale (binary).

    - ``intercept_sd``: sd of the control-arm mean around the outcome's overall mean;
    - ``effect_sd``: sd of the average treatment effect (Gaussian, in outcome sds);
    - ``binary_effect_sd``: sd of the average treatment effect of a binary outcome (log-odds): wide,
      so that a rare outcome's tripled rate (log odds ratio ~1.1, often measured with a standard
      error of 0.3-0.5) is not pulled back; for common outcomes the data dominate it anyway;
    - ``baseline_scale``: half-normal scale of each factor's baseline (intercept) variation;
    - ``modifier_scale``: half-normal scale of the shared scale of treatment-effect variation;
    - ``sigma_scale``: half-normal scale of the residual sd (Gaussian only);
    - ``binary_baseline_sd``: sd of the baseline level effects of a binary outcome (log-odds);
    - ``effect_shape``: ``a`` in xi_k^2 ~ Gamma(a, a), how unevenly effect variation may be
      spread over the terms (1/2: half-normal scales; smaller: one term may carry most of it);
    - ``effect_pooling``: "shared" (the terms' effect scales share lambda ~ HalfNormal(s)) or
      "independent" (lambda fixed at ``modifier_scale``).
    """

    intercept_sd: float = 1.0
    effect_sd: float = 1.0
    baseline_scale: float = 0.5
    modifier_scale: float = PRIOR_STRENGTHS["moderate"]
    sigma_scale: float = 1.0
    binary_baseline_sd: float = 1.0
    binary_effect_sd: float = 2.5
    effect_shape: float = 0.5
    effect_pooling: str = "shared"
    slab_scale: float = 0.5
    slab_share: float = 0.2

    def __post_init__(self) -> None:
        if self.effect_pooling not in EFFECT_POOLING:
            raise SpecError(f"Unknown effect pooling '{self.effect_pooling}'. Choose one of: "
                            f"{', '.join(EFFECT_POOLING)}.")
        if not self.effect_shape > 0:
            raise SpecError("The effect-variation shape must be a positive number, such as 0.5.")

    @classmethod
    def preset(cls, strength: str | float = "moderate") -> Priors:
        """Priors for a named strength ("weak", "moderate", "strong") or a numeric scale."""
        if isinstance(strength, int | float) and not isinstance(strength, bool):
            if not strength > 0:
                raise SpecError("The prior strength must be a positive number, such as 0.2.")
            return cls(modifier_scale=float(strength))
        key = str(strength).strip().lower()
        if key not in PRIOR_STRENGTHS:
            raise SpecError(
                f"Unknown prior strength '{strength}'. Choose one of: "
                f"{', '.join(PRIOR_STRENGTHS)} (or a positive number)."
            )
        return cls(modifier_scale=PRIOR_STRENGTHS[key])


@dataclass(frozen=True)
class ModelSpec:
    """The multilevel regression of the treatment effect on pre-treatment factors.

    ``terms`` are the grouping terms: each factor on its own, then each chosen intersection.
    Every term gets a varying intercept and a varying treatment effect per level.
    """

    outcome: str
    treatment: str
    treated: str
    control: str
    family: str
    factors: tuple[str, ...] = ()
    interactions: tuple[tuple[str, ...], ...] = ()
    priors: Priors = field(default_factory=Priors)
    success: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise SpecError(f"The outcome family must be one of {', '.join(FAMILIES)}.")
        if len(set(self.factors)) != len(self.factors):
            raise SpecError("Each factor can be chosen only once.")
        seen = set()
        for inter in self.interactions:
            if len(inter) < 2 or len(set(inter)) != len(inter):
                raise SpecError(
                    f"The intersection {':'.join(inter)} must combine two or more different "
                    "factors, such as gender:race."
                )
            missing = [f for f in inter if f not in self.factors]
            if missing:
                raise SpecError(
                    f"The intersection {':'.join(inter)} uses {', '.join(missing)}, which is not "
                    "among the chosen factors. Add it to the factors first."
                )
            key = frozenset(inter)
            if key in seen:
                raise SpecError(f"The intersection {':'.join(inter)} is listed twice.")
            seen.add(key)

    @property
    def terms(self) -> tuple[tuple[str, ...], ...]:
        """Grouping terms in model order: single factors, then intersections."""
        return tuple((f,) for f in self.factors) + tuple(self.interactions)

    @property
    def formula(self) -> str:
        """The equivalent lme4/brms formula.

        ``||`` marks uncorrelated varying intercepts and slopes, which is what this model fits
        (see docs/model.md). For a binary outcome use ``family = binomial`` (logit link).
        """
        z = _r_name(self.treatment)
        parts = [_r_name(self.outcome), "~", z]
        for term in self.terms:
            parts += ["+", f"(1 + {z} || {':'.join(_r_name(f) for f in term)})"]
        return " ".join(parts)

    @property
    def link(self) -> str:
        return "logit" if self.family == BINARY else "identity"

    def describe(self) -> str:
        """One sentence on the model, for people."""
        kind = "a continuous outcome" if self.family == GAUSSIAN else "a yes/no outcome (logit)"
        if not self.terms:
            return f"One average treatment effect for {kind}; no subgroups."
        names = [" × ".join(t) for t in self.terms]
        return (f"Treatment effects that vary by {', '.join(names)}, with partial pooling, "
                f"for {kind}.")


def _r_name(name: str) -> str:
    """A column name as R formula syntax accepts it (backticks around unusual names)."""
    if name.replace("_", "a").replace(".", "a").isalnum() and not name[0].isdigit():
        return name
    return "`" + name.replace("`", "\\`") + "`"


@dataclass(frozen=True)
class SamplerSettings:
    """NUTS settings. Defaults: 4 chains x 1000 warm-up x 1000 draws."""

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    target_accept: float | None = None   # None: 0.8 for Gaussian, 0.95 for binary outcomes
    max_tree_depth: int = 10
    retry_on_divergence: bool = True

    def __post_init__(self) -> None:
        if self.chains < 1 or self.draws < 10 or self.warmup < 10:
            raise SpecError("Use at least 1 chain, 10 warm-up iterations and 10 draws.")
        if self.target_accept is not None and not 0.5 <= self.target_accept < 1:
            raise SpecError("The target acceptance rate must be between 0.5 and 1 (e.g. 0.8).")
        if not 1 <= self.max_tree_depth <= 15:
            raise SpecError("The maximum tree depth must be between 1 and 15.")
