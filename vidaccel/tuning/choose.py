"""Choosing one candidate per unit (a layer, or a head of a layer) under an attention budget.

Given the measured recall ``R[u, c]`` of candidate ``c`` on unit ``u`` and each candidate's cost ``cost[c]``
(the share of dense attention work its plan visits), both budgets pick one candidate per unit:

* **recall target** ``r``: on each unit the cheapest candidate whose recall is >= ``r`` (dense always
  qualifies); ties go to dense, then to the higher recall.
* **speed-up target** ``s``: the assignment maximising the summed recall subject to mean cost <= ``1/s``:
  the Lagrangian choice ``argmax_c R[u, c] - lam * cost[c]`` with the smallest ``lam`` that meets the budget
  (bisection), then single-unit upgrades by best recall gained per cost while the budget allows.
"""

from __future__ import annotations

import torch


def by_recall(recall: torch.Tensor, cost: torch.Tensor, target: float, dense: int) -> list[int]:
    """Per unit, the cheapest candidate with recall >= `target`; `dense` (its index) always qualifies."""
    ok = recall >= target
    ok[:, dense] = True
    masked = torch.where(ok, cost[None, :].expand_as(recall), torch.full_like(recall, float("inf")))
    cheapest = masked <= masked.min(1, keepdim=True).values
    best = torch.where(cheapest, recall, torch.full_like(recall, -float("inf"))).argmax(1)
    # a sparse pattern that costs what dense costs gains nothing: dense (SDPA) is then the choice
    return torch.where(cheapest[:, dense], dense, best).tolist()


def _hull(recall_row: list[float], cost: list[float]) -> list[int]:
    """Candidates on the upper convex hull of (cost, recall) of one unit, cheapest first (dominated ones out)."""
    order = sorted(range(len(cost)), key=lambda c: (cost[c], -recall_row[c]))
    hull: list[int] = []
    for c in order:
        if hull and recall_row[c] <= recall_row[hull[-1]]:
            continue  # costs at least as much for no more recall
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or below the segment a -> c: not on the hull
            if (recall_row[b] - recall_row[a]) * (cost[c] - cost[a]) <= (recall_row[c] - recall_row[a]) * (cost[b] - cost[a]):
                hull.pop()
            else:
                break
        hull.append(c)
    return hull


def by_speedup(recall: torch.Tensor, cost: torch.Tensor, speedup: float) -> list[int]:
    """Most summed recall with mean cost <= 1 / `speedup` (ValueError when out of reach).

    The greedy of the multiple-choice knapsack: every unit starts at its cheapest hull candidate, then hull
    steps are taken in order of recall gained per cost while they fit; the result is within one step's
    gain of the optimum (the LP relaxation has at most one fractional unit), and never below the best
    uniform choice (one candidate for every unit), which is returned where it is better.
    """
    units = recall.shape[0]
    budget = units / speedup
    cheapest = float(cost.min())
    if cheapest * units > budget * (1 + 1e-9):
        raise ValueError(f"speedup={speedup:g} is out of reach with these candidates: the cheapest one costs "
                         f"{cheapest:.4f} of dense attention (at most {1 / cheapest:.2f}x). Ask for less, or add "
                         f"sparser candidates.")
    R, C = recall.double().tolist(), cost.double().tolist()
    hulls = [_hull(row, C) for row in R]
    choice = [h[0] for h in hulls]
    spent = sum(C[c] for c in choice)
    steps = []  # (-slope, unit, position on the hull)
    for u, h in enumerate(hulls):
        for i in range(1, len(h)):
            steps.append((-(R[u][h[i]] - R[u][h[i - 1]]) / (C[h[i]] - C[h[i - 1]]), u, i))
    blocked = set()
    for _, u, i in sorted(steps):
        if u in blocked:
            continue  # an earlier step of this unit did not fit: its later steps need it
        extra = C[hulls[u][i]] - C[hulls[u][i - 1]]
        if spent + extra <= budget + 1e-12:
            spent += extra
            choice[u] = hulls[u][i]
        else:
            blocked.add(u)
    # a uniform choice can beat the greedy where a big step did not fit: keep the better one
    uniform = [c for c in range(len(C)) if C[c] * units <= budget + 1e-12]
    best_uniform = max(uniform, key=lambda c: sum(row[c] for row in R))
    if sum(row[best_uniform] for row in R) > sum(R[u][c] for u, c in enumerate(choice)):
        return [best_uniform] * units
    return choice
