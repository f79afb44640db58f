"""SHAP values of LightGBM trees for a few rows, from per-leaf tables computed once per model.

LightGBM's ``pred_contrib`` runs TreeSHAP (Lundberg et al. 2018), which costs
O(leaves · depth²) per tree and row: it rebuilds every leaf's path weights for every row.
That made reasons a third of a request (docs/BENCHMARKS.md, "Serving"), although the
offset boosters they explain have only a few dozen small trees.  The same values can be
had far more cheaply, as in Fast TreeSHAP v2 (Yang 2021), because a row enters a leaf's
share only through *which* of the leaf's path features it satisfies.

For a leaf with value ``v`` whose path splits on the distinct features ``P`` (``n`` of
them), let ``z_j`` be the product of the cover ratios (child rows / parent rows) of the
path's splits on ``j``, and ``o_j`` = 1 when the row goes the path's way at all of them.
The path-dependent SHAP value of feature ``i`` in ``P`` gets from this leaf

    v · (o_i − z_i) · Σ_{S ⊆ A∖{i}} w(|S|, n) · Π_{j ∈ P∖S∖{i}} z_j,

where ``A`` = {j : o_j = 1} and ``w(s, n) = s!(n − s − 1)!/n!``.  With
``F(B) = Σ_{S ⊆ B} w(|S|, n) · Π_{j ∈ P∖S} z_j`` that is ``−v · F(A)`` when ``i ∉ A``
and ``v · (1 − z_i)/z_i · F(A∖{i})`` when ``i ∈ A``.  ``F`` is tabulated once per leaf
over the ``2^n`` subsets (a sum over subsets), so a row costs one decision per node and
O(n) per leaf.  Measured on the demo bundle's offset boosters it is ~10x faster than
``pred_contrib``; the values agree with it to ~1e-15 (not bit for bit: the sums run in a
different order), which tests/serving/test_tree_shap.py checks on the bundled models and
on boosters with NaN, zero-as-missing and categorical splits.

The decision rule copies LightGBM's (``Tree::NumericalDecision`` and
``Tree::CategoricalDecision``): NaN is 0.0 unless the split's missing type is NaN; a
missing value (NaN, or zero for zero-as-missing) goes the split's default way; a
categorical split sends a value left when its integer part is one of the split's
categories, and NaN or negative values right.  Inputs within ``1e-35`` of zero count as
zero, as LightGBM's dense-matrix reader drops them.

:func:`compile_shap` returns None when a forest is not worth tabulating (a leaf with more
than :data:`MAX_PATH_FEATURES` distinct path features, a leaf that saw no training rows,
several trees per iteration, linear trees); callers then use ``pred_contrib``.  The loops
are compiled by numba on first use and cached on disk (``serving.app.load_model`` explains
one row before a model serves, so no request pays for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Any

import lightgbm as lgb
import numpy as np

from features.compiled import jit

__all__ = ["MAX_PATH_FEATURES", "TreeShap", "compile_shap"]

#: A leaf's table has 2^n entries; past 14 distinct path features (16k entries per leaf)
#: ``pred_contrib`` is used instead.  The demo bundle's offset boosters need at most 11.
MAX_PATH_FEATURES = 14
#: And at most this many table entries for a whole forest (8 MB of float64).
MAX_TABLE_ENTRIES = 1 << 20
#: LightGBM's kZeroThreshold: smaller magnitudes are read as zero.
_ZERO_THRESHOLD = 1e-35
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
# Columns of the int32 node table.
_FEATURE, _LEFT, _RIGHT, _CATEGORICAL, _DEFAULT_LEFT, _MISSING_TYPE, _CAT_START, _CAT_END = range(8)


@dataclass(frozen=True)
class TreeShap:
    """A booster's trees and per-leaf SHAP tables as flat arrays.

    Node ``j`` of tree ``t`` is row ``node_start[t] + j`` of ``nodes``; leaf ``l`` (global)
    owns path steps ``[step_start[l], step_start[l + 1])``, distinct features
    ``[slot_start[l], slot_start[l + 1])`` and table ``[table_start[l], ...)``.
    """

    n_features: int
    nodes: np.ndarray  # (n_nodes, 8) int32: feature, left, right, flags, category range
    thresholds: np.ndarray  # (n_nodes,) float64
    categories: np.ndarray  # (n_categories,) int64: the left categories of each split
    node_start: np.ndarray  # (n_trees + 1,) int64
    tree_leaves: np.ndarray  # (n_trees + 1,) int64: global leaf range of each tree
    leaf_value: np.ndarray  # (n_leaves,) float64
    step_start: np.ndarray  # (n_leaves + 1,) int64
    step_node: np.ndarray  # (n_steps,) int64: local node index
    step_child: np.ndarray  # (n_steps,) int64: the child on the way to the leaf
    step_slot: np.ndarray  # (n_steps,) int64: which distinct feature the step splits on
    slot_start: np.ndarray  # (n_leaves + 1,) int64
    slot_feature: np.ndarray  # (n_slots,) int64
    slot_ratio: np.ndarray  # (n_slots,) float64: (1 - z) / z
    table_start: np.ndarray  # (n_leaves,) int64
    table: np.ndarray  # (n_entries,) float64: F of each leaf, indexed by subset bitmask

    def contrib(self, X: np.ndarray) -> np.ndarray:
        """SHAP contributions ``(n, n_features)`` of the rows of ``X``: LightGBM's
        ``pred_contrib`` without its last (expected value) column."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (n, {self.n_features}) matrix, got shape {X.shape}")
        out = np.zeros((X.shape[0], self.n_features))
        _shap_rows(
            X,
            self.nodes,
            self.thresholds,
            self.categories,
            self.node_start,
            self.tree_leaves,
            self.leaf_value,
            self.step_start,
            self.step_node,
            self.step_child,
            self.step_slot,
            self.slot_start,
            self.slot_feature,
            self.slot_ratio,
            self.table_start,
            self.table,
            out,
        )
        return out


