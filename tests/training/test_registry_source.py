"""RegistryAliasSource against a real MLflow registry (SQLite in a temporary folder).

Two tiny bundles are logged with the production path (:func:`training.tracking.log_bundle_model`,
a pyfunc model registered as ``touchpoint``) and the ``champion`` alias is moved between
them.  ``pip_requirements`` is given to ``mlflow.pyfunc.log_model`` so MLflow skips its
requirement inference (a subprocess that takes ~7 s per model); the logged layout is the same.
"""

from __future__ import annotations

import functools
import importlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc  # the real module, not mlflow's lazy placeholder: patched below
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from serving.app import Metrics, Service
from serving.bundle import BUNDLE_FILE, load_bundle
from serving.model_source import FAILED, RELOADED, SKIPPED, UNCHANGED, ModelSource, ModelWatcher
from serving.settings import ServingSettings
from tests.serving.bundle_factory import save_tiny_bundle
from training import registry_source, tracking
from training.registry_source import RegistryAliasSource, parse_alias_uri, redact_uri

CHAMPION_URI = f"models:/{tracking.MODEL_NAME}@{tracking.CHAMPION}"


@dataclass(frozen=True)
class Registry:
    root: Path
    versions: dict[str, str]  # registered version -> the bundle's model_version


def _copy_bundle(src: Path, dst: Path, model_version: str) -> Path:
    """A copy of bundle ``src`` with another ``model_version`` (cheaper than training again)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / BUNDLE_FILE).read_text(encoding="utf-8"))
    manifest["model_version"] = model_version
    (dst / BUNDLE_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.chdir(root)
    pyfunc = importlib.import_module("mlflow.pyfunc")
    assert mlflow.pyfunc is pyfunc
    mp.setattr(
        pyfunc,
        "log_model",
        functools.partial(mlflow.pyfunc.log_model, pip_requirements=["touchpoint"]),
    )
    try:
        tracking.configure("registry-source-test")
        versions: dict[str, str] = {}
        first = save_tiny_bundle(root / "bundle-a", "bundle-a")
        for tag in ("bundle-a", "bundle-b"):
            bundle = first if tag == "bundle-a" else _copy_bundle(first, root / tag, tag)
            with mlflow.start_run():
                version, _ = tracking.log_bundle_model(bundle)
            assert version is not None
            versions[version] = tag
        assert sorted(versions) == ["1", "2"]
        tracking.set_alias(tracking.CHAMPION, "1")
        yield Registry(root=root, versions=versions)
    finally:
        mlflow.end_run()
        mp.undo()


@pytest.fixture
def champion(registry: Registry) -> Iterator[RegistryAliasSource]:
    """A source following ``champion``, reset to version 1 after each test."""
    source = RegistryAliasSource.from_uri(CHAMPION_URI, download_root=registry.root / "dl")
    assert source is not None
    yield source
    tracking.set_alias(tracking.CHAMPION, "1")


def test_from_uri_accepts_only_alias_uris() -> None:
    assert parse_alias_uri("models:/touchpoint@champion") == ("touchpoint", "champion")
    assert parse_alias_uri("models:/touchpoint@champion/") == ("touchpoint", "champion")
    for uri in ("some/folder", "models:/touchpoint/3", "models:/touchpoint", "runs:/abc/model"):
        assert RegistryAliasSource.from_uri(uri) is None, uri
    assert RegistryAliasSource.from_uri(Path("models")) is None
    source = RegistryAliasSource.from_uri("models:/touchpoint@challenger")
    assert source is not None
    assert (source.name, source.alias, source.uri) == (
        "touchpoint",
        "challenger",
        "models:/touchpoint@challenger",
    )
    assert isinstance(source, ModelSource)


def test_redact_uri_hides_passwords_only() -> None:
    assert redact_uri("postgresql://ml:pw@db:5432/mlflow") == "postgresql://ml:***@db:5432/mlflow"
    assert redact_uri("https://user:tok@en@host/") == "https://user:***@host/"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_uri("http://host:5000") == "http://host:5000"


def test_current_follows_the_alias(champion: RegistryAliasSource) -> None:
    assert champion.current() == "1"
    tracking.set_alias(tracking.CHAMPION, "2")
    assert champion.current() == "2"
    assert "models:/touchpoint@champion" in champion.describe()


def test_missing_alias_or_model_is_none(registry: Registry) -> None:
    assert RegistryAliasSource("touchpoint", "no-such-alias").current() is None
    assert RegistryAliasSource("no-such-model", "champion").current() is None
    with pytest.raises(FileNotFoundError, match="no-such-alias"):
        RegistryAliasSource("touchpoint", "no-such-alias").resolve()


def test_resolve_gives_the_version_and_its_bundle(champion: RegistryAliasSource) -> None:
    tracking.set_alias(tracking.CHAMPION, "2")
    version, folder = champion.resolve()
    assert version == "2"
    assert load_bundle(folder).model_version == "bundle-b"


def test_fetch_returns_a_loadable_bundle_of_that_version(
    registry: Registry, champion: RegistryAliasSource
) -> None:
    for version, tag in registry.versions.items():
        folder = champion.fetch(version)
        assert (folder / BUNDLE_FILE).is_file()
        assert folder.is_relative_to(registry.root / "dl")
        manifest = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
        assert manifest["model_version"] == tag
        assert load_bundle(folder).model_version == tag


def test_the_registered_pyfunc_scores_like_the_bundle_and_holds_no_pickle(
    registry: Registry,
) -> None:
    """The wrapper is logged from its source file (training/pyfunc_model.py), not pickled:
    ``mlflow.pyfunc.load_model`` runs that source and predicts each row under its action
    as the bundle does."""
    uri = f"models:/{tracking.MODEL_NAME}/1"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(registry.root / "pf")))
    assert not list(local.rglob("*.pkl")), sorted(p.name for p in local.rglob("*"))
    assert (local / "pyfunc_model.py").is_file()
    bundle = load_bundle(registry.root / "bundle-a")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, bundle.spec.n_features))
    frame = pd.DataFrame(X, columns=list(bundle.spec.feature_names))
    frame["action"] = [bundle.actions[i % len(bundle.actions)] for i in range(len(X))]
    codes = np.arange(len(X)) % len(bundle.actions)
    out = mlflow.pyfunc.load_model(uri).predict(frame)
    np.testing.assert_allclose(out["p_conversion"], bundle.conversion.predict_logged(X, codes))
    np.testing.assert_allclose(out["p_churn"], bundle.churn.predict_logged(X, codes))


def test_fetch_of_an_unknown_version_raises_and_leaves_nothing(
    registry: Registry, champion: RegistryAliasSource
) -> None:
    before = set((registry.root / "dl").glob("*")) if (registry.root / "dl").exists() else set()
    with pytest.raises(MlflowException):
        champion.fetch("99")
    with pytest.raises(ValueError, match="version number"):
        champion.fetch("../1")
    after = set((registry.root / "dl").glob("*"))
    assert after == before


def test_fetch_keeps_only_the_last_downloads(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = registry.root / "dl-keep"
    source = RegistryAliasSource("touchpoint", "champion", download_root=root)
    assert registry_source.KEEP_DOWNLOADS == 2
    one = source.fetch("1")
    two = source.fetch("2")
    assert one.is_dir() and two.is_dir()  # the last two stay
    assert len(list(root.iterdir())) == 2
    again = source.fetch("1")  # a version fetched again replaces its earlier copy
    assert not one.exists() and again.is_dir() and two.is_dir()
    assert load_bundle(again).model_version == registry.versions["1"]
    assert len(list(root.iterdir())) == 2
    monkeypatch.setattr(registry_source, "KEEP_DOWNLOADS", 1)
    last = source.fetch("2")
    assert not two.exists() and not again.exists() and last.is_dir()
    assert len(list(root.iterdir())) == 1
    with pytest.raises(MlflowException):  # a failed fetch deletes nothing that was kept
        source.fetch("99")
    assert last.is_dir() and len(list(root.iterdir())) == 1


def test_watcher_reloads_a_real_service_when_the_alias_moves(
    registry: Registry, champion: RegistryAliasSource
) -> None:
    """End to end: alias move → watcher → Service.reload swaps the model; a broken one does not."""
    settings = ServingSettings(
        model=champion.fetch("1"),
        store_path=registry.root / "store.db",
        decision_log_path=registry.root / "decisions.db",
    )
    service = Service(settings, Metrics())
    try:
        service.reload(settings.model)
        assert service.model is not None and service.model.version == "bundle-a"
        reports: list[tuple[str, str | None]] = []
        watcher = ModelWatcher(
            champion,
            service.reload,
            interval=60,
            initial=champion.current(),
            on_result=lambda status, ident, error: reports.append((status, ident)),
        )
        assert watcher.check_now().status == UNCHANGED

        tracking.set_alias(tracking.CHAMPION, "2")
        result = watcher.check_now()
        assert result.status == RELOADED, result.error
        assert service.model.version == "bundle-b"
        assert watcher.served == "2"

        # A third version whose bundle is corrupt: reported, old model keeps serving.
        broken = _copy_bundle(registry.root / "bundle-a", registry.root / "bundle-c", "bundle-c")
        (broken / BUNDLE_FILE).write_text("{not json", encoding="utf-8")
        with mlflow.start_run():
            version, _ = tracking.log_bundle_model(broken)
        assert version == "3"
        tracking.set_alias(tracking.CHAMPION, "3")
        result = watcher.check_now()
        assert result.status == FAILED and result.ident == "3"
        assert service.model.version == "bundle-b"
        assert watcher.check_now().status == SKIPPED
        assert reports == [
            (UNCHANGED, "1"),
            (RELOADED, "2"),
            (FAILED, "3"),
            (SKIPPED, "3"),
        ]
    finally:
        service.close()
