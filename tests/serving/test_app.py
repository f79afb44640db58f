"""The HTTP service (CONTRACT §5) against a tiny bundle built without training code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from features.pipeline import compute_features
from serving.app import create_app, customer_features
from serving.settings import ServingSettings
from tests.serving.bundle_factory import ACTIONS, AS_OF, CATALOG, history, save_tiny_bundle

KEY = "s3cret"
# The tiny bundle and its history are shared with the subprocess contract tests.
_history = history
_save = save_tiny_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("bundle") / "model", "test-1")


@pytest.fixture
def settings(tmp_path: Path, bundle_dir: Path) -> ServingSettings:
    events = _history()
    events_file = tmp_path / "events.parquet"
    events.to_parquet(events_file)
    customers_file = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": ["c1", "c3"], "consent_email": ["true", "false"]}).to_csv(
        customers_file, index=False
    )
    return ServingSettings(
        model=bundle_dir,
        store_path=tmp_path / "store.db",
        decision_log_path=tmp_path / "decisions.db",
        events_path=events_file,
        customers_path=customers_file,
        api_key=SecretStr(KEY),
        seed=7,
    )


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _rec(client: TestClient, **body: object) -> dict:
    body.setdefault("as_of", AS_OF)
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------- ops
def test_readyz_is_503_before_the_model_loads_and_200_after(settings: ServingSettings) -> None:
    app = create_app(settings)
    cold = TestClient(app)  # no lifespan yet
    assert cold.get("/readyz").status_code == 503
    assert cold.get("/healthz").status_code == 200
    assert cold.post("/v1/recommendations", json={"customer_id": "c1"}).status_code == 503
    with TestClient(app) as warm:
        ready = warm.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == "test-1"
        assert warm.get("/healthz").json() == {"status": "ok"}


# ---------------------------------------------------------------------------- recommendations
def test_recommendation_contract(client: TestClient) -> None:
    out = _rec(client, customer_id="c1", context={"page": "home"})
    assert set(out) >= {"decision_id", "model_version", "recommendations", "suppressed"}
    assert len(out["decision_id"]) == 32 and out["model_version"] == "test-1"
    recs = out["recommendations"]
    assert len(recs) == 3  # default_k
    for rec in recs:
        assert set(rec) == {
            "action", "channel", "score", "p_conversion", "p_churn", "propensity", "reasons",
        }  # fmt: skip
        assert rec["action"] in ACTIONS and isinstance(rec["score"], float)
        assert 0 < rec["p_conversion"] < 1 and 0 < rec["p_churn"] < 1
        assert 0 < rec["propensity"] <= 1
        assert isinstance(rec["reasons"], list) and len(rec["reasons"]) <= 3
        assert all(isinstance(s, str) for s in rec["reasons"])
    assert recs[0]["action"] == out["chosen"]
    assert len({r["action"] for r in recs}) == len(recs)
    assert any(r["reasons"] for r in recs)
    for s in out["suppressed"]:
        assert set(s) == {"action", "rule"}
    assert _rec(client, customer_id="c1", k=1)["recommendations"].__len__() == 1


def test_unknown_customer_still_gets_a_recommendation(client: TestClient) -> None:
    out = _rec(client, customer_id="never-seen", k=20)
    assert out["recommendations"] and "none" in [r["action"] for r in out["recommendations"]]


def test_ranking_and_propensities_follow_the_epsilon_policy(client: TestClient) -> None:
    exploration = CATALOG.exploration
    assert exploration.method == "epsilon"
    eps, share = exploration.epsilon, exploration.control_share
    for cid in ("c1", "c2", "c3", "new"):
        out = _rec(client, customer_id=cid, k=20)
        recs = out["recommendations"]
        eligible = len(ACTIONS) - len(out["suppressed"])
        assert len(recs) == eligible  # k=20 returns every eligible action
        total = sum(r["propensity"] for r in recs)
        assert total == pytest.approx(1.0) and total <= 1 + 1e-9
        # Greedy = best score, ties to the lower action code (none first).
        greedy = max(recs, key=lambda r: (r["score"], -ACTIONS.index(r["action"])))["action"]
        for r in recs:
            expected = (1 - share) * (eps / eligible + (1 - eps) * (r["action"] == greedy))
            expected += share * (r["action"] == "none")
            assert r["propensity"] == pytest.approx(expected, rel=1e-9)
        rest = recs[1:]  # after the policy's pick, ranked by score
        assert [r["score"] for r in rest] == sorted((r["score"] for r in rest), reverse=True)
        assert out["explored"] == (out["chosen"] != greedy)
        top3 = _rec(client, customer_id=cid, k=3)["recommendations"]
        assert sum(r["propensity"] for r in top3) <= 1 + 1e-9


def test_no_action_on_a_channel_without_consent_or_after_unsubscribe(client: TestClient) -> None:
    before = _rec(client, customer_id="c1", k=20)
    assert any(r["channel"] == "sms" for r in before["recommendations"])
    r = client.post(
        "/v1/events",
        headers={"X-API-Key": KEY},
        json={"events": [{"customer_id": "c1", "timestamp": "2024-03-10T08:00:00Z",
                          "channel": "sms", "event_type": "unsubscribe", "event_id": "u1"}]},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["accepted"] == 1
    for _ in range(5):  # exploration never picks it either
        after = _rec(client, customer_id="c1", k=20)
        assert all(r["channel"] != "sms" for r in after["recommendations"])
    assert {"action": "sms_offer", "rule": "unsubscribed"} in after["suppressed"]
    # c3 refused email consent (customers file): no email action, ever.
    for _ in range(5):
        c3 = _rec(client, customer_id="c3", k=20)
        assert all(r["channel"] != "email" for r in c3["recommendations"])
    assert {"action": "email_promo", "rule": "consent"} in c3["suppressed"]
    # ... and an unsubscribe AFTER as_of does not count (point in time).
    early = _rec(client, customer_id="c1", k=20, as_of="2024-03-09T12:00:00Z")
    assert all(s["rule"] != "unsubscribed" for s in early["suppressed"])


def test_inline_events_give_the_same_answer_as_the_store(client: TestClient) -> None:
    inline = [
        {"customer_id": "c1", "timestamp": "2024-03-01T10:00:00Z", "channel": "email",
         "event_type": "sent", "action": "email_promo", "propensity": 0.5},
        {"customer_id": "c1", "timestamp": "2024-03-01T12:00:00Z", "channel": "email",
         "event_type": "open", "action": "email_promo"},
        {"customer_id": "c1", "timestamp": "2024-03-02T09:00:00Z", "channel": "web",
         "event_type": "visit"},
        {"customer_id": "c1", "timestamp": "2024-03-04T18:00:00Z", "channel": "web",
         "event_type": "purchase", "value": 40},
        {"customer_id": "c1", "timestamp": "2024-03-25T18:00:00Z", "channel": "web",
         "event_type": "visit"},  # after as_of: ignored
    ]  # fmt: skip
    a = _rec(client, customer_id="c1", k=20)
    b = _rec(client, customer_id="c1", k=20, events=inline)
    score = lambda out: {r["action"]: r["score"] for r in out["recommendations"]}  # noqa: E731
    assert score(a) == pytest.approx(score(b))
    # The request names the customer, so the rows may leave it out (or blank).
    anonymous = [{k: v for k, v in row.items() if k != "customer_id"} for row in inline]
    anonymous[1]["customer_id"] = " "
    c = _rec(client, customer_id="c1", k=20, events=anonymous)
    assert score(c) == pytest.approx(score(b))


def test_online_features_equal_offline_features(bundle_dir: Path) -> None:
    from serving.bundle import load_bundle

    spec = load_bundle(bundle_dir).spec
    events = _history()
    customers = pd.DataFrame({"customer_id": ["c1"], "consent_email": [False]})
    as_of = pd.Timestamp(AS_OF)
    decisions = pd.DataFrame(
        {"customer_id": ["c1"], "decision_time": pd.Series([as_of]), "action": ["none"]}
    )
    names = list(spec.feature_names)
    c1 = events[events["customer_id"] == "c1"]
    online = customer_features(spec, c1, customers, "c1", as_of)
    # Decisions are computed in float64 (what `touchpoint recommend` does too) ...
    exact = compute_features(events, decisions, customers, spec=spec, dtype=np.float64)
    np.testing.assert_array_equal(online, exact[names].to_numpy())
    # ... and equal the float32 training table once at the models' precision.
    table = compute_features(events, decisions, customers, spec=spec)
    np.testing.assert_array_equal(online.astype(np.float32), table[names].to_numpy())


def test_decisions_are_logged_with_their_propensity(
    client: TestClient, settings: ServingSettings
) -> None:
    out = _rec(client, customer_id="c2", context={"placement": "banner"})
    decision_log = client.app.state.service.decision_log  # type: ignore[attr-defined]
    log = decision_log.frame(full=True)
    row = log[log["decision_id"] == out["decision_id"]].iloc[0]
    assert row["action"] == out["chosen"] and row["customer_id"] == "c2"
    assert row["propensity"] == pytest.approx(out["recommendations"][0]["propensity"])
    assert row["decision_time"] == pd.Timestamp(AS_OF)
    assert "banner" in row["context"]
    path = decision_log.export_parquet(settings.decision_log_path.with_suffix(".parquet"))
    assert {"decision_id", "propensity", "action"} <= set(pd.read_parquet(path).columns)


def test_batch(client: TestClient) -> None:
    body = {"requests": [{"customer_id": "c1", "as_of": AS_OF}, {"customer_id": "c2", "k": 2}]}
    r = client.post("/v1/recommendations:batch", json=body)
    assert r.status_code == 200
    responses = r.json()["responses"]
    assert [x["customer_id"] for x in responses] == ["c1", "c2"]
    assert len(responses[1]["recommendations"]) == 2
    too_many = {"requests": [{"customer_id": "c1"}] * 1001}
    r = client.post("/v1/recommendations:batch", json=too_many)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests"]
    client.app.state.service.settings.max_batch = 1  # type: ignore[attr-defined]
    r = client.post("/v1/recommendations:batch", json=body)
    assert r.status_code == 422 and "at most 1" in r.json()["detail"][0]["msg"]
    bad = {"requests": [{"customer_id": "c1"}, {"customer_id": "c2", "k": 0}]}
    r = client.post("/v1/recommendations:batch", json=bad)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests", 1, "k"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "customer_id"]),
        ({"customer_id": "  "}, ["body", "customer_id"]),
        ({"customer_id": "c1", "k": 0}, ["body", "k"]),
        ({"customer_id": "c1", "k": 21}, ["body", "k"]),
        ({"customer_id": "c1", "as_of": "yesterday"}, ["body", "as_of"]),
        ({"customer_id": "c1", "as_of": "9999-01-01T00:00:00Z"}, ["body", "as_of"]),
        # One µs past the last and before the first time pandas holds in ns.
        ({"customer_id": "c1", "as_of": "2262-04-11T23:47:16.854776Z"}, ["body", "as_of"]),
        ({"customer_id": "c1", "as_of": "1677-09-21T00:12:43.145224Z"}, ["body", "as_of"]),
        ({"customer_id": "c1", "as_of": "2262-04-11T23:00:00-01:00"}, ["body", "as_of"]),
        ({"customer_id": "c1", "kk": 3}, ["body", "kk"]),
        ({"customer_id": "c1", "events": [{"customer_id": "c1", "timestamp": "x",
          "channel": "web", "event_type": "visit"}]}, ["body", "events", 0]),
        ({"customer_id": "c1", "events": [{"customer_id": "c9", "timestamp": AS_OF,
          "channel": "web", "event_type": "visit"}]}, ["body", "events", 0, "customer_id"]),
    ],
)  # fmt: skip
def test_bad_requests_are_422_naming_the_field(client: TestClient, body: dict, loc: list) -> None:
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == loc and detail[0]["msg"]


def test_malformed_json_is_4xx(client: TestClient) -> None:
    r = client.post(
        "/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500


_VISIT = '"timestamp": "2024-01-01T00:00:00Z", "channel": "web", "event_type": "visit"'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/recommendations", '{"customer_id": "\\ud800abc", "k": 2}'),
        ("/v1/recommendations", '{"customer_id": "c1", "context": {"x": "\\udc00"}}'),
        ("/v1/recommendations", '{"customer_id": "c1", "context": {"\\ud800": 1}}'),
        ("/v1/recommendations", '{"customer_id": "c1", "events": [{"customer_id": "c1", '
         + _VISIT + ', "event_id": "\\ud800"}]}'),
        ("/v1/recommendations:batch", '{"requests": [{"customer_id": "\\ud800", "k": 1}]}'),
        ("/v1/events", '{"events": [{"customer_id": "\\ud800", ' + _VISIT + "}]}"),
        ("/v1/events", '{"events": [{"customer_id": "c1", ' + _VISIT + ', "event_id": "a\\udfff"}]}'),
    ],
)  # fmt: skip
def test_a_lone_surrogate_in_any_string_is_a_422_not_a_500(
    client: TestClient, path: str, body: str
) -> None:
    """JSON can escape half a UTF-16 pair; such a string is not text and used to pass
    validation, then fail in the store, the decision log or the 422's echo (500)."""
    r = client.post(
        path, content=body.encode(), headers={"content-type": "application/json", "x-api-key": KEY}
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert "surrogate" in r.json()["detail"][0]["ctx"]["error"]
    # A proper pair is text, and the same body with it is answered.
    good = body.replace("\\ud800", "\\ud83d\\ude00").replace("\\udc00", "\\ud83d\\ude00")
    good = good.replace("\\udfff", "\\ud83d\\ude00")
    r = client.post(
        path, content=good.encode(), headers={"content-type": "application/json", "x-api-key": KEY}
    )
    assert r.status_code == 200, r.text


def test_invalid_utf8_is_4xx(client: TestClient) -> None:
    body = b'{"customer_id": "\xed\xa0\x80"}'  # a surrogate encoded as UTF-8: not UTF-8
    r = client.post(
        "/v1/recommendations", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text


# ---------------------------------------------------------------------------- events
def test_events_need_the_api_key(client: TestClient) -> None:
    body = {"events": [{"customer_id": "c5", "timestamp": AS_OF, "channel": "web",
                        "event_type": "visit"}]}  # fmt: skip
    assert client.post("/v1/events", json=body).status_code == 401
    assert client.post("/v1/events", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


def test_events_are_idempotent_and_bad_rows_reported(client: TestClient) -> None:
    events = [
        {"customer_id": "c5", "timestamp": "2024-03-10T10:00:00Z", "channel": "Email",
         "event_type": "sent", "action": "email_promo", "event_id": "a", "propensity": 0.4},
        {"customer_id": "c5", "timestamp": "not a time", "channel": "web",
         "event_type": "visit", "event_id": "b"},
        {"customer_id": "c5", "timestamp": "2024-03-10T11:00:00Z", "channel": "web",
         "event_type": "teleport", "event_id": "c"},
        {"customer_id": "c5", "timestamp": "2024-03-10T12:00:00Z", "channel": "web",
         "event_type": "purchase", "value": "12.5", "event_id": "d"},
        {"customer_id": "c5", "timestamp": "2024-03-10T12:00:00Z", "channel": "web",
         "event_type": "purchase", "value": "lots", "propensity": -1, "event_id": "e"},
        {"customer_id": "c5", "timestamp": "2024-03-10T13:00:00Z", "channel": "web",
         "event_type": "visit", "event_id": "a"},  # repeats the first id
        {"customer_id": 42, "timestamp": "2024-03-10T13:00:00Z", "channel": "web",
         "event_type": "visit", "event_id": "f"},  # a number as id is fine
    ]  # fmt: skip
    headers = {"X-API-Key": KEY}
    r = client.post("/v1/events", json={"events": events}, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 3 and out["duplicates"] == 1
    rows = {e["row"]: e["reason"] for e in out["errors"]}
    assert set(rows) == {2, 3, 5}
    assert "timestamp" in rows[2] and "event_type" in rows[3]
    assert "value" in rows[5] and "propensity" in rows[5]
    # Refused rows are kept in the store's quarantine, as received, with the reason.
    kept = client.app.state.service.store.quarantined()
    assert [e["event_id"] for e in kept["event"]] == ["b", "c", "e"]
    assert kept["reason"].tolist() == [rows[2], rows[3], rows[5]]
    assert kept["event"][2]["value"] == "lots" and kept["event"][2]["propensity"] == -1
    again = client.post("/v1/events", json={"events": events}, headers=headers).json()
    assert again["accepted"] == 0 and again["duplicates"] == 4
    assert client.post("/v1/events", json={"events": []}, headers=headers).json() == {
        "accepted": 0, "duplicates": 0, "errors": [],
    }  # fmt: skip
    r = client.post("/v1/events", json={"events": [{"customer_id": "c5", "colour": "red"}]},
                    headers=headers)  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 0, "colour"]
    r = client.post("/v1/events", json={"events": [{}]}, headers=headers)
    assert r.status_code == 200 and r.json()["errors"][0]["row"] == 1


# ---------------------------------------------------------------------------- admin
def test_reload_keeps_the_old_model_when_the_new_one_is_broken(
    client: TestClient, tmp_path: Path
) -> None:
    headers = {"X-API-Key": KEY}
    assert client.post("/admin/reload", json={"model": str(tmp_path)}).status_code == 401
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{not json", encoding="utf-8")
    r = client.post("/admin/reload", json={"model": str(broken)}, headers=headers)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "unreadable" in detail["error"] and detail["model_version"] == "test-1"
    assert _rec(client, customer_id="c1")["model_version"] == "test-1"
    new = _save(tmp_path / "v2", "test-2")
    r = client.post("/admin/reload", json={"model": str(new)}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_version": "test-2", "previous_version": "test-1", "path": str(new)}
    assert _rec(client, customer_id="c1")["model_version"] == "test-2"
    assert client.get("/readyz").json()["model_version"] == "test-2"
    assert client.post("/admin/reload", headers=headers).json()["model_version"] == "test-1"


def test_metrics_text(client: TestClient) -> None:
    _rec(client, customer_id="c3", k=20)
    client.post("/v1/recommendations", json={"customer_id": "c1", "k": 0})
    text = client.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    body = text.text
    assert (
        'touchpoint_requests_total{method="POST",route="/v1/recommendations",status="200"} 1'
        in body
    )
    assert 'route="/v1/recommendations",status="422"} 1' in body
    assert (
        'touchpoint_request_duration_seconds_bucket{route="/v1/recommendations",le="+Inf"} 2'
        in body
    )
    assert "touchpoint_decisions_total{action=" in body
    assert 'touchpoint_suppressions_total{rule="consent"}' in body
    assert 'touchpoint_model_info{model_version="test-1"} 1' in body


def test_bad_rows_of_the_startup_files_are_quarantined_next_to_the_store(
    tmp_path: Path, bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs, store_dir = tmp_path / "inputs", tmp_path / "state"
    inputs.mkdir()
    (inputs / "events.csv").write_text(
        "customer_id,timestamp,channel,event_type\n"
        "c1,2024-03-01T10:00:00Z,web,visit\n"
        "c1,2024-03-02T10:00:00Z,web,teleport\n"  # unknown event type
        "c2,not a time,web,visit\n"
    )
    (inputs / "customers.csv").write_text("customer_id,consent_email\nc1,true\n,false\n")
    settings = ServingSettings(
        model=bundle_dir,
        store_path=store_dir / "store.db",
        decision_log_path=store_dir / "decisions.db",
        events_path=inputs / "events.csv",
        customers_path=inputs / "customers.csv",
    )
    with caplog.at_level("INFO", logger="touchpoint"), TestClient(create_app(settings)):
        pass
    events_q = pd.read_csv(store_dir / "events.quarantine.csv")
    customers_q = pd.read_csv(store_dir / "customers.quarantine.csv")
    assert len(events_q) == 2 and len(customers_q) == 1
    assert events_q.filter(like="reason").astype(str).apply(" ".join, axis=1).str.len().min() > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("2 bad event rows quarantined" in m for m in warnings), warnings
    assert any("1 bad customer rows quarantined" in m for m in warnings), warnings
    assert not list(inputs.glob("*.quarantine.csv"))  # the inputs' folder is left alone


def test_open_writes_without_api_key(tmp_path: Path, bundle_dir: Path) -> None:
    settings = ServingSettings(
        model=bundle_dir, store_path=tmp_path / "s.db", decision_log_path=tmp_path / "d.db"
    )
    with TestClient(create_app(settings)) as c:
        body = {"events": [{"customer_id": "x", "timestamp": AS_OF, "channel": "web",
                            "event_type": "visit"}]}  # fmt: skip
        assert c.post("/v1/events", json=body).json()["accepted"] == 1


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_MODEL", "/m")
    monkeypatch.setenv("TOUCHPOINT_API_KEY", "k")
    monkeypatch.setenv("TOUCHPOINT_PORT", "9000")
    s = ServingSettings()  # type: ignore[call-arg]
    assert str(s.model) == "/m" and s.port == 9000 and s.api_key is not None
    assert (s.host, s.default_k, s.history_days, s.store_path.name) == (
        "127.0.0.1", 3, 365, "touchpoint-store.db",
    )  # fmt: skip
    assert ServingSettings(model=Path("/other")).model == Path("/other")  # keywords win
