"""The Python entry point: ``hte.fit(table, outcome=..., treatment=..., treated=..., by=[...])``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict

import pandas as pd

from hte.cells import GAUSSIAN
from hte.data import PreparedData, Roles, prepare
from hte.errors import SpecError
from hte.result import Fit
from hte.sampler import Progress
from hte.spec import ModelSpec, Priors, SamplerSettings
from hte.variance import outcome_shape

Intersections = tuple[tuple[str, ...], ...]


def parse_interactions(interactions: Iterable[str | Sequence[str]] | None) -> Intersections:
    """Intersections as tuples of factor names; ``"gender:race"`` and ``("gender", "race")``."""
    out = []
    for item in interactions or ():
        parts = tuple(p.strip() for p in item.split(":")) if isinstance(item, str) else tuple(item)
        if len(parts) < 2 or not all(parts):
            raise SpecError(f"'{item}' is not an intersection; write two or more factors joined "
                            "by ':', such as gender:race.")
        out.append(parts)
    return tuple(out)


def left_out_factors(data: PreparedData) -> dict[str, str]:
    """Factors with one value among the people analysed (e.g. after filtering), each with a
    sentence saying why it is left out of the model: a constant cannot explain differences,
    and as a term it would only add a scale the data say nothing about."""
    out = {}
    c = data.cells.cells
    for f in data.factors:
        values = c.loc[c["n"] > 0, f].astype(str).unique()
        if len(values) == 1:
            out[f] = (f"'{f}' has one value in these data ('{values[0]}'), so it cannot explain "
                      "differences and was left out.")
    return out


def model_notices(data: PreparedData,
                  interactions: Iterable[str | Sequence[str]] | None = None) -> list[str]:
    """Sentences about what the model leaves out of the user's choices (see
    :func:`left_out_factors`), including intersections that use a left-out factor."""
    left_out = left_out_factors(data)
    notes = list(left_out.values())
    for inter in parse_interactions(interactions):
        gone = [f for f in inter if f in left_out]
        if gone:
            notes.append(f"The intersection {':'.join(inter)} was left out too, since "
                         f"'{gone[0]}' has one value.")
    return notes


def model_spec(data: PreparedData, interactions: Iterable[str | Sequence[str]] | None = None,
               prior_strength: str | float = "moderate") -> ModelSpec:
    """The model for prepared data: every factor with two values or more, plus the chosen
    intersections of them (what is left out is said by :func:`model_notices`)."""
    left_out = left_out_factors(data)
    return ModelSpec(
        outcome=data.outcome, treatment=data.treatment, treated=data.treated,
        control=data.control, family=data.family,
        factors=tuple(f for f in data.factors if f not in left_out),
        interactions=tuple(t for t in parse_interactions(interactions)
                           if not any(f in left_out for f in t)),
        priors=Priors.preset(prior_strength), success=data.success,
    )


def data_info(data: PreparedData,
              interactions: Iterable[str | Sequence[str]] | None = None) -> dict:
    """What a fit records about its data: counts and fingerprint, never rows; ``notices``,
    sentences about choices the model left out (``left_out``: factor -> sentence); and for a
    continuous outcome its shape (share of zeros, skewness, whether it is never negative),
    which the predictive check uses to flag impossible predictions.
    """
    shape = None
    if data.family == GAUSSIAN and data.frame is not None:
        shape = asdict(outcome_shape(data.frame["_y"].to_numpy()))
    return {
        "outcome_shape": shape,
        "left_out": left_out_factors(data),
        "notices": model_notices(data, interactions),
        "n_input_rows": int(data.n_input_rows), "n_used": int(data.n_rows),
        "dropped": {k: int(v) for k, v in data.dropped.items()},
        "fingerprint": data.fingerprint, "outcome": data.outcome, "treatment": data.treatment,
        "treated": data.treated, "control": data.control, "success": data.success,
        "columns_used": [data.outcome, data.treatment, *data.factors],
    }


def fit(data: pd.DataFrame | PreparedData, outcome: str | None = None,
        treatment: str | None = None, treated: str | None = None,
        by: Sequence[str] = (), interactions: Iterable[str | Sequence[str]] | None = None, *,
        family: str = "auto", success: str | None = None, bins: Mapping[str, int] | None = None,
        prior_strength: str | float = "moderate", priors: Priors | None = None,
        chains: int = 4, warmup: int = 1000,
        draws: int = 1000, seed: int = 0, target_accept: float | None = None,
        progress: Progress | None = None) -> Fit:
    """Fit the multilevel model of the treatment effect and return the :class:`Fit`.

    ``data`` is a table of people (one row each) or data already prepared with
    :func:`hte.data.prepare` / :func:`hte.data.prepare_summaries` (then the role arguments are
    not needed). ``by`` are the factor columns; ``interactions`` the intersections to model,
    e.g. ``["gender:race"]``. ``progress(fraction, message)`` is called as sampling proceeds.
    A factor with one value in the data is left out of the model, with a sentence in
    ``fit.data_info["notices"]``.
    """
    from hte.fitting import fit_cells

    if isinstance(data, PreparedData):
        prepared = data
    else:
        if outcome is None or treatment is None or treated is None:
            raise SpecError("Say which column is the outcome, which is the treatment, and which "
                            "treatment value means treated (outcome=, treatment=, treated=).")
        prepared = prepare(data, Roles(outcome=outcome, treatment=treatment, treated=str(treated),
                                       factors=tuple(by), family=family, success=success,
                                       bins=dict(bins or {})))
    spec = model_spec(prepared, interactions, prior_strength)
    if priors is not None:
        spec = dataclasses.replace(spec, priors=priors)
    settings = SamplerSettings(chains=chains, warmup=warmup, draws=draws, seed=seed,
                               target_accept=target_accept)
    return fit_cells(prepared.cells, spec, settings, progress=progress,
                     data_info=data_info(prepared, interactions))
