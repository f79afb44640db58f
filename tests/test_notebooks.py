"""The notebooks in ``notebooks/`` run end to end on tiny data, and are committed clean.

Each notebook is executed with nbclient in a fresh kernel, with the notebook folder as the
working directory (as Jupyter does), ``TOUCHPOINT_NB_SMALL=1`` and a throw-away MLflow
store.  A check cell is appended in memory (never saved) that prints the notebook's key
figures as JSON, so the assertions are about real values, not just "no cell raised".
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = (
    "01-journey-exploration.ipynb",
    "02-experiment-review.ipynb",
    "03-hillstrom-uplift.ipynb",
)
DATA = REPO.parent / "shared" / "data"
CELL_TIMEOUT_S = 300
EXPERIMENT = "touchpoint-notebooks"
MARKER = "NOTEBOOK-CHECKS "


# --------------------------------------------------------------------------- fast checks
def test_notebooks_are_committed_without_outputs() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert set(NAMES) <= set(found), f"missing notebooks: {set(NAMES) - set(found)}"
    for name in found:
        nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
        assert nb["nbformat"] == 4, name
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            assert cell.get("outputs") == [], f"{name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, f"{name} cell {i} has an execution count"


# --------------------------------------------------------------------------- execution
@pytest.fixture
def notebook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny sizes, temporary folders, and a kernel that runs this very interpreter."""
    pytest.importorskip("nbclient", reason="notebook tests need the dev extra (nbclient)")
    pytest.importorskip("ipykernel", reason="notebook tests need the dev extra (ipykernel)")

    # A "python3" kernelspec first on JUPYTER_PATH, pointing at sys.executable: the kernel
    # then uses this virtualenv whatever other kernelspecs the machine has.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (touchpoint tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))

    # Never the user's store (the experiment review gets a prepared one: mlflow_store).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("TOUCHPOINT_NB_SMALL", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))  # the notebooks' temporary folders
    return tmp_path


