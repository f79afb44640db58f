"""Settings of the training pipeline that other parts rely on."""

from __future__ import annotations

from typing import get_args

from serving.scoring import Formulation
from touchpoint.cli import build_parser
from training.train import COMPARED_FORMULATIONS


def test_compare_fits_every_formulation_once() -> None:
    # It used to leave out shared_offset, the default, while the docs said "all four".
    assert sorted(COMPARED_FORMULATIONS) == sorted(get_args(Formulation))


def test_the_cli_offers_every_formulation_and_compare() -> None:
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    choices = next(a.choices for a in train._actions if a.dest == "formulation")
    assert sorted(choices) == sorted([*COMPARED_FORMULATIONS, "compare"])
