"""Small-cell disclosure control for shared reports: which groups to withhold.

A report publishes, for each of its groups (everyone, each factor level, each pair of levels),
the people per arm, the raw difference in means and posterior draws of the group's average
effect. Every group is a union of the model's *finest cells* -- the combinations of all the
model's factors that occur in the data -- and every published number that adds people up is
the same linear sum over cells: a group's treated count is the sum of its cells' treated counts
(control likewise), and its size times each of its effect draws is the sum of its cells' sizes
times their effect draws (``Fit.effect_draws`` weights the cells by their people). So a withheld
group can be recomputed from published ones exactly when its membership vector over the cells
is a linear combination of theirs, for the weighting at hand.

:func:`withheld_groups` applies three rules, in order:

1. *Primary suppression*: a group with fewer than ``min_cell`` (k) treated people or fewer than
   k control people is withheld.
2. *Lines* (the usual cell-suppression heuristic): in every partition of a group into the levels
   of one more factor, either no member is withheld or at least two are, and the withheld
   members of a published group hold at least k treated and k control people between them (their
   total is that group minus its published members, so it must not be a small group itself).
3. *Exact check*: while some withheld group's membership vector lies in the span of the
   published groups' vectors -- over the cells with treated people (the treated counts and the
   treated side of the raw differences), or over the cells with control people -- more
   published groups are withheld: the smallest one whose removal takes that group out of the
   span (everyone only if nothing else will do). Withholding more never brings a group back
   into the span, so this ends.

The treated and control weightings are the only ones to check: restricting a linear
representation to fewer cells keeps it a representation, so a group that no combination of
published treated counts yields is not yielded by the people counts either, nor by the effect
draws, whose weights (people per cell) are positive on every cell. The check treats the cells
as an adversary would who knows which cells exist and which have treated or control people, but
not how many people they hold.

**Guaranteed** (up to rounding tolerances, which all err towards withholding more): every
published group has at least k treated and k control people, and no withheld group's number of
treated people, control people or people, nor its raw difference in means, nor its effect draws
(or size times draws), is a fixed linear combination of the published groups' counts,
differences and draws, whatever the cells' own counts, outcomes and effect draws. Every stored
draw of a group is the same linear functional of the cells' effect draws (their people-weighted
average), so with the cells' effects as unknowns, thinning the draws or combining them across
groups or draws gives nothing beyond those linear sums.

**Not guaranteed**:

- *The model's structure.* The cells' effects are not unknowns to someone who has the formula:
  unless the model includes the interaction of all its factors, a cell's effect is a sum of terms
  shared with other cells (exactly so for Gaussian outcomes). The published groups' joint draws then
  lie in a space of the model's dimension, and the linear relations among them -- computable from
  the draws alone -- have coefficients that depend on the cells' sizes. Solving for those sizes can
  recover withheld ones: in a 3 x 3 table fitted as ``A + B`` with a 4-person cell, a snapshot that
  withholds the 4 cells of a rectangle around it leaves the cell sizes one equation short from the
  counts, but with the relations among the draws all nine sizes follow exactly (see the expected
  failure in ``tests/test_disclosure.py``). The exact check does not cover this.
- *Pooling.* A published group's posterior still depends on a small group's outcomes through
  the model's partial pooling (so does the posterior of everyone). That is inference from the
  model, not disclosure of the small group's numbers; no suppression rule removes it.
- *Sums of withheld groups.* The lines rule keeps the withheld part of a published group at k
  or more per arm; other sums of several withheld groups may be recoverable and are not checked.
- *Beyond linear sums.* Raw standard errors involve squares of means; bounds that integrality
  and non-negativity of counts imply (what a linear-programming audit computes) are not checked.
- *The adversary's knowledge.* The check assumes someone who knows which cells exist and which
  have treated or control people; a group whose count is zero in an arm is not protected there.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, sparse
from scipy.linalg import lapack

#: Pivoted Cholesky of the row-normalized Gram matrix stops below this pivot; the directions
#: left count as relations among the groups. Rounding leaves about 1e-13; treating a genuine
#: but weaker direction as a relation only withholds more.
RANK_TOL = 1e-9
#: Singular values of the withheld rows of the (orthonormal) relations below this are zero.
#: Keeping a tiny one as non-zero only withholds more.
SV_TOL = 1e-10
#: A withheld group is recoverable when its unit vector lies in the span of the withheld rows
#: of the relations, i.e. its leverage there is 1 (within this).
LEVERAGE_TOL = 1e-6
#: A published group takes part in a representation when its coefficient exceeds this (relative).
COEF_TOL = 1e-8


def membership_matrix(groups: Sequence[Mapping[str, str]], cells: pd.DataFrame) -> np.ndarray:
    """Boolean (groups x cells): is each finest cell (a row of ``cells``) in each group?

    A group maps factors to levels (``{}`` is everyone); ``cells`` has one column per factor.
    """
    out = np.ones((len(groups), len(cells)), dtype=bool)
    codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
    for i, group in enumerate(groups):
        for factor, level in group.items():
            if factor not in codes:
                values, uniques = pd.factorize(cells[factor].astype(str))
                codes[factor] = (values, {u: k for k, u in enumerate(uniques)})
            values, index = codes[factor]
            out[i] &= values == index.get(str(level), -1)
    return out


def withheld_groups(groups: Sequence[Mapping[str, str]], membership: np.ndarray,
                    n_treated: Sequence[int], n_control: Sequence[int],
                    min_cell: int) -> np.ndarray:
    """Boolean mask of the groups to withhold (rules 1-3 of :mod:`hte.disclosure`).

    ``groups`` are mappings factor -> level (their parent/child structure gives the lines of
    rule 2), ``membership`` is (groups x cells) as :func:`membership_matrix`, ``n_treated`` and
    ``n_control`` are the people per arm in each cell. Cells with nobody are ignored.
    """
    member, treated, control = _inputs(membership, n_treated, n_control)
    if len(groups) != member.shape[0]:
        raise ValueError("groups and membership disagree on the number of groups")
    k = int(min_cell)
    g_treated, g_control = member @ treated, member @ control
    hidden = (g_treated < k) | (g_control < k)
    hidden = _line_suppression(groups, g_treated, g_control, k, hidden)
    if not hidden.any():
        return hidden
    spaces = _spaces(member, treated, control)
    size = g_treated + g_control
    last = np.array([not g for g in groups])  # everyone: withheld only if nothing else will do
    while True:
        found = [(space, item) for space in spaces for item in space.recoverable(hidden)]
        if not found:
            return hidden
        hidden[_choose(found, hidden, size, member, last)] = True


def recoverable_groups(membership: np.ndarray, hidden: np.ndarray, n_treated: Sequence[int],
                       n_control: Sequence[int]) -> np.ndarray:
    """Boolean mask of the ``hidden`` groups whose treated, control or total count (and so
    effect draws) is a linear combination of the published (not hidden) groups' counts."""
    member, treated, control = _inputs(membership, n_treated, n_control)
    hidden = np.asarray(hidden, dtype=bool)
    out = np.zeros(member.shape[0], dtype=bool)
    for space in _spaces(member, treated, control):
        for group, _ in space.recoverable(hidden):
            out[group] = True
    return out


