"""LightGBM forests as flat arrays, walked by compiled code: one customer's logits under
every action in one call.

A decision scores one feature row under each of the ~11 candidate actions with two
outcome models.  Through LightGBM (serving/lgbm_predict.py, its fast single-row API) that
is one C call per row and booster, 24 calls whose setup and ctypes marshalling dwarf the
few hundred node visits they do: ~140 µs of a ~1.5 ms decision.  Walking the same trees
here costs a few µs, in one numba call per outcome.

The result is LightGBM's raw score bit for bit, not an approximation: the trees are read
from ``dump_model()`` (thresholds printed with 17 significant digits, so they round-trip
exactly; infinite ones come back as +-1e300 and are restored), the decision rule copies LightGBM's ``Tree::NumericalDecision`` and
``Tree::CategoricalDecision`` (see :func:`next_node`), and the tree outputs are summed in
LightGBM's order (from 0.0, tree by tree).  As a guard against a model this reading does
not cover, :func:`compile_forest` compares its raw scores with LightGBM's on probe rows
placed on, around and between every threshold (and NaN, zero, negatives), and returns None
on any difference: the caller then keeps LightGBM.

Only raw scores (log-odds) are computed: turning them into probabilities stays with the
numpy code that the batch path uses too (serving/scoring.py), so that a request and a
batch job agree to the bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from features.compiled import jit

__all__ = [
    "Forest",
    "action_logits",
    "compile_forest",
    "concatenate",
    "dumped_trees",
    "lightgbm_threshold",
    "next_node",
    "rows_sum",
    "tree_sum",
]

log = logging.getLogger(__name__)

#: LightGBM's kZeroThreshold, ``1e-35f``: a float literal, so 1.0000000180025095e-35 as a
#: double.  Magnitudes up to it are read as zero.
ZERO_THRESHOLD = float(np.float32(1e-35))
MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
# Columns of the int32 node table.
FEATURE, LEFT, RIGHT, CATEGORICAL, DEFAULT_LEFT, MISSING_TYPE, CAT_START, CAT_END = range(8)


@dataclass(frozen=True)
class Forest:
    """Trees as flat arrays.  Node ``j`` of tree ``t`` is row ``node_start[t] + j`` of
    ``nodes``; a child is a local node index, or ``~leaf`` for leaf ``leaf`` of the tree,
    whose value is ``leaf_value[leaf_start[t] + leaf]`` (a tree without nodes is the one
    leaf ``leaf_value[leaf_start[t]]``)."""

    n_features: int
    nodes: np.ndarray  # (n_nodes, 8) int32: feature, left, right, flags, category range
    thresholds: np.ndarray  # (n_nodes,) float64
    categories: np.ndarray  # (n_categories,) int64: the left categories of each split
    node_start: np.ndarray  # (n_trees + 1,) int64
    leaf_start: np.ndarray  # (n_trees + 1,) int64
    leaf_value: np.ndarray  # (n_leaves,) float64

    @property
    def n_trees(self) -> int:
        return int(self.node_start.size - 1)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw scores of the rows of ``X``: ``Booster.predict(X, raw_score=True)``."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (n, {self.n_features}) matrix, got shape {X.shape}")
        out = np.empty(X.shape[0])
        rows_sum(X, 0, self.n_trees, *self.arrays(), out)
        return out

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays compiled code takes, in :func:`tree_sum`'s order."""
        return (
            self.nodes,
            self.thresholds,
            self.categories,
            self.node_start,
            self.leaf_start,
            self.leaf_value,
        )


def dumped_trees(booster: lgb.Booster) -> tuple[list[dict[str, Any]], int] | None:
    """The ``dump_model()`` trees that ``predict`` uses (up to the best iteration, when
    early stopping set one) and the number of features; None for several trees per
    iteration (multiclass), which neither tree walker reads."""
    model = booster.dump_model()
    if model.get("num_tree_per_iteration", 1) != 1:
        return None
    trees = model["tree_info"]
    best = int(booster.best_iteration or 0)
    if best > 0:
        trees = trees[:best]
    return trees, int(model["max_feature_idx"]) + 1


