"""MLflow: where runs go, and the registry's champion / challenger aliases.

The tracking URI defaults to a SQLite database in the current project folder
(``sqlite:///<cwd>/mlflow.db``, artifacts under ``<cwd>/mlruns``), so there is no server to
start; ``MLFLOW_TRACKING_URI`` overrides it.  Nothing happens at import time: the URI is
set when a command asks for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

MODEL_NAME = "touchpoint"
CHALLENGER = "challenger"
CHAMPION = "champion"
DEFAULT_EXPERIMENT = "touchpoint"


def tracking_uri() -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` or the project's SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def configure(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at :func:`tracking_uri` and select (or create) the experiment; return
    the URI.  See :func:`configure_experiment`."""
    return configure_experiment(experiment)[0]


def configure_experiment(experiment: str = DEFAULT_EXPERIMENT) -> tuple[str, str]:
    """Point MLflow at :func:`tracking_uri` and select (or create) the experiment.

    Returns the URI and the name of the experiment runs now go to: ``experiment``, or,
    inside ``mlflow run``, the experiment of the run it started (:func:`project_run`).
    """
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    outer = project_run()
    if outer is not None:
        experiment_id = outer.info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return uri, mlflow.get_experiment(experiment_id).name
    if mlflow.get_experiment_by_name(experiment) is None:
        artifact_root = None
        if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
            artifact_root = (Path.cwd() / "mlruns").as_uri()
        mlflow.create_experiment(experiment, artifact_location=artifact_root)
    mlflow.set_experiment(experiment)
    return uri, experiment


def project_run() -> Run | None:
    """The run ``mlflow run`` started for this process, if it is one of its steps.

    ``mlflow run`` creates the run itself, in the experiment its ``--experiment-name`` or
    ``--experiment-id`` names ("Default" otherwise), and passes the run id (and its tracking
    URI) in the environment; ``mlflow.start_run()`` then resumes that run, and refuses to
    when another experiment is active.  So inside ``mlflow run`` the run's experiment wins
    over ``--experiment``.
    """
    run_id = os.environ.get("MLFLOW_RUN_ID")
    return MlflowClient().get_run(run_id) if run_id else None


def data_hash(*paths: str | Path | None) -> str:
    """SHA-256 over the bytes of the input files, so a run names exactly the data it saw."""
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested mappings as MLflow params: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


def log_params(params: Mapping[str, Any]) -> None:
    """Log params, truncating values to MLflow's length limit rather than failing."""
    flat = {k: str(v)[:6000] for k, v in flatten("", params).items()}
    items = list(flat.items())
    for start in range(0, len(items), 100):  # MLflow batches at most 100 params
        mlflow.log_params(dict(items[start : start + 100]))


def log_bundle_model(bundle_dir: Path, *, register: bool = True) -> tuple[str | None, str]:
    """Log the bundle as a pyfunc model of the active run; register it as ``touchpoint``.

    Returns the registered version (or None) and the model URI.  The pyfunc wrapper lets
    ``mlflow models serve`` and ``mlflow.pyfunc.load_model`` use the bundle too.
    """
    # "Models from code": the wrapper's source file, not a CloudPickle of an instance
    # (training/pyfunc_model.py), so that the registry holds no pickle.
    code = Path(__file__).with_name("pyfunc_model.py")
    info = mlflow.pyfunc.log_model(
        name="touchpoint",
        python_model=str(code),
        artifacts={"bundle": str(bundle_dir)},
        registered_model_name=MODEL_NAME if register else None,
    )
    version = getattr(info, "registered_model_version", None)
    return (None if version is None else str(version)), info.model_uri


def set_alias(alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(MODEL_NAME, alias, version)


def alias_version(alias: str) -> str | None:
    """The version an alias points at, or None when the alias (or model) does not exist."""
    try:
        return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException:
        return None


def download_bundle(model_uri: str, dst: str | Path | None = None) -> Path:
    """Fetch the bundle behind ``models:/touchpoint@champion`` (or any model URI)."""
    configure_uri_only()
    target = Path(dst or tempfile.mkdtemp(prefix="touchpoint-bundle-"))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
        )
        # The pyfunc model keeps the bundle folder under artifacts/<bundle folder name>/.
        manifests = sorted(local.rglob("bundle.json"))
        if not manifests:
            raise FileNotFoundError(f"{model_uri} holds no touchpoint bundle (no bundle.json)")
    except BaseException:
        if dst is None:  # the temporary folder is ours: leave nothing behind
            shutil.rmtree(target, ignore_errors=True)
        raise
    return manifests[0].parent


def configure_uri_only() -> str:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