def _inputs(membership, n_treated, n_control) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    member = np.asarray(membership, dtype=bool)
    treated = np.asarray(n_treated, dtype=np.int64)
    control = np.asarray(n_control, dtype=np.int64)
    if member.ndim != 2 or treated.shape != (member.shape[1],) \
            or control.shape != (member.shape[1],):
        raise ValueError("membership must be (groups x cells), with one count per cell per arm")
    if (treated < 0).any() or (control < 0).any():
        raise ValueError("people per cell cannot be negative")
    return member, treated, control


# --------------------------------------------------------------------------------------------
# Rule 2: lines
# --------------------------------------------------------------------------------------------


def _line_suppression(groups: Sequence[Mapping[str, str]], treated: np.ndarray,
                      control: np.ndarray, k: int, hidden: np.ndarray) -> np.ndarray:
    """Rule 2: complementary suppression along each line (a group and its partition into the
    levels of one more factor) until nothing changes. The member withheld is the smallest
    published one among those that close a cycle (see ``closes``), else the smallest."""
    index = {frozenset(g.items()): i for i, g in enumerate(groups)}
    lines: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        for f in g:
            parent = index.get(frozenset((key, v) for key, v in g.items() if key != f))
            if parent is not None:
                lines[(parent, f)].append(i)
    on_lines: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for line, kids in lines.items():
        for c in kids:
            on_lines[c].append(line)

    def closes(c: int, line: tuple[int, str]) -> bool:
        """Whether ``c`` is on another line that already has a withheld member: withholding it
        there closes a cycle (a 2 x 2 rectangle in a two-way table) instead of starting one."""
        return any(hidden[other[0]] or hidden[lines[other]].any()
                   for other in on_lines[c] if other != line)

    hidden = hidden.copy()
    size = treated + control
    changed = True
    while changed:
        changed = False
        for line, kids in lines.items():
            shown = [c for c in kids if not hidden[c]]
            gone = [c for c in kids if hidden[c]]
            withheld = len(gone) + int(hidden[line[0]])
            if not shown or withheld == 0:
                continue
            thin = not hidden[line[0]] and (treated[gone].sum() < k or control[gone].sum() < k)
            if withheld == 1 or thin:
                best = min(shown, key=lambda c: (not closes(c, line), size[c], c))
                hidden[best] = True
                changed = True
    return hidden