def compile_forest(booster: lgb.Booster, *, check: bool = True) -> Forest | None:
    """The trees of ``booster`` (up to its best iteration, as ``predict`` uses), or None
    when they are outside what this module reads, or (``check``) when its raw scores differ
    from LightGBM's in any bit on the probe rows."""
    dumped = dumped_trees(booster)
    if dumped is None:
        return None
    try:
        forest = _flatten(*dumped)
    except _Unsupported as exc:
        log.info("LightGBM predicts this booster: %s", exc)
        return None
    if check:
        probe = _probe_rows(forest, np.random.default_rng(0))
        expected = booster.predict(probe, raw_score=True, num_threads=1)
        if not np.array_equal(forest.raw(probe), expected, equal_nan=True):
            log.warning("compiled trees disagree with LightGBM; LightGBM predicts this booster")
            return None
    return forest


def concatenate(forests: list[Forest]) -> tuple[Forest, np.ndarray]:
    """One forest of all the trees of ``forests``, in order, and the ``(first, end)`` tree
    range of each input (so one compiled call can walk several boosters)."""
    node_base = np.cumsum([0] + [f.nodes.shape[0] for f in forests])
    leaf_base = np.cumsum([0] + [f.leaf_value.size for f in forests])
    tree_base = np.cumsum([0] + [f.n_trees for f in forests])
    category_base = np.cumsum([0] + [f.categories.size for f in forests])
    nodes = []
    for f, shift in zip(forests, category_base, strict=False):
        shifted = f.nodes.copy()
        shifted[:, CAT_START : CAT_END + 1] += np.int32(shift)
        nodes.append(shifted)
    joined = Forest(
        n_features=max(f.n_features for f in forests),
        nodes=np.concatenate(nodes).astype(np.int32, copy=False).reshape(-1, 8),
        thresholds=np.concatenate([f.thresholds for f in forests]),
        categories=np.concatenate([f.categories for f in forests]).astype(np.int64),
        node_start=np.concatenate(
            [[0]] + [f.node_start[1:] + base for f, base in zip(forests, node_base, strict=False)]
        ).astype(np.int64),
        leaf_start=np.concatenate(
            [[0]] + [f.leaf_start[1:] + base for f, base in zip(forests, leaf_base, strict=False)]
        ).astype(np.int64),
        leaf_value=np.concatenate([f.leaf_value for f in forests]),
    )
    ranges = np.column_stack([tree_base[:-1], tree_base[1:]]).astype(np.int64)
    return joined, ranges


class _Unsupported(Exception):
    """A tree this module does not read (linear trees, unknown split types)."""


def _flatten(trees: list[dict[str, Any]], n_features: int) -> Forest:
    nodes: list[list[int]] = []
    thresholds: list[float] = []
    categories: list[int] = []
    node_start, leaf_start, leaf_value = [0], [0], []
    for tree in trees:
        n_leaves = int(tree["num_leaves"])
        values = [0.0] * n_leaves
        local = [[0] * 8 for _ in range(n_leaves - 1)]
        cuts = [0.0] * (n_leaves - 1)
        stack = [tree["tree_structure"]]
        while stack:  # iteratively: leaf-wise trees can be deep
            node = stack.pop()
            if "split_index" not in node:
                if "leaf_const" in node:
                    raise _Unsupported("linear trees")
                values[int(node.get("leaf_index", 0))] = float(node["leaf_value"])
                continue
            j = int(node["split_index"])
            row = local[j]
            row[FEATURE] = int(node["split_feature"])
            row[LEFT] = _child_ref(node["left_child"])
            row[RIGHT] = _child_ref(node["right_child"])
            row[DEFAULT_LEFT] = int(bool(node["default_left"]))
            row[MISSING_TYPE] = MISSING_TYPES[str(node["missing_type"])]
            if node["decision_type"] == "==":
                row[CATEGORICAL] = 1
                row[CAT_START] = len(categories)
                categories.extend(int(c) for c in str(node["threshold"]).split("||"))
                row[CAT_END] = len(categories)
            elif node["decision_type"] == "<=":
                cuts[j] = lightgbm_threshold(float(node["threshold"]))
            else:
                raise _Unsupported(f"decision type {node['decision_type']!r}")
            stack.extend((node["left_child"], node["right_child"]))
        nodes.extend(local)
        thresholds.extend(cuts)
        leaf_value.extend(values)
        node_start.append(len(nodes))
        leaf_start.append(len(leaf_value))
    return Forest(
        n_features=n_features,
        nodes=np.array(nodes, dtype=np.int32).reshape(-1, 8),
        thresholds=np.array(thresholds, dtype=np.float64),
        categories=np.array(categories, dtype=np.int64),
        node_start=np.array(node_start, dtype=np.int64),
        leaf_start=np.array(leaf_start, dtype=np.int64),
        leaf_value=np.array(leaf_value, dtype=np.float64),
    )


