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
O(n) per leaf.  The values agree with ``pred_contrib`` to ~1e-15 (not bit for bit: the
sums run in a different order), which tests/serving/test_tree_shap.py checks on the
bundled models and on boosters with NaN, zero-as-missing and categorical splits.

A request explains one customer under a few actions: rows that differ only in the action
column.  The kernel shares the work between them: a node is decided once unless it
splits on a column where rows differ, and in each leaf the rows fall into groups with
equal subset masks (one where no step of the path parts them, else two masks for one
differing column), whose terms are computed once.  Each row still gets exactly the values
it gets alone.  On the demo bundle's offset boosters (17 and 32 trees) one row takes
10 and 19 µs and a request's five rows 20 and 36 µs, against 55 and 108 µs, 230 and
490 µs with LightGBM's ``pred_contrib``.

The decision rule copies LightGBM's (``Tree::NumericalDecision`` and
``Tree::CategoricalDecision``): NaN is 0.0 unless the split's missing type is NaN; a
missing value (NaN, or zero for zero-as-missing) goes the split's default way; a
categorical split sends a value left when its integer part is one of the split's
categories, and NaN or negative values right (the categories are bitsets, as LightGBM's).  Inputs within ``1e-35`` of zero count as
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
from serving.forest import MISSING_TYPES, ZERO_THRESHOLD, dumped_trees, lightgbm_threshold

__all__ = ["MAX_PATH_FEATURES", "TreeShap", "compile_shap"]

#: A leaf's table has 2^n entries; past 14 distinct path features (16k entries per leaf)
#: ``pred_contrib`` is used instead.  The demo bundle's offset boosters need at most 11.
MAX_PATH_FEATURES = 14
#: And at most this many table entries for a whole forest (8 MB of float64).
MAX_TABLE_ENTRIES = 1 << 20
#: LightGBM's kZeroThreshold (serving.forest): magnitudes up to it are read as zero.
_ZERO_THRESHOLD = ZERO_THRESHOLD
_MISSING = MISSING_TYPES
# Columns of the int32 node table.
_FEATURE, _CATEGORICAL, _NAN_LEFT, _ZERO_LEFT, _CAT_START, _CAT_END = range(6)
# Columns of the int64 leaf table.
_STEP_START, _SLOT_START, _TABLE_START = range(3)
#: The kernel holds sets of rows as int64 bitmasks, so it takes at most this many rows.
_BLOCK = 63


@dataclass(frozen=True)
class TreeShap:
    """A booster's trees and per-leaf SHAP tables as flat arrays.

    Nodes and leaves are numbered across trees, in tree order.  Leaf ``l`` owns the path
    steps ``[leaves[l, 0], leaves[l + 1, 0])``, the distinct path features ("slots")
    ``[leaves[l, 1], leaves[l + 1, 1])`` and the table from ``leaves[l, 2]`` on.  Fields
    read together share an array: numba's dispatcher costs ~0.1 µs per array argument.
    """

    n_features: int
    nodes: np.ndarray  # (n_nodes, 6) int32: feature, flags, category word range
    thresholds: np.ndarray  # (n_nodes,) float64
    category_words: np.ndarray  # (n_words,) int64: bitsets of the splits' left categories
    leaves: np.ndarray  # (n_leaves + 1, 3) int64: first step, slot and table entry
    leaf_value: np.ndarray  # (n_leaves,) float64
    steps: np.ndarray  # (n_steps, 2) int64: 2 * node + (1 if the path goes left), 1 << slot
    slot_feature: np.ndarray  # (n_slots,) int64
    slot_ratio: np.ndarray  # (n_slots,) float64: (1 - z) / z
    table: np.ndarray  # (n_entries,) float64: F of each leaf, indexed by subset bitmask

    def contrib(self, X: np.ndarray) -> np.ndarray:
        """SHAP contributions ``(n, n_features)`` of the rows of ``X``: LightGBM's
        ``pred_contrib`` without its last (expected value) column."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (n, {self.n_features}) matrix, got shape {X.shape}")
        return _shap_rows(
            X,
            self.nodes,
            self.thresholds,
            self.category_words,
            self.leaves,
            self.leaf_value,
            self.steps,
            self.slot_feature,
            self.slot_ratio,
            self.table,
        )


def compile_shap(booster: lgb.Booster) -> TreeShap | None:
    """The tables of ``booster`` (its best iteration, if it has one), or None when the
    forest is not a good fit (see the module docstring)."""
    dumped = dumped_trees(booster)
    if dumped is None:
        return None
    trees, n_features = dumped
    builder = _Builder()
    try:
        for tree in trees:
            builder.add_tree(tree)
    except _Unsuitable:
        return None
    return builder.build(n_features)


class _Unsuitable(Exception):
    """The forest is better left to ``pred_contrib``."""


class _Builder:
    """Flattens the trees of ``dump_model()`` and tabulates each leaf's ``F``."""

    def __init__(self) -> None:
        self.nodes: list[list[int]] = []
        self.thresholds: list[float] = []
        self.category_words: list[int] = []
        self.leaves = [(0, 0, 0)]
        self.leaf_value: list[float] = []
        self.steps: list[tuple[int, int]] = []
        self.slots: list[tuple[int, float]] = []
        self.tables: list[np.ndarray] = []

    def add_tree(self, tree: dict[str, Any]) -> None:
        n_internal = int(tree["num_leaves"]) - 1
        nodes = [[0] * 6 for _ in range(n_internal)]
        thresholds = [0.0] * n_internal
        root = tree["tree_structure"]
        if "split_index" in root:
            self._walk(root, nodes, thresholds, len(self.nodes))
        # A single-leaf tree is a constant: it moves only the expected value.
        self.nodes.extend(nodes)
        self.thresholds.extend(thresholds)

    def _walk(
        self,
        root: dict[str, Any],
        nodes: list[list[int]],
        thresholds: list[float],
        first: int,
    ) -> None:
        """Fill the tree's node tables (its nodes are numbered from ``first`` on), and add
        one leaf record per leaf (iteratively: leaf-wise trees can be deeper than Python's
        recursion is comfortable with)."""
        # Each entry: node, path so far as (node, went left, feature, cover ratio).
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
            if node["decision_type"] == "==":
                row[_CATEGORICAL] = 1
                codes = [int(c) for c in str(node["threshold"]).split("||")]
                # NaN goes right (_NAN_LEFT stays 0); a value read as zero is category 0.
                row[_ZERO_LEFT] = int(0 in codes)
                words = [0] * (max(codes) // 64 + 1)
                for c in codes:
                    words[c // 64] |= 1 << (c % 64)
                row[_CAT_START] = len(self.category_words)
                self.category_words.extend(w - (1 << 64) if w >> 63 else w for w in words)
                row[_CAT_END] = len(self.category_words)
            elif node["decision_type"] == "<=":
                thresholds[j] = threshold = lightgbm_threshold(float(node["threshold"]))
                missing = _MISSING[str(node["missing_type"])]
                default_left = int(bool(node["default_left"]))
                # LightGBM reads NaN as zero unless the split's missing type is NaN, and
                # sends a missing value (NaN, or zero for zero-as-missing) the default way.
                zero_left = default_left if missing == 1 else int(threshold >= 0.0)
                row[_ZERO_LEFT] = zero_left
                row[_NAN_LEFT] = default_left if missing == 2 else zero_left
            else:
                raise _Unsuitable(f"decision type {node['decision_type']!r}")
            count = float(node["internal_count"])
            for left, side in ((1, "left_child"), (0, "right_child")):
                child = node[side]
                ratio = _count(child) / count if count > 0 else 0.0
                stack.append((child, [*path, (first + j, left, row[_FEATURE], ratio)]))

    def _add_leaf(self, leaf: dict[str, Any], path: list[tuple[int, int, int, float]]) -> None:
        slot_of: dict[int, int] = {}
        zero: list[float] = []
        for g, left, feature, ratio in path:
            slot = slot_of.setdefault(feature, len(zero))
            if slot == len(zero):
                zero.append(1.0)
            zero[slot] *= ratio
            self.steps.append((2 * g + left, 1 << slot))
        n = len(zero)
        if n > MAX_PATH_FEATURES or min(zero, default=1.0) <= 0.0:
            raise _Unsuitable("path too long, or a split with an empty side")
        n_entries = self.leaves[-1][_TABLE_START] + (1 << n)
        if n_entries > MAX_TABLE_ENTRIES:
            raise _Unsuitable("tables too large")
        features = sorted(slot_of, key=slot_of.__getitem__)
        self.slots.extend((f, (1.0 - z) / z) for f, z in zip(features, zero, strict=True))
        self.tables.append(_subset_table(np.asarray(zero)))
        self.leaf_value.append(float(leaf["leaf_value"]))
        self.leaves.append((len(self.steps), len(self.slots), n_entries))

    def build(self, n_features: int) -> TreeShap:
        return TreeShap(
            n_features=n_features,
            nodes=np.array(self.nodes, dtype=np.int32).reshape(-1, 6),
            thresholds=np.array(self.thresholds, dtype=np.float64),
            category_words=np.array(self.category_words, dtype=np.int64),
            leaves=np.array(self.leaves, dtype=np.int64),
            leaf_value=np.array(self.leaf_value, dtype=np.float64),
            steps=np.array(self.steps, dtype=np.int64).reshape(-1, 2),
            slot_feature=np.array([f for f, _ in self.slots], dtype=np.int64),
            slot_ratio=np.array([r for _, r in self.slots], dtype=np.float64),
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


# ---------------------------------------------------------------------- compiled loops
@jit(nogil=True)
def _shap_rows(
    X: np.ndarray,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    category_words: np.ndarray,
    leaves: np.ndarray,
    leaf_value: np.ndarray,
    steps: np.ndarray,
    slot_feature: np.ndarray,
    slot_ratio: np.ndarray,
    table: np.ndarray,
) -> np.ndarray:
    # Allocating and splitting into blocks here, not in TreeShap.contrib, saves a request
    # a few Python-level steps.
    out = np.zeros(X.shape)
    for start in range(0, X.shape[0], _BLOCK):
        stop = min(start + _BLOCK, X.shape[0])
        _shap_block(
            X[start:stop],
            nodes,
            thresholds,
            category_words,
            leaves,
            leaf_value,
            steps,
            slot_feature,
            slot_ratio,
            table,
            out[start:stop],
        )
    return out


@jit(nogil=True)
def _shap_block(
    X: np.ndarray,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    category_words: np.ndarray,
    leaves: np.ndarray,
    leaf_value: np.ndarray,
    steps: np.ndarray,
    slot_feature: np.ndarray,
    slot_ratio: np.ndarray,
    table: np.ndarray,
    out: np.ndarray,
) -> None:
    # The rows of a request are one customer's features under different actions: they
    # differ in one column.  So the work is shared between rows wherever they agree:
    #   - a node that splits on a column where all rows agree is decided once, for row 0;
    #   - in a leaf, rows that go the same way at every step of its path have the same
    #     subset mask, whose terms are computed once.  A leaf whose path never parts the
    #     rows has one mask (6% and 16% of the leaves of the demo bundle's boosters, where
    #     most paths split on the action); else the rows fall into a few groups (two masks,
    #     for one differing column).
    # Sets of rows are bitmasks (at most _BLOCK rows).  Each out[r, f] still receives its
    # terms in leaf order, computed as for r alone, so a row's values are bit for bit
    # those it gets alone.
    n_rows, n_cols = X.shape
    every = ~(-1 << n_rows)  # the set of all rows
    # varies[c]: some row's column c is not row 0's (NaN counts as equal to NaN).
    varies = np.zeros(n_cols, dtype=np.bool_)
    for c in range(n_cols):
        b = X[0, c]
        for i in range(1, n_rows):
            a = X[i, c]
            if a != b and not (np.isnan(a) and np.isnan(b)):
                varies[c] = True
                break
    # fails[2 * g]: the rows that go left at node g, so leave a path that goes right;
    # fails[2 * g + 1]: those that go right.  A step of a path indexes this directly.
    # The decision is written out here, not in a helper: numba does not inline a call
    # that passes arrays, and such a call costs more than the decision (~25 ns a node).
    fails = np.empty(2 * nodes.shape[0], dtype=np.int64)
    for g in range(nodes.shape[0]):
        c = nodes[g, _FEATURE]
        left_rows = 0
        for i in range(n_rows if varies[c] else 1):
            fval = X[i, c]
            if np.isnan(fval):
                left = nodes[g, _NAN_LEFT] != 0
            elif -_ZERO_THRESHOLD <= fval <= _ZERO_THRESHOLD:
                left = nodes[g, _ZERO_LEFT] != 0
            elif nodes[g, _CATEGORICAL]:
                # int(fval) < 0 goes right, as do categories past the split's largest.
                start = nodes[g, _CAT_START]
                if fval <= -1.0 or fval >= 64.0 * (nodes[g, _CAT_END] - start):
                    left = False
                else:
                    code = int(fval)
                    left = (category_words[start + (code >> 6)] >> (code & 63)) & 1 != 0
            else:
                left = fval <= thresholds[g]
            if left:
                left_rows |= 1 << i
        if not varies[c] and left_rows:
            left_rows = every
        fails[2 * g] = left_rows
        fails[2 * g + 1] = every ^ left_rows
    # Per leaf: the steps that part the rows, each group's rows and subset mask, each row's
    # group and each group's terms.
    longest = 0
    for leaf in range(leaf_value.size):
        longest = max(longest, leaves[leaf + 1, _STEP_START] - leaves[leaf, _STEP_START])
    parting = np.empty(longest, dtype=np.int64)
    group_rows = np.empty(n_rows, dtype=np.int64)
    group_mask = np.empty(n_rows, dtype=np.int64)
    group_of = np.zeros(n_rows, dtype=np.int64)
    terms = np.empty((n_rows, MAX_PATH_FEATURES))
    for leaf in range(leaf_value.size):
        s0 = leaves[leaf, _SLOT_START]
        n = leaves[leaf + 1, _SLOT_START] - s0
        v = leaf_value[leaf]
        base = leaves[leaf, _TABLE_START]
        # The mask of the slots every row satisfies, and the steps that part the rows (noted
        # here: scanning the path again for them cost a request ~20%, in mispredictions).
        mask = (1 << n) - 1
        n_parting = 0
        for k in range(leaves[leaf, _STEP_START], leaves[leaf + 1, _STEP_START]):
            fail = fails[steps[k, 0]]
            if fail == every:
                mask &= ~steps[k, 1]
            elif fail != 0:
                parting[n_parting] = k
                n_parting += 1
        if n_parting == 0:
            off = -v * table[base + mask]
            for k in range(n):
                bit = 1 << k
                term = v * slot_ratio[s0 + k] * table[base + (mask ^ bit)] if mask & bit else off
                f = slot_feature[s0 + k]
                for r in range(n_rows):
                    out[r, f] += term
            continue
        # Split the rows into groups of equal masks at the steps that part them (group_of
        # is 0 between leaves).
        n_groups = 1
        group_rows[0] = every
        group_mask[0] = mask
        for p in range(n_parting):
            fail = fails[steps[parting[p], 0]]
            bit = steps[parting[p], 1]
            for g in range(n_groups):
                inside = group_rows[g] & fail
                if inside == group_rows[g]:
                    group_mask[g] &= ~bit
                elif inside != 0:
                    group_rows[g] ^= inside
                    group_rows[n_groups] = inside
                    group_mask[n_groups] = group_mask[g] & ~bit
                    for r in range(n_rows):
                        if inside >> r & 1:
                            group_of[r] = n_groups
                    n_groups += 1
        for g in range(n_groups):
            mask = group_mask[g]
            off = -v * table[base + mask]
            for k in range(n):
                bit = 1 << k
                terms[g, k] = (
                    v * slot_ratio[s0 + k] * table[base + (mask ^ bit)] if mask & bit else off
                )
        for k in range(n):
            f = slot_feature[s0 + k]
            for r in range(n_rows):
                out[r, f] += terms[group_of[r], k]
        group_of[:] = 0
