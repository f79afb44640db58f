"""Several LightGBM boosters as one: a model whose raw score is the mean of theirs.

The shared offset of ``shared_offset`` can be a bag of boosters (``training/offset_bagging.py``).
Serving expects one offset booster, so the bag is written as one LightGBM model: every
member's trees, their leaf values divided by the number of members (a booster's raw score
is the sum of its trees, so the sum of the scaled trees is the members' mean).  The result
is an ordinary model file: the bundle, ``serving/forest.py`` and the SHAP reasons read it
as they read any booster, and serving imports nothing from here.

The rewriting follows LightGBM's text model format (``Booster.model_to_string``): a header
of ``key=value`` lines, ``Tree=<i>`` blocks ending at ``end of trees``, then the feature
importances and the parameters.  Only what the format says a tree's prediction depends on
is changed (``leaf_value``; ``internal_value`` and ``shrinkage`` are scaled with it so the
file stays consistent); the header and the parameters block are the first member's (the
others differ in their seeds).  Linear trees are refused: their leaves hold coefficients as
well.  The tests (tests/training/test_booster_average.py) check the merged raw scores
against the members' mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np

__all__ = ["average_boosters"]

_TREES_END = "end of trees"


def average_boosters(members: Sequence[lgb.Booster]) -> lgb.Booster:
    """One booster whose raw score is the mean of the ``members``' raw scores.

    The members must be single-output (binary, regression) boosters over the same features.
    Prediction uses every tree of the result (it has no best iteration), so members trained
    with early stopping should hold only their kept trees.
    """
    if not members:
        raise ValueError("average_boosters needs at least one member")
    texts = [m.model_to_string(num_iteration=-1) for m in members]
    headers, trees = zip(*(_split(t) for t in texts), strict=True)
    if len({h["feature_names"] for h in headers}) != 1:
        raise ValueError("average_boosters: the members' features differ")
    scale = 1.0 / len(members)
    blocks: list[str] = []
    for member_trees in trees:
        for block in member_trees:
            blocks.append(_rewrite_tree(block, len(blocks), scale))
    names = headers[0]["feature_names"].split(" ")
    header = "\n".join(["tree", *(f"{k}={v}" for k, v in headers[0].items() if k != "tree_sizes")])
    importances = _split_counts(blocks, names)
    text = "\n".join(
        [header, "", *blocks, _TREES_END, "", "feature_importances:", *importances, ""]
    )
    return lgb.Booster(model_str=text + _parameters(texts[0]) + "\npandas_categorical:null\n")


def _split(text: str) -> tuple[dict[str, str], list[str]]:
    """A model text's header (``key=value``; ``tree_sizes`` is dropped on writing, so the
    trees are read one after the other) and its tree blocks."""
    head, _, rest = text.partition("\nTree=")
    body = ("Tree=" + rest).split(_TREES_END)[0] if rest else ""
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if int(header.get("num_tree_per_iteration", "1")) != 1:
        raise ValueError("average_boosters: multi-output (multiclass) boosters are not supported")
    blocks = [b.strip("\n") for b in body.split("\n\n") if b.strip().startswith("Tree=")]
    return header, blocks


def _rewrite_tree(block: str, index: int, scale: float) -> str:
    out = []
    for line in block.splitlines():
        key, _, value = line.partition("=")
        if key == "Tree":
            line = f"Tree={index}"
        elif key == "is_linear" and value.strip() != "0":
            raise ValueError("average_boosters: linear trees are not supported")
        elif key in ("leaf_value", "internal_value", "shrinkage"):
            # repr: the shortest text that reads back as the same double.
            line = f"{key}=" + " ".join(repr(float(v) * scale) for v in value.split())
        out.append(line)
    return "\n".join(out) + "\n"


def _parameters(text: str) -> str:
    """The first member's ``parameters:`` block (how it was trained; LightGBM reads it back
    as the booster's parameters), or nothing if its text has none."""
    start = text.find("\nparameters:\n")
    end = text.find("end of parameters", start)
    if start < 0 or end < 0:
        return ""
    return text[start + 1 : end] + "end of parameters\n"


def _split_counts(blocks: Sequence[str], names: Sequence[str]) -> list[str]:
    """``feature_importances`` lines (split counts, most used first), as LightGBM writes them."""
    counts = np.zeros(len(names), dtype=np.int64)
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("split_feature="):
                for j in line.partition("=")[2].split():
                    counts[int(j)] += 1
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda j: (-counts[j], j))
    return [f"{names[j]}={counts[j]}" for j in order]
