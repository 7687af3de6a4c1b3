"""The design matrix of the multilevel model, written over cells.

Coefficient vector ``beta`` (length P) is laid out as::

    [alpha, tau, u_1, ..., u_K, v_1, ..., v_K]

``alpha`` is the control-arm intercept and ``tau`` the average treatment effect. For grouping term
``k`` with ``L_k`` levels (an intersection's levels are all combinations of its factors' levels),
the level intercepts are ``a_k = Q_k u_k`` and the level treatment effects are ``b_k = Q_k v_k``,
where ``Q_k`` is an ``L_k x (L_k - 1)`` orthonormal basis of the vectors that sum to zero. With
``u_k ~ N(0, sigma_k^2 I)`` this is exactly a zero-sum normal prior on ``a_k``, so the intercept
and the level effects do not form a ridge in the posterior.

A cell with level ``l_k`` of each term and arm ``z`` has linear predictor::

    eta = alpha + z * tau + sum_k Q_k[l_k] . u_k + z * sum_k Q_k[l_k] . v_k
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def zero_sum_basis(n_levels: int) -> np.ndarray:
    """Orthonormal basis (n_levels x n_levels-1) of the zero-sum subspace (normalized Helmert)."""
    q = np.zeros((n_levels, max(n_levels - 1, 0)))
    for j in range(1, n_levels):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= np.sqrt(j * (j + 1))
    return q


@dataclass(frozen=True)
class Design:
    """Maps cells (level codes per factor, arm) to rows of the design matrix.

    ``factors`` and ``n_levels`` describe the factor columns of the codes; ``terms`` hold, for
    each grouping term, the positions of its factors in ``factors``.
    """

    factors: tuple[str, ...]
    n_levels: tuple[int, ...]
    terms: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, factors: tuple[str, ...], levels: dict[str, tuple[str, ...]],
              terms: tuple[tuple[str, ...], ...]) -> Design:
        index = {f: i for i, f in enumerate(factors)}
        return cls(
            factors=tuple(factors),
            n_levels=tuple(len(levels[f]) for f in factors),
            terms=tuple(tuple(index[f] for f in term) for term in terms),
        )

    @cached_property
    def term_sizes(self) -> tuple[int, ...]:
        """Number of levels L_k of each term (product of its factors' levels)."""
        return tuple(int(np.prod([self.n_levels[i] for i in t])) for t in self.terms)

    @cached_property
    def bases(self) -> tuple[np.ndarray, ...]:
        return tuple(zero_sum_basis(size) for size in self.term_sizes)

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @cached_property
    def n_level_coefs(self) -> int:
        """Coefficients per arm part: sum of (L_k - 1)."""
        return int(sum(size - 1 for size in self.term_sizes))

    @property
    def n_coefs(self) -> int:
        return 2 + 2 * self.n_level_coefs

    @cached_property
    def coef_term(self) -> np.ndarray:
        """For each level coefficient (after alpha and tau), the index of its term."""
        return np.concatenate(
            [np.full(size - 1, k, dtype=np.int64) for k, size in enumerate(self.term_sizes)]
            or [np.zeros(0, dtype=np.int64)]
        )

    def term_levels(self, codes: np.ndarray) -> np.ndarray:
        """Level index of each term (rows x K); intersections use mixed-radix indices."""
        codes = _as_2d(codes, len(self.factors))
        out = np.zeros((codes.shape[0], self.n_terms), dtype=np.int64)
        for k, term in enumerate(self.terms):
            idx = np.zeros(codes.shape[0], dtype=np.int64)
            for i in term:
                idx = idx * self.n_levels[i] + codes[:, i]
            out[:, k] = idx
        return out

    def level_rows(self, codes: np.ndarray) -> np.ndarray:
        """``[Q_1[l_1], ..., Q_K[l_K]]`` per row (rows x n_level_coefs)."""
        lev = self.term_levels(codes)
        blocks = [basis[lev[:, k]] for k, basis in enumerate(self.bases)]
        if not blocks:
            return np.zeros((lev.shape[0], 0))
        return np.concatenate(blocks, axis=1)

    def rows(self, codes: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Full design rows ``[1, z, Q[l], z * Q[l]]`` (rows x P)."""
        g = self.level_rows(codes)
        z = np.asarray(z, dtype=np.float64).reshape(-1, 1)
        ones = np.ones_like(z)
        return np.concatenate([ones, z, g, z * g], axis=1)

    def effect_rows(self, codes: np.ndarray) -> np.ndarray:
        """Rows r with ``r . beta`` = treatment effect on the linear-predictor scale."""
        g = self.level_rows(codes)
        n = g.shape[0]
        return np.concatenate([np.zeros((n, 1)), np.ones((n, 1)), np.zeros_like(g), g], axis=1)

    def baseline_rows(self, codes: np.ndarray) -> np.ndarray:
        """Rows r with ``r . beta`` = control-arm linear predictor."""
        return self.rows(codes, np.zeros(_as_2d(codes, len(self.factors)).shape[0]))

    def level_effects(self, beta: np.ndarray, term: int) -> tuple[np.ndarray, np.ndarray]:
        """Level intercepts ``a_k`` and level treatment effects ``b_k`` of one term from draws.

        ``beta`` has shape (..., P); returns two arrays of shape (..., L_k).
        """
        start = 2 + int(sum(size - 1 for size in self.term_sizes[:term]))
        width = self.term_sizes[term] - 1
        u = beta[..., start:start + width]
        v = beta[..., start + self.n_level_coefs:start + self.n_level_coefs + width]
        q = self.bases[term]
        return u @ q.T, v @ q.T


def _as_2d(codes: np.ndarray, n_factors: int) -> np.ndarray:
    """Level codes as (rows x factors); a 1-D array is one factor's codes or one row."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 2:
        return codes
    return codes.reshape(-1, n_factors) if n_factors else codes.reshape(-1, 0)