def lightgbm_threshold(value: float) -> float:
    """A threshold as the booster holds it: ``dump_model`` writes an infinite one (a split
    that sends every number one way and NaN the other) as +-1e300 (LightGBM's
    ``AvoidInf``), which would send values above 1e300 the wrong way."""
    if value >= 1e300:
        return np.inf
    if value <= -1e300:
        return -np.inf
    return value


def _child_ref(child: dict[str, Any]) -> int:
    """A child as LightGBM stores it: a node's split index, or ``~leaf_index``."""
    if "split_index" in child:
        return int(child["split_index"])
    return ~int(child.get("leaf_index", 0))


def _probe_rows(forest: Forest, rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Rows whose every value sits on a split's threshold, a hair either side of one, on a
    category, or is NaN, zero or negative: where a wrong comparison or missing-value rule
    would send a row the other way."""
    per_feature: list[list[float]] = [[np.nan, 0.0, -1.0, 1e-36] for _ in range(forest.n_features)]
    for g in range(forest.nodes.shape[0]):
        f = int(forest.nodes[g, FEATURE])
        if forest.nodes[g, CATEGORICAL]:
            start, end = forest.nodes[g, CAT_START], forest.nodes[g, CAT_END]
            per_feature[f].extend(float(c) for c in forest.categories[start:end])
        else:
            t = float(forest.thresholds[g])
            per_feature[f].extend((t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)))
    probe = np.empty((n, forest.n_features))
    for f, values in enumerate(per_feature):
        probe[:, f] = rng.choice(np.asarray(values), size=n)
    return probe


# ---------------------------------------------------------------------- compiled loops
@jit(nogil=True)
def next_node(
    x: np.ndarray, nodes: np.ndarray, thresholds: np.ndarray, categories: np.ndarray, g: int
) -> int:
    """The child (as stored) of global node ``g`` that row ``x`` goes to: LightGBM's rule.

    NaN is 0.0 unless the split's missing type is NaN; a missing value (NaN, or zero for
    zero-as-missing) goes the split's default way; a categorical split sends a value left
    when its integer part is one of the split's categories, and NaN or negative values
    right.  Inputs within ``1e-35`` of zero count as zero, as LightGBM's dense-matrix
    reader drops them.
    """
    fval = x[nodes[g, FEATURE]]
    if -ZERO_THRESHOLD <= fval <= ZERO_THRESHOLD:
        fval = 0.0
    if nodes[g, CATEGORICAL]:
        if np.isnan(fval) or fval <= -1.0:  # int(fval) < 0: NaN and negatives go right
            return nodes[g, RIGHT]
        code = int(fval)
        for k in range(nodes[g, CAT_START], nodes[g, CAT_END]):
            if categories[k] == code:
                return nodes[g, LEFT]
        return nodes[g, RIGHT]
    missing = nodes[g, MISSING_TYPE]
    if np.isnan(fval) and missing != 2:
        fval = 0.0
    if (missing == 1 and -ZERO_THRESHOLD <= fval <= ZERO_THRESHOLD) or (
        missing == 2 and np.isnan(fval)
    ):
        return nodes[g, LEFT] if nodes[g, DEFAULT_LEFT] else nodes[g, RIGHT]
    return nodes[g, LEFT] if fval <= thresholds[g] else nodes[g, RIGHT]


@jit(nogil=True)
def tree_sum(
    x: np.ndarray,
    first: int,
    end: int,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    categories: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
) -> float:
    """The sum of the outputs of trees ``first .. end - 1`` for row ``x``, from 0.0 and in
    tree order, as LightGBM adds them."""
    total = 0.0
    for t in range(first, end):
        n0 = node_start[t]
        if node_start[t + 1] == n0:  # a single leaf
            total += leaf_value[leaf_start[t]]
            continue
        child = 0
        while child >= 0:
            child = next_node(x, nodes, thresholds, categories, n0 + child)
        total += leaf_value[leaf_start[t] + ~child]
    return total


@jit(nogil=True)
def rows_sum(
    X: np.ndarray,
    first: int,
    end: int,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    categories: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[i]`` = :func:`tree_sum` of trees ``first .. end - 1`` for row ``X[i]``: every
    row in one compiled call (a call per row cost more than the walk on a request's few
    rows)."""
    for i in range(X.shape[0]):
        out[i] = tree_sum(
            X[i], first, end, nodes, thresholds, categories, node_start, leaf_start, leaf_value
        )