# --------------------------------------------------------------------------------------------
# Rule 3: the exact check
# --------------------------------------------------------------------------------------------


class _Space:
    """The linear relations among the groups' membership vectors over one set of cells.

    ``rows`` are the groups with at least one of these cells (the others have nothing there to
    recover); ``basis`` (rows x d) is an orthonormal basis of every y with
    ``y @ membership[rows][:, cells] == 0``. A withheld group j is recoverable iff some relation
    is non-zero at j and zero at every other withheld group: iff the unit vector of j lies in
    the span of the withheld rows of ``basis``.
    """

    def __init__(self, member: np.ndarray) -> None:
        self.rows = np.flatnonzero(member.any(axis=1))
        self.basis = _relations(member[self.rows])

    def recoverable(self, hidden: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(group, candidates) for each recoverable withheld group: the published groups that
        take part in its representation, essential ones (whose withholding alone takes it out of
        the span) first, as (group, essential) records sorted by that."""
        z = self.basis
        at = np.flatnonzero(hidden[self.rows])
        if z.shape[1] == 0 or at.size == 0:
            return []
        u, s, vt = np.linalg.svd(z[at], full_matrices=False)
        r = int((s > SV_TOL).sum())
        if r == 0:
            return []
        ur, vr = u[:, :r], vt[:r]
        recoverable = np.flatnonzero((ur**2).sum(axis=1) > 1 - LEVERAGE_TOL)
        if recoverable.size == 0:
            return []
        # The relation that is 1 at j and 0 at the other withheld rows, for each recoverable j.
        coef = z @ (vr.T @ (ur[recoverable] / s[:r]).T)
        # A published row is essential iff no relation among published rows alone touches it:
        # iff its row of the basis lies in the span of the withheld rows (the rows of vr).
        outside = z - (z @ vr.T) @ vr
        essential = (outside**2).sum(axis=1) < SV_TOL
        published = ~hidden[self.rows]
        out = []
        for col, j in enumerate(recoverable):
            y = np.abs(coef[:, col])
            takes_part = published & (y > COEF_TOL * y.max())
            out.append((int(self.rows[at[j]]),
                        np.stack([self.rows[takes_part], essential[takes_part]], axis=1)))
        return out


def _spaces(member: np.ndarray, treated: np.ndarray, control: np.ndarray) -> list[_Space]:
    """One :class:`_Space` per distinct weighting: cells with treated, with control people."""
    supports = []
    for weight in (treated, control):
        support = weight > 0
        if support.any() and not any((support == s).all() for s in supports):
            supports.append(support)
    return [_Space(member[:, s]) for s in supports]


def _choose(found: list[tuple[_Space, tuple[int, np.ndarray]]], hidden: np.ndarray,
            size: np.ndarray, member: np.ndarray, last: np.ndarray) -> list[int]:
    """Published groups to withhold this round: for each recoverable (group, weighting), the
    smallest published group whose withholding alone takes it out of the span, reusing one
    chosen for another where it serves; failing that, the smallest one in its representation
    (the next round checks again). Groups marked ``last`` are chosen only when no other takes
    part."""
    def first(pool: np.ndarray) -> np.ndarray:
        return pool[~last[pool]] if (~last[pool]).any() else pool

    chosen: list[int] = []
    order = []
    for _, (group, cands) in found:
        cands = cands[np.isin(cands[:, 0], first(cands[:, 0]))]
        essential = cands[cands[:, 1] == 1, 0]
        pool = essential if essential.size else cands[:, 0]
        if pool.size == 0:  # rounding: fall back to any published group overlapping it
            pool = first(np.flatnonzero(~hidden & (member & member[group]).any(axis=1)))
        best = min(pool.tolist(), key=lambda g: (size[g], g)) if pool.size else None
        order.append((size[best] if best is not None else np.inf, pool, best))
    for _, pool, best in sorted(order, key=lambda o: o[0]):
        if best is None or any(g in chosen for g in pool.tolist()):
            continue
        chosen.append(best)
    if not chosen:
        raise RuntimeError("small-cell protection could not choose a group to withhold")
    return chosen


def _relations(member: np.ndarray) -> np.ndarray:
    """Orthonormal basis (groups x d) of {y : y @ member == 0} for a 0/1 matrix whose rows are
    not all zero.

    Groups made of one remaining cell are eliminated first, exactly (their coefficient in any
    relation is minus the sum of the others' on that cell; a cell in one remaining group forces
    that group's coefficient to 0); this settles two-factor tables with no dense algebra. The
    rest is factorized by pivoted Cholesky of the Gram matrix of the unit-normalized rows.
    """
    n_rows = member.shape[0]
    csr = sparse.csr_matrix(member, dtype=np.float64)
    csc = csr.tocsc()
    rows_alive, cols_alive, steps = _peel(csr, csc)
    core_rows = np.flatnonzero(rows_alive)
    core = csr[core_rows][:, np.flatnonzero(cols_alive)]
    basis = np.zeros((n_rows, 0))
    if core_rows.size:
        counts = np.asarray(core.sum(axis=1)).ravel()
        empty = counts == 0
        unit = np.zeros((core_rows.size, int(empty.sum())))
        unit[np.flatnonzero(empty), np.arange(unit.shape[1])] = 1.0
        parts = [unit]
        full = np.flatnonzero(~empty)
        if full.size:
            scale = 1 / np.sqrt(counts[full])
            scaled = sparse.diags(scale) @ core[full]
            rel = _gram_null(np.asarray((scaled @ scaled.T).todense()))
            part = np.zeros((core_rows.size, rel.shape[1]))
            part[full] = rel * scale[:, None]  # relations of the scaled rows, unscaled
            parts.append(part)
        basis = np.zeros((n_rows, sum(p.shape[1] for p in parts)))
        basis[core_rows] = np.hstack(parts)
    for group, others in reversed(steps):
        basis[group] = 0.0 if others is None else -basis[others].sum(axis=0)
    if basis.shape[1] == 0:
        return basis
    q, _ = np.linalg.qr(basis)
    return q


def _peel(csr: sparse.csr_matrix, csc: sparse.csc_matrix):
    """Exact elimination of one-cell groups and one-group cells (see :func:`_relations`).

    Returns the rows and columns left, and the steps (group, other groups on its cell, or None
    when its coefficient is 0) in elimination order.
    """
    n_rows, n_cols = csr.shape
    row_left = np.diff(csr.indptr).astype(np.int64)
    col_left = np.diff(csc.indptr).astype(np.int64)
    rows_alive = np.ones(n_rows, dtype=bool)
    cols_alive = np.ones(n_cols, dtype=bool)
    single_rows = deque(np.flatnonzero(row_left == 1).tolist())
    single_cols = deque(np.flatnonzero(col_left == 1).tolist())
    steps: list[tuple[int, np.ndarray | None]] = []
    while single_rows or single_cols:
        if single_rows:
            g = single_rows.popleft()
            if not rows_alive[g] or row_left[g] != 1:
                continue
            cols = csr.indices[csr.indptr[g]:csr.indptr[g + 1]]
            c = cols[cols_alive[cols]][0]
            on_c = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
            others = on_c[rows_alive[on_c] & (on_c != g)]
            steps.append((g, others))
            rows_alive[g] = cols_alive[c] = False
            row_left[others] -= 1
            single_rows.extend(others[row_left[others] == 1].tolist())
        else:
            c = single_cols.popleft()
            if not cols_alive[c] or col_left[c] != 1:
                continue
            on_c = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
            g = on_c[rows_alive[on_c]][0]
            steps.append((int(g), None))
            rows_alive[g] = cols_alive[c] = False
            cols = csr.indices[csr.indptr[g]:csr.indptr[g + 1]]
            cols = cols[cols_alive[cols]]
            col_left[cols] -= 1
            single_cols.extend(cols[col_left[cols] == 1].tolist())
            cols_alive[cols[col_left[cols] == 0]] = False
    return rows_alive, cols_alive, steps


def _gram_null(gram: np.ndarray) -> np.ndarray:
    """Basis (n x d) of the null space of a positive semi-definite matrix with unit diagonal,
    by Cholesky factorization with complete pivoting (LAPACK ``dpstrf``)."""
    n = gram.shape[0]
    bound = float(np.abs(gram).sum(axis=1).max())  # >= the largest eigenvalue
    tol = max(RANK_TOL, 64 * n * np.finfo(float).eps * bound)
    c, piv, rank, info = lapack.dpstrf(gram, tol=tol, lower=1)
    if info < 0:
        raise RuntimeError(f"dpstrf failed (info={info})")
    piv = piv - 1
    factor = np.tril(c)[:, :rank]
    null = np.zeros((n, n - rank))
    null[piv[rank:]] = np.eye(n - rank)
    if rank and n > rank:
        null[piv[:rank]] = -linalg.solve_triangular(factor[:rank].T, factor[rank:].T,
                                                    lower=False)
    return null