@pytest.fixture
def mlflow_store(notebook_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty MLflow store in tmp_path, with the experiment's artifacts there too."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{notebook_env / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(
        EXPERIMENT, artifact_location=(notebook_env / "mlruns").as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TOUCHPOINT_EXPERIMENT", EXPERIMENT)
    return uri


def _execute(name: str, checks: str) -> tuple[Any, dict[str, Any]]:
    """Run a notebook (plus a check cell printing JSON); return it and the checks."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = f"import json as _json\nprint({MARKER!r} + _json.dumps({checks}))"
    nb.cells.append(nbformat.v4.new_code_cell(code))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # cwd = the notebook folder
    )
    client.execute()  # raises CellExecutionError (with the traceback) on any failing cell
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
    text = "".join(
        o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream"
    )
    line = next(ln for ln in text.splitlines() if ln.startswith(MARKER))
    return nb, json.loads(line[len(MARKER) :])


def _images(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def _texts(nb: Any) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.append(data.get("text/markdown", "") + data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_journey_exploration_notebook(notebook_env: Path) -> None:
    checks = """{
        "executable": sys.executable,
        "n_customers": int(n_customers),
        "funnel_total": int(sim_funnel["customers"].sum()),
        "moves_total": int(sim_moves.to_numpy().sum()),
        "moves_rows": [int(v) for v in sim_moves.sum(axis=1)],
        "funnel": [int(v) for v in sim_funnel["customers"]],
        "markov_total": float(sim_attribution.table["markov"].sum()),
        "linear_total": float(sim_attribution.table["linear"].sum()),
        "conversions": int(sim_attribution.conversions),
        "real": None if real is None else {
            "customers": int(real["customer_id"].nunique()),
            "funnel_total": int(real_funnel["customers"].sum()),
            "moves_total": int(real_moves.to_numpy().sum()),
            "conversions": int(real_attribution.conversions),
            "untouched": int(real_attribution.n_untouched_conversions),
        },
    }"""
    nb, got = _execute(NAMES[0], checks)
    assert Path(got["executable"]).resolve() == Path(sys.executable).resolve()
    # The small world: 600 customers; the funnel and the transitions count every one.
    assert got["n_customers"] == 600
    assert got["funnel_total"] == got["moves_total"] == got["n_customers"]
    assert got["moves_rows"] == got["funnel"]
    assert got["conversions"] > 0
    assert math.isclose(got["markov_total"], got["conversions"], rel_tol=1e-9)
    assert math.isclose(got["linear_total"], got["conversions"], rel_tol=1e-9)
    assert _images(nb) >= 4  # events over time, funnel, transitions, attribution
    if (DATA / "journeys.csv").is_file():
        # The figures of docs/ATTRIBUTION.md.
        assert got["real"] == {
            "customers": 7896,
            "funnel_total": 7896,
            "moves_total": 7896,
            "conversions": 1412,
            "untouched": 230,
        }
        assert _images(nb) >= 8
    else:
        assert got["real"] is None
        assert "Skipped" in _texts(nb)


@pytest.mark.slow
def test_experiment_review_notebook(notebook_env: Path, mlflow_store: str) -> None:
    checks = """{
        "tracking_uri": uri,
        "runs": len(runs),
        "compared": [r.info.run_id for r in compared],
        "columns": [str(c) for c in comparison.columns],
        "champion": champion,
        "challenger": challenger,
        "versions": version_of_run,
        "metrics": [r.data.metrics for r in compared],
        "tags": [r.data.tags for r in compared],
    }"""
    nb, got = _execute(NAMES[1], checks)
    assert got["tracking_uri"] == mlflow_store
    # The experiment was empty, so the notebook trained (and registered) two runs.
    assert got["runs"] == 2 and len(got["compared"]) == 2 and len(got["columns"]) == 2
    assert sorted(got["versions"].values()) == ["1", "2"]
    assert got["challenger"] == "2"  # the newest version is always the challenger
    assert got["champion"] in {"1", "2"}
    assert {t["formulation"] for t in got["tags"]} == {"single", "shared_offset"}
    for metrics in got["metrics"]:
        assert 0.5 < metrics["churn.auc"] <= 1.0
        assert 0.0 < metrics["conversion.auc"] <= 1.0
        assert 0.0 <= metrics["conversion.ece"] < 0.2
        low, value, high = (
            metrics["policy.model.dr.ci_low"],
            metrics["policy.model.dr"],
            metrics["policy.model.dr.ci_high"],
        )
        assert low <= value <= high
        assert "truth.oracle_fraction.model" in metrics
    assert _images(nb) >= 1
    # Nothing was written into the repository (artifacts went to the pre-made experiment).
    assert not (REPO / "notebooks" / "mlruns").exists()
    assert any((notebook_env / "mlruns").iterdir())


@pytest.mark.slow
def test_hillstrom_notebook(notebook_env: Path) -> None:
    checks = """None if result is None else {
        "n_customers": result.n_customers,
        "n_test": result.n_test,
        "uplift": [float(v) for v in result.uplift_at_k["value"]],
        "ips_mens": float(result.policy_value("all_mens_email", "ips")["value"]),
        "identity_mens": float(result.arm_means.query(
            "reward == 'spend_minus_cost' and action == 'mens_email'")["ips_identity"].iloc[0]),
        "ci": [float(v) for v in result.policy_value(result.model_policy, "ips")[["ci_low", "value", "ci_high"]]],
    }"""
    nb, got = _execute(NAMES[2], checks)
    if not (DATA / "hillstrom.csv").is_file():
        assert got is None
        assert "Skipped" in _texts(nb)
        return
    assert got["n_customers"] == 8000 and got["n_test"] == 4000  # the small subset
    assert all(math.isfinite(v) for v in got["uplift"]) and len(got["uplift"]) == 8
    # Randomized, propensity 1/3: IPS of "Mens e-mail to all" is 3 * (arm total) / n.
    assert math.isclose(got["ips_mens"], got["identity_mens"], rel_tol=1e-9)
    low, value, high = got["ci"]
    assert low <= value <= high
    assert _images(nb) >= 2


@pytest.mark.slow
def test_hillstrom_notebook_skips_without_data(
    notebook_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = notebook_env / "no-data"
    empty.mkdir()
    monkeypatch.setenv("TOUCHPOINT_DATA_DIR", str(empty))
    nb, got = _execute(NAMES[2], "result is None")
    assert got is True
    assert "Skipped" in _texts(nb) and "hillstrom.csv" in _texts(nb)
    assert _images(nb) == 0