@jit(nogil=True)
def action_logits(
    x: np.ndarray,
    base_end: int,
    action_trees: np.ndarray,
    action_column: int,
    engagement_column: int,
    engagement: np.ndarray,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    categories: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[a] = base(x) + offset_a(x)`` for every action ``a``: trees ``0 .. base_end-1``
    are the base booster, ``action_trees[a]`` the (first, end) trees of action ``a``'s.
    Each sum is LightGBM's raw score of its booster, so ``base + offset`` is the double
    addition the batch path does.

    With ``action_column >= 0`` all actions share one booster that reads the action code
    from ``x[action_column]`` (``shared_offset``; the base booster never reads that
    column), and its trees are walked once for all actions together (:func:`_shared_sums`)
    rather than once per action: the actions part only at the few nodes that split on
    the action.
    """
    base = tree_sum(
        x, 0, base_end, nodes, thresholds, categories, node_start, leaf_start, leaf_value
    )
    n_actions = action_trees.shape[0]
    if action_column >= 0 and n_actions <= 64:
        _shared_sums(
            x, action_trees[0, 0], action_trees[0, 1], action_column, engagement_column,
            engagement, nodes, thresholds, categories, node_start, leaf_start, leaf_value, out,
        )  # fmt: skip
        for a in range(n_actions):
            out[a] = base + out[a]
        return
    for a in range(n_actions):
        if action_column >= 0:
            x[action_column] = a
        if engagement_column >= 0:
            x[engagement_column] = engagement[a]
        offset = tree_sum(
            x, action_trees[a, 0], action_trees[a, 1], nodes, thresholds, categories,
            node_start, leaf_start, leaf_value,
        )  # fmt: skip
        out[a] = base + offset


@jit(nogil=True)
def _shared_sums(
    x: np.ndarray,
    first: int,
    end: int,
    action_column: int,
    engagement_column: int,
    engagement: np.ndarray,
    nodes: np.ndarray,
    thresholds: np.ndarray,
    categories: np.ndarray,
    node_start: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[a]`` = :func:`tree_sum` of trees ``first .. end - 1`` for ``x`` with
    ``x[action_column] = a``, for every ``a < len(out) <= 64``, in one walk per tree.

    The walk carries the set of actions (a bitmask) that reach a node; a node splitting on
    the action column (or on ``engagement_column``, where action ``a`` has
    ``engagement[a]``) divides the set, any other node sends the whole set one way.  Each
    ``out[a]`` still receives one leaf per tree, in tree order, from 0.0: the same sums.
    """
    n = out.size
    out[:] = 0.0
    width = 1
    for t in range(first, end):
        width = max(width, node_start[t + 1] - node_start[t] + 1)
    stack_node = np.empty(width, dtype=np.int64)
    stack_set = np.empty(width, dtype=np.uint64)
    everyone = np.uint64((1 << n) - 1) if n < 64 else ~np.uint64(0)
    for t in range(first, end):
        n0 = node_start[t]
        if node_start[t + 1] == n0:  # a single leaf
            for a in range(n):
                out[a] += leaf_value[leaf_start[t]]
            continue
        stack_node[0], stack_set[0] = 0, everyone
        top = 1
        while top > 0:
            top -= 1
            g, reach = n0 + stack_node[top], stack_set[top]
            f = nodes[g, FEATURE]
            if f == action_column or (engagement_column >= 0 and f == engagement_column):
                left = np.uint64(0)
                for a in range(n):
                    if reach & (np.uint64(1) << np.uint64(a)):
                        x[action_column] = a
                        if engagement_column >= 0:
                            x[engagement_column] = engagement[a]
                        if next_node(x, nodes, thresholds, categories, g) == nodes[g, LEFT]:
                            left |= np.uint64(1) << np.uint64(a)
                sides = 2
            else:  # the whole set goes one way
                left = reach
                sides = 1
            for side in range(sides):
                if side == 0:
                    members = left
                    child = (
                        nodes[g, LEFT]
                        if sides == 2
                        else next_node(x, nodes, thresholds, categories, g)
                    )
                else:
                    members, child = reach & ~left, nodes[g, RIGHT]
                if members == 0:
                    continue
                if child >= 0:
                    stack_node[top], stack_set[top] = child, members
                    top += 1
                    continue
                value = leaf_value[leaf_start[t] + ~child]
                for a in range(n):
                    if members & (np.uint64(1) << np.uint64(a)):
                        out[a] += value