def compile_shap(booster: lgb.Booster) -> TreeShap | None:
    """The tables of ``booster`` (its best iteration, if it has one), or None when the
    forest is not a good fit (see the module docstring)."""
    model = booster.dump_model()
    if model.get("num_tree_per_iteration", 1) != 1:
        return None
    trees = model["tree_info"]
    best = int(booster.best_iteration or 0)
    if best > 0:
        trees = trees[:best]
    builder = _Builder()
    try:
        for tree in trees:
            builder.add_tree(tree)
    except _Unsuitable:
        return None
    return builder.build(int(model["max_feature_idx"]) + 1)


class _Unsuitable(Exception):
    """The forest is better left to ``pred_contrib``."""


class _Builder:
    """Flattens the trees of ``dump_model()`` and tabulates each leaf's ``F``."""

    def __init__(self) -> None:
        self.nodes: list[list[int]] = []
        self.thresholds: list[float] = []
        self.categories: list[int] = []
        self.node_start = [0]
        self.tree_leaves = [0]
        self.leaf_value: list[float] = []
        self.steps: list[tuple[int, int, int]] = []
        self.step_start = [0]
        self.slots: list[tuple[int, float]] = []
        self.slot_start = [0]
        self.tables: list[np.ndarray] = []
        self.n_entries = 0

    def add_tree(self, tree: dict[str, Any]) -> None:
        n_internal = int(tree["num_leaves"]) - 1
        nodes = [[0] * 8 for _ in range(n_internal)]
        thresholds = [0.0] * n_internal
        root = tree["tree_structure"]
        if "split_index" in root:
            self._walk(root, nodes, thresholds)
        # A single-leaf tree is a constant: it moves only the expected value.
        self.nodes.extend(nodes)
        self.thresholds.extend(thresholds)
        self.node_start.append(len(self.nodes))
        self.tree_leaves.append(len(self.leaf_value))

    def _walk(self, root: dict[str, Any], nodes: list[list[int]], thresholds: list[float]) -> None:
        """Fill the node tables, and add one leaf record per leaf (iteratively: leaf-wise
        trees can be deeper than Python's recursion is comfortable with)."""
        # Each entry: node, path so far as (local node, child taken, feature, cover ratio).
        stack: list[tuple[dict[str, Any], list[tuple[int, int, int, float]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if "split_index" not in node:
                if "leaf_const" in node:  # a linear tree: its leaves are not constants
                    raise _Unsuitable("linear trees")
                self._add_leaf(node, path)
                continue
            j = int(node["split_index"])
            row = nodes[j]
            row[_FEATURE] = int(node["split_feature"])
            row[_LEFT] = _child_ref(node["left_child"])
            row[_RIGHT] = _child_ref(node["right_child"])
            row[_DEFAULT_LEFT] = int(bool(node["default_left"]))
            row[_MISSING_TYPE] = _MISSING[str(node["missing_type"])]
            if node["decision_type"] == "==":
                row[_CATEGORICAL] = 1
                row[_CAT_START] = len(self.categories)
                self.categories.extend(int(c) for c in str(node["threshold"]).split("||"))
                row[_CAT_END] = len(self.categories)
            elif node["decision_type"] == "<=":
                thresholds[j] = float(node["threshold"])
            else:
                raise _Unsuitable(f"decision type {node['decision_type']!r}")
            count = float(node["internal_count"])
            for side in ("left_child", "right_child"):
                child = node[side]
                ratio = _count(child) / count if count > 0 else 0.0
                stack.append(
                    (
                        child,
                        [
                            *path,
                            (
                                j,
                                row[_LEFT if side == "left_child" else _RIGHT],
                                row[_FEATURE],
                                ratio,
                            ),
                        ],
                    )
                )

    def _add_leaf(self, leaf: dict[str, Any], path: list[tuple[int, int, int, float]]) -> None:
        slot_of: dict[int, int] = {}
        zero: list[float] = []
        for j, child, feature, ratio in path:
            slot = slot_of.setdefault(feature, len(zero))
            if slot == len(zero):
                zero.append(1.0)
            zero[slot] *= ratio
            self.steps.append((j, child, slot))
        n = len(zero)
        if n > MAX_PATH_FEATURES or min(zero, default=1.0) <= 0.0:
            raise _Unsuitable("path too long, or a split with an empty side")
        self.n_entries += 1 << n
        if self.n_entries > MAX_TABLE_ENTRIES:
            raise _Unsuitable("tables too large")
        features = sorted(slot_of, key=slot_of.__getitem__)
        self.slots.extend((f, (1.0 - z) / z) for f, z in zip(features, zero, strict=True))
        self.tables.append(_subset_table(np.asarray(zero)))
        self.leaf_value.append(float(leaf["leaf_value"]))
        self.step_start.append(len(self.steps))
        self.slot_start.append(len(self.slots))

    def build(self, n_features: int) -> TreeShap:
        steps = np.array(self.steps, dtype=np.int64).reshape(-1, 3)
        slots = self.slots
        sizes = [t.size for t in self.tables]
        return TreeShap(
            n_features=n_features,
            nodes=np.array(self.nodes, dtype=np.int32).reshape(-1, 8),
            thresholds=np.array(self.thresholds, dtype=np.float64),
            categories=np.array(self.categories, dtype=np.int64),
            node_start=np.array(self.node_start, dtype=np.int64),
            tree_leaves=np.array(self.tree_leaves, dtype=np.int64),
            leaf_value=np.array(self.leaf_value, dtype=np.float64),
            step_start=np.array(self.step_start, dtype=np.int64),
            step_node=np.ascontiguousarray(steps[:, 0]),
            step_child=np.ascontiguousarray(steps[:, 1]),
            step_slot=np.ascontiguousarray(steps[:, 2]),
            slot_start=np.array(self.slot_start, dtype=np.int64),
            slot_feature=np.array([f for f, _ in slots], dtype=np.int64),
            slot_ratio=np.array([r for _, r in slots], dtype=np.float64),
            table_start=np.cumsum([0, *sizes[:-1]], dtype=np.int64)[: len(sizes)],
            table=np.concatenate(self.tables) if self.tables else np.zeros(0),
        )


def _subset_table(zero: np.ndarray) -> np.ndarray:
    """``F(B) = Σ_{S ⊆ B} w(|S|, n) · Π_{j ∉ S} z_j`` for every bitmask ``B`` of the n slots.

    ``F`` of the full set is never read (some slot is always left out), so its own term,
    whose weight is undefined, is set to zero.
    """
    n = zero.size
    masks = np.arange(1 << n)
    bits = (masks[:, None] >> np.arange(n)[None, :]) & 1
    size = bits.sum(axis=1)
    weight = np.array(
        [factorial(s) * factorial(n - s - 1) / factorial(n) if s < n else 0.0 for s in range(n + 1)]
    )
    g = weight[size] * np.prod(np.where(bits == 1, 1.0, zero[None, :]), axis=1)
    # Sum over subsets, one bit at a time: F[B] += F[B without bit k] for B holding bit k.
    f = g.reshape((2,) * n) if n else g
    for axis in range(n):
        f = np.cumsum(f, axis=axis)
    return np.ascontiguousarray(f.reshape(-1), dtype=np.float64)


def _count(node: dict[str, Any]) -> float:
    return float(node["internal_count"] if "split_index" in node else node.get("leaf_count", 0))


def _child_ref(child: dict[str, Any]) -> int:
    """A child as LightGBM stores it: a node's split index, or ``~leaf_index``."""
    if "split_index" in child:
        return int(child["split_index"])
    return ~int(child.get("leaf_index", 0))


# ---------------------------------------------------------------------- compiled loops
@jit(nogil=True)
def _next(
    x: np.ndarray, nodes: np.ndarray, thresholds: np.ndarray, categories: np.ndarray, g: int
) -> int:
    """The child (as stored) of global node ``g`` that row ``x`` goes to."""
    fval = x[nodes[g, _FEATURE]]
    if -_ZERO_THRESHOLD <= fval <= _ZERO_THRESHOLD:
        fval = 0.0  # LightGBM's dense reader drops values within kZeroThreshold of zero
    if nodes[g, _CATEGORICAL]:
        if np.isnan(fval) or fval <= -1.0:  # int(fval) < 0: NaN and negatives go right
            return nodes[g, _RIGHT]
        code = int(fval)
        for k in range(nodes[g, _CAT_START], nodes[g, _CAT_END]):
            if categories[k] == code:
                return nodes[g, _LEFT]
        return nodes[g, _RIGHT]
    missing = nodes[g, _MISSING_TYPE]
    if np.isnan(fval) and missing != 2:
        fval = 0.0
    if (missing == 1 and -_ZERO_THRESHOLD <= fval <= _ZERO_THRESHOLD) or (
        missing == 2 and np.isnan(fval)
    ):
        return nodes[g, _LEFT] if nodes[g, _DEFAULT_LEFT] else nodes[g, _RIGHT]
    return nodes[g, _LEFT] if fval <= thresholds[g] else nodes[g, _RIGHT]


@jit(nogil=True)
def _shap_rows(
    X: np.ndarray,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    categories: np.ndarray,
    node_start: np.ndarray,
    tree_leaves: np.ndarray,
    leaf_value: np.ndarray,
    step_start: np.ndarray,
    step_node: np.ndarray,
    step_child: np.ndarray,
    step_slot: np.ndarray,
    slot_start: np.ndarray,
    slot_feature: np.ndarray,
    slot_ratio: np.ndarray,
    table_start: np.ndarray,
    table: np.ndarray,
    out: np.ndarray,
) -> None:
    # Rows innermost: a leaf's table (up to 16 KB) is read for all the rows at once, which
    # share most of their subsets, instead of once per row.  On the demo's churn offset
    # booster (400 KB of tables, more than L2) that was 1.26x faster for 4 rows; no change
    # on the conversion one (120 KB).  Each phi[i, f] still receives its terms in tree,
    # leaf, slot order, so the values are bit for bit those of one row at a time.
    #
    # The rows of a request are one customer's features with different actions: they
    # differ in one column.  So a node that splits on another column sends every row the
    # way it sends the first (evaluated once), and in a leaf the rows fall into at most a
    # few subsets, whose terms are computed once and added to each row that has them.
    n_trees = node_start.size - 1
    n_rows, n_cols = X.shape
    width = 1
    for t in range(n_trees):
        width = max(width, node_start[t + 1] - node_start[t])
    hot = np.empty((n_rows, width), dtype=np.int64)  # the child each row takes, per node
    satisfied = np.empty(n_rows, dtype=np.int64)
    pending = np.empty(n_rows, dtype=np.bool_)
    terms = np.empty(MAX_PATH_FEATURES + 1)
    # differs[i, c]: row i's column c is not the first row's (NaN counts as equal to NaN).
    differs = np.zeros((n_rows, n_cols), dtype=np.bool_)
    for i in range(1, n_rows):
        for c in range(n_cols):
            a, b = X[i, c], X[0, c]
            differs[i, c] = a != b and not (np.isnan(a) and np.isnan(b))
    for t in range(n_trees):
        n0 = node_start[t]
        for j in range(node_start[t + 1] - n0):
            hot[0, j] = _next(X[0], nodes, thresholds, categories, n0 + j)
            column = nodes[n0 + j, _FEATURE]
            for i in range(1, n_rows):
                if differs[i, column]:
                    hot[i, j] = _next(X[i], nodes, thresholds, categories, n0 + j)
                else:
                    hot[i, j] = hot[0, j]
        for leaf in range(tree_leaves[t], tree_leaves[t + 1]):
            s0 = slot_start[leaf]
            n = slot_start[leaf + 1] - s0
            v = leaf_value[leaf]
            base = table_start[leaf]
            for i in range(n_rows):
                mask = (1 << n) - 1  # A: the slots whose every split the row follows
                for k in range(step_start[leaf], step_start[leaf + 1]):
                    if hot[i, step_node[k]] != step_child[k]:
                        mask &= ~(1 << step_slot[k])
                satisfied[i] = mask
                pending[i] = True
            for i in range(n_rows):
                if not pending[i]:
                    continue
                mask = satisfied[i]
                off = -v * table[base + mask]
                for k in range(n):
                    bit = 1 << k
                    if mask & bit:
                        terms[k] = v * slot_ratio[s0 + k] * table[base + (mask ^ bit)]
                    else:
                        terms[k] = off
                for r in range(i, n_rows):  # every row in the same subset gets the same terms
                    if pending[r] and satisfied[r] == mask:
                        pending[r] = False
                        for k in range(n):
                            out[r, slot_feature[s0 + k]] += terms[k]
