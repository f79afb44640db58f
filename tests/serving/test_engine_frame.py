"""The batch recommendation table: ranks, eligibility and suppression text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.engine import DecisionEngine, ScoredRows


class _Engine(DecisionEngine):
    """The frame builder needs only the action list and channels, not a bundle."""

    def __init__(self) -> None:
        self.actions = ("none", "email_promo", "sms_offer")
        self.channels = [None, "email", "sms"]


def test_frame_ranks_eligible_actions_and_names_suppressions() -> None:
    engine = _Engine()
    scored = ScoredRows(
        actions=engine.actions,
        p_conversion=np.full((3, 3), 0.1),
        p_churn=np.full((3, 3), 0.05),
        scores=np.array([[0.0, 2.0, 1.0], [0.0, -1.0, 3.0], [0.0, 5.0, 4.0]]),
        suppression=np.array([[0, 0, 1], [0, 0, 0], [0, 2, 6]], dtype=np.int8),
    )
    frame = engine.recommendations_frame(pd.Series(["a", "b", "c"]), scored, top_k=3)
    by = {cid: rows for cid, rows in frame.groupby("customer_id")}
    assert by["a"]["action"].tolist() == ["email_promo", "none"]  # sms lacks consent
    assert by["b"]["action"].tolist() == ["sms_offer", "none", "email_promo"]
    assert by["c"]["action"].tolist() == ["none"]  # everything else suppressed
    assert by["a"]["rank"].tolist() == [1, 2]
    assert by["a"]["suppressed"].iloc[0] == "sms_offer:consent"
    assert by["b"]["suppressed"].iloc[0] == ""
    assert by["c"]["suppressed"].iloc[0] == "email_promo:unsubscribed;sms_offer:quiet_hours"
