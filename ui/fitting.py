"""Fits: the server-wide fit cache, background sampler warm-ups, the session's current fit, and
the results computed from it (cached).

Fits are cached for the whole server in :func:`fit_store`, keyed on the data fingerprint, the model
specification and the sampler settings: the same choices never refit, whichever page asks. New
fits take turns in :func:`fit_queue` (``HTE_MAX_FITS`` at once, default half the cores), so
analysts who click Fit while others are fitting see their place in the queue.
Effects are recomputed from the stored draws (cached per fit and decision rule), so changing the
threshold or the interval level is instant. Nothing here computes statistics: the engine does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from hte.data import PreparedData
from hte.decisions import DecisionRule
from hte.result import Fit
from hte.spec import SamplerSettings

from .state import FIT

#: The Model page starts with the first this many candidate factors chosen.
DEFAULT_FACTORS = 8
#: The Model page's default prior strength.
DEFAULT_PRIOR = "moderate"
#: Fits kept in memory by the server-wide cache.
MAX_FITS = 12


# -- the server-wide fit cache --------------------------------------------------------------------

class FitStore:
    """Fits by key (data fingerprint, spec, settings), most recent last, thread-safe."""

    def __init__(self, size: int = MAX_FITS) -> None:
        self.size = size
        self._fits: OrderedDict[str, Fit] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Fit | None:
        with self._lock:
            fit = self._fits.get(key)
            if fit is not None:
                self._fits.move_to_end(key)
            return fit

    def put(self, key: str, fit: Fit) -> None:
        with self._lock:
            self._fits[key] = fit
            self._fits.move_to_end(key)
            while len(self._fits) > self.size:
                self._fits.popitem(last=False)

    def __len__(self) -> int:
        return len(self._fits)


@st.cache_resource(show_spinner=False)
def fit_store() -> FitStore:
    """The server-wide fit cache (shared by all sessions)."""
    return FitStore()


def fit_key(data: PreparedData, interactions: Sequence[str], prior: str,
            settings: SamplerSettings) -> str:
    """The cache key of a fit: data fingerprint, model specification, sampler settings.

    Equal to :func:`fit_token` of the fit these choices produce.
    """
    from hte.api import model_spec

    spec = model_spec(data, interactions, prior)
    return "|".join([data.fingerprint, repr(spec), repr(settings)])


# -- taking turns ---------------------------------------------------------------------------------

#: Environment variable: how many fits one server runs at once.
ENV_MAX_FITS = "HTE_MAX_FITS"


class FitQueue:
    """First come, first served: at most ``slots`` fits run at once; thread-safe.

    A sampler keeps a core busy, so on a small server fits that all start at once each take
    several times longer and freeze every page; in turn, each one is as fast as alone.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def turn(self, waiting: Callable[[int], None] | None = None) -> Iterator[None]:
        """Wait for a free slot, then hold it for the block. While waiting, ``waiting(ahead)``
        is called about once a second with the number of fits ahead (running or queued before
        this one). If waiting is interrupted (the user leaves the page), the place is given up.
        """
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
        try:
            while True:
                with self._cond:
                    place = self._waiting.index(ticket)
                    if place == 0 and self._running < self.slots:
                        self._waiting.pop(0)
                        self._running += 1
                        break
                    ahead = place + self._running
                if waiting is not None:
                    waiting(ahead)
                with self._cond:
                    self._cond.wait(timeout=1.0)
        except BaseException:  # also Streamlit's stop and rerun, which are not Exceptions
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()


