"""Baseline (c) of benchmarks/serve_bench.py: the raymlops model package as an MLflow pyfunc, "models from code".

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"package": <package dir>})`` stores this
source file and the package directory; nothing is pickled. At load time ``load_context`` verifies and
loads the package with ``raymlops.model.packaging.load_package``; ``predict`` applies the same input casts as
raymlops serving (``coerce_to_schema``, which ``frame_from_rows`` uses) to the DataFrame that MLflow's
scoring server parsed from ``{"dataframe_records": [...]}`` and calls ``LoadedModel.predict_frame``. The
answer per record has the same fields as raymlops' ``Prediction`` (score, label, probabilities).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class RaymlopsPackageModel(PythonModel):
    def load_context(self, context) -> None:
        from raymlops.model.packaging import load_package

        self.model = load_package(context.artifacts["package"])
        self.schema = self.model.manifest["input_schema"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict]:
        from raymlops.serving.schema import predictions_for
        from raymlops.model.inputs import coerce_to_schema

        frame = coerce_to_schema(model_input.reindex(columns=list(self.schema)), self.schema)[0]
        scores = self.model.predict_frame(frame)
        return [p.model_dump() for p in predictions_for(self.model.task, [float(s) for s in scores])]


mlflow.models.set_model(RaymlopsPackageModel())
