"""Minimum-cost assignment between a frame's tracks and its detections (the tracker's matching).

The shortest augmenting path method (Jonker and Volgenant's, as written for rectangular problems
by Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 52(4), 2016): rows
are added one at a time, each by the cheapest path of reduced costs from it to a free column,
along which the matching flips; dual prices keep the reduced costs non-negative. It is the method
`scipy.optimize.linear_sum_assignment` implements, ties broken the same way, so the tracker's
matches are scipy's (`tests/test_track.py` compares them); written here because importing
`scipy.optimize` cost 0.23-0.45 s of a video run's 1.8 s start-up, for matrices of a few dozen
faces (issue 25).
"""

from __future__ import annotations

import numpy as np


def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The matching of least total cost: `rows[k]` is matched to `cols[k]`; every row is matched where
    there are no more rows than columns, else every column. `rows` ascend. `cost`: `[n, m]` finite."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost must be finite")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n), np.zeros(m)  # dual prices of rows and columns
    col_of, row_of = np.full(n, -1), np.full(m, -1)
    for row in range(n):
        sink, reach, path, rows_seen, cols_seen = _shortest_path(cost, u, v, row_of, row)
        shift = reach[sink]
        u[row] += shift
        others = rows_seen.copy()
        others[row] = False
        u[others] += shift - reach[col_of[others]]
        v[cols_seen] -= shift - reach[cols_seen]
        col = sink
        while True:  # flip the matching along the path, back to `row`
            r = path[col]
            row_of[col] = r
            col_of[r], col = col, col_of[r]
            if r == row:
                break
    if transposed:
        order = np.argsort(col_of)
        return col_of[order], order
    return np.arange(n), col_of


def _shortest_path(cost, u, v, row_of, row):
    """From `row`, the cheapest path of reduced costs to a free column (Dijkstra over the columns):
    the free column it ends at, each column's path cost (`reach`) and predecessor row (`path`), and
    the rows and columns the search settled."""
    n, m = cost.shape
    reach, path = np.full(m, np.inf), np.full(m, -1)
    rows_seen, cols_seen = np.zeros(n, bool), np.zeros(m, bool)
    remaining = list(range(m - 1, -1, -1))  # unsettled columns, in the order ties are broken
    low, i = 0.0, row
    while True:
        rows_seen[i] = True
        left = np.array(remaining)
        through = low + cost[i, left] - u[i] - v[left]
        better = through < reach[left]
        reach[left[better]], path[left[better]] = through[better], i
        costs = reach[left]
        low = costs.min()
        ties = np.flatnonzero(costs == low)
        free = ties[row_of[left[ties]] == -1]
        index = int(free[-1] if len(free) else ties[0])  # the last free column at the least cost, else the first
        col = remaining[index]
        cols_seen[col] = True
        remaining[index] = remaining[-1]
        remaining.pop()
        if row_of[col] == -1:
            return col, reach, path, rows_seen, cols_seen
        i = row_of[col]