def max_fits() -> int:
    """Fits run at once: ``HTE_MAX_FITS``, else half the cores (at least one)."""
    raw = os.environ.get(ENV_MAX_FITS, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, (os.cpu_count() or 2) // 2)


@st.cache_resource(show_spinner=False)
def fit_queue() -> FitQueue:
    """The server-wide queue of fits (shared by all sessions)."""
    return FitQueue(max_fits())


def fit_model(data: PreparedData, interactions: Sequence[str], prior: str,
              settings: SamplerSettings,
              progress: Callable[[float, str], None] | None = None) -> tuple[Fit, bool]:
    """The fit for these choices: from the cache, or run NUTS now, in turn with other sessions'
    fits (:func:`fit_queue`; ``progress`` hears the place in the queue). Returns
    (fit, was_cached)."""
    from hte.api import fit as run_fit

    key = fit_key(data, interactions, prior, settings)
    store = fit_store()
    cached = store.get(key)
    if cached is not None:
        return cached, True
    queue = fit_queue()

    def waiting(ahead: int) -> None:
        if progress is not None:
            fits = "1 fit is" if ahead == 1 else f"{ahead} fits are"
            progress(0.0, f"Waiting for the server: {fits} ahead of yours (it runs "
                          f"{queue.slots} at a time). Yours starts as soon as one finishes.")

    with queue.turn(waiting):
        cached = store.get(key)  # someone may have fitted the same choices meanwhile
        if cached is not None:
            return cached, True
        fit = run_fit(data, interactions=list(interactions), prior_strength=prior,
                      chains=settings.chains, warmup=settings.warmup, draws=settings.draws,
                      seed=settings.seed, target_accept=settings.target_accept,
                      progress=progress)
    store.put(key, fit)
    return fit, False


# -- background warm-ups --------------------------------------------------------------------------

class WarmUps:
    """Background compilations, one at a time in one thread, the latest request first.

    Choosing a model passes through intermediate choices (a factor removed, then another; a
    number typed digit by digit), each a request. Only the last one or two matter: at most
    ``pending`` requests wait, older ones are dropped (and may be requested again), and the
    newest is compiled next. Each key is compiled once per server.
    """

    def __init__(self, pending: int = 2) -> None:
        self.pending = pending
        self._waiting: OrderedDict[str, Callable[[], Any]] = OrderedDict()
        self._started: set[str] = set()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()

    def start(self, key: str, work: Callable[[], Any]) -> bool:
        """Queue ``work`` unless ``key`` was queued or run before. True if queued."""
        with self._cond:
            if key in self._started or key in self._waiting:
                return False
            self._waiting[key] = work
            while len(self._waiting) > self.pending:
                self._waiting.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="hte-warm-up")
                self._thread.start()
            self._cond.notify_all()
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._waiting))
                key, work = self._waiting.popitem(last=True)
                self._started.add(key)
                self._busy = True
            try:
                work()
            except Exception:  # a failed warm-up only means the fit compiles for itself
                logging.getLogger(__name__).warning("sampler warm-up failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running (tests, benchmarks). False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._busy, timeout)


@st.cache_resource(show_spinner=False)
def warm_ups() -> WarmUps:
    return WarmUps()


def warm_up(data: PreparedData, interactions: Sequence[str], prior: str,
            settings: SamplerSettings) -> bool:
    """Compile, in the background, the sampler a fit of these choices will use.

    Compiling takes 10-20 s on a small machine the first time a model shape is seen; started
    while the user reads the Model page, it is done (or well along) when they click Fit: the
    fit waits for it instead of compiling again. Keyed by what the compiled code depends on
    (family, factors' level counts, intersections, number of cells, chains, warm-up length,
    draws, target acceptance), so a new seed or outcome values do not start another. Set
    ``HTE_WARM_UP=off`` to disable. Returns True when a compilation was started.
    """
    if os.environ.get("HTE_WARM_UP", "on").lower() in {"off", "0", "false", "no"}:
        return False
    from hte.api import model_spec
    from hte.fitting import precompile_for

    spec = model_spec(data, interactions, prior)
    levels = tuple(len(data.cells.levels[f]) for f in spec.factors)
    shape = dataclasses.replace(settings, seed=0)
    key = "|".join([repr(spec.family), repr(spec.factors), repr(levels), repr(spec.interactions),
                    str(len(data.cells.cells)), repr(shape)])
    return warm_ups().start(key, lambda: precompile_for(data.cells, spec, shape))


# -- the session's fit ----------------------------------------------------------------------------

def current_fit() -> Fit | None:
    return st.session_state.get(FIT)


def set_fit(fit: Fit) -> None:
    st.session_state[FIT] = fit


def fit_token(fit: Fit) -> str:
    """Identifies a fit's results: same data, spec and settings give the same draws."""
    return "|".join([str(fit.data_info.get("fingerprint", id(fit))), repr(fit.spec),
                     repr(fit.settings)])


# -- cached results of a fit ----------------------------------------------------------------------

@st.cache_data(show_spinner=False, max_entries=64)
def _effects(token: str, by: tuple[str, ...] | None, threshold: float, interval: float,
             cutoff: float, min_arm: int, _fit: Fit) -> pd.DataFrame:
    return _fit.effects(list(by) if by else None, threshold, interval, cutoff, min_arm=min_arm)


def effects(fit: Fit, by: Sequence[str] | str | None, rule: DecisionRule) -> pd.DataFrame:
    """:meth:`Fit.effects`, cached per fit and rule."""
    key = (by,) if isinstance(by, str) else (tuple(by) if by else None)
    return _effects(fit_token(fit), key, rule.threshold, rule.interval, rule.cutoff,
                    rule.min_arm, fit)


def effect_table(fit: Fit, rule: DecisionRule, pairs: Sequence[tuple[str, str]] = ()
                 ) -> pd.DataFrame:
    """Everyone, each level of each factor, then each combination of the given pairs."""
    parts = [effects(fit, None, rule), *(effects(fit, f, rule) for f in fit.factors),
             *(effects(fit, list(pair), rule) for pair in pairs)]
    return pd.concat(parts, ignore_index=True)


@st.cache_data(show_spinner=False, max_entries=64)
def _draws(token: str, groups: tuple[tuple[tuple[str, str], ...], ...], _fit: Fit) -> np.ndarray:
    return _fit.effect_draws([dict(g) for g in groups])


def effect_draws(fit: Fit, groups: Sequence[dict]) -> np.ndarray:
    """Posterior draws (draws x groups) of each group's effect, cached per fit."""
    key = tuple(tuple(g.items()) for g in groups)
    return _draws(fit_token(fit), key, fit)


@st.cache_data(show_spinner=False, max_entries=8)
def _predictive_check(token: str, interval: float, _fit: Fit):
    from hte.checks import predictive_check

    return predictive_check(_fit, interval=interval)


def predictive_check(fit: Fit, interval: float = 0.9):
    """:func:`hte.checks.predictive_check` of ``fit``, cached per fit."""
    return _predictive_check(fit_token(fit), interval, fit)


def group_row(fit: Fit, group: dict[str, str], rule: DecisionRule) -> pd.Series:
    """The effects-table row of one group (any combination of factor levels)."""
    by = [f for f in fit.factors if f in group]
    table = effects(fit, by or None, rule)
    mask = np.ones(len(table), dtype=bool)
    for f in by:
        mask &= (table[f].astype(str) == str(group[f])).to_numpy()
    if not mask.any():
        from hte.errors import SpecError

        raise SpecError(f"Nobody in the data is in the group "
                        f"{', '.join(f'{k} = {v}' for k, v in group.items())}.")
    return table[mask].iloc[0]
