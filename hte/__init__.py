"""hte: multilevel models of how a randomized treatment's effect varies across people.

    >>> import hte
    >>> fit = hte.fit(table, outcome="support", treatment="treatment", treated="treatment",
    ...               by=["gender", "race"], interactions=["gender:race"])
    >>> fit.effects(by=["gender", "race"], threshold=0.2)

The heavy modules (JAX, NumPyro) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hte.errors import DataError, HteError, ReportError, SpecError

if TYPE_CHECKING:
    from hte.result import Fit

__all__ = ["DataError", "HteError", "ReportError", "SpecError", "fit", "load", "read_table"]


def fit(*args: Any, **kwargs: Any) -> Fit:
    """See :func:`hte.api.fit`."""
    from hte.api import fit as _fit

    return _fit(*args, **kwargs)


def load(path: Any) -> Fit:
    """Load a fit saved with :meth:`hte.result.Fit.save`."""
    from hte.result import Fit

    return Fit.load(path)


def read_table(*args: Any, **kwargs: Any):
    """See :func:`hte.data.read_table`."""
    from hte.data import read_table as _read

    return _read(*args, **kwargs)
