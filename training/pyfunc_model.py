"""The bundle as an MLflow pyfunc model, so MLflow tooling can load and serve it too.

Our own service does not use this (it loads the bundle folder directly and is far faster);
it exists so that ``mlflow.pyfunc.load_model("models:/touchpoint@champion")`` works and so
that ``mlflow models serve`` can be measured side by side.

The model is logged "from code" (``training/tracking.py`` passes this file's path to
``mlflow.pyfunc.log_model``): MLflow keeps this source next to the bundle and runs it when
the model is loaded, so the registry holds no pickle of the wrapper.  Nothing in touchpoint
imports this module; loading it still runs code, so load models only from registries you
trust.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class TouchpointPyfunc(PythonModel):
    """Scores feature rows: input = the bundle's feature columns, plus ``action``."""

    def load_context(self, context: Any) -> None:
        from serving.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        names = list(self.bundle.spec.feature_names)
        X = model_input[names].to_numpy(dtype=np.float64)
        codes = np.array([self.bundle.actions.index(a) for a in model_input["action"].astype(str)])
        return pd.DataFrame(
            {
                "p_conversion": self.bundle.conversion.predict_logged(X, codes),
                "p_churn": self.bundle.churn.predict_logged(X, codes),
            }
        )


set_model(TouchpointPyfunc())
