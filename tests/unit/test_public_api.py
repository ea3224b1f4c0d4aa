"""The public names are pinned (moved here from test_errors): adding one is a decision, removing one
breaks users; and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import raymlops


def test_the_public_names_are_these_and_all_resolve():
    assert sorted(raymlops.__all__) == sorted([
        "ConfigError", "DataSourceError", "DataValidationError", "FeatureError", "GateFailed", "Model",
        "ModelPackageError", "PipelineConfig", "RaymlopsError", "RegistryError", "RuntimeConnectionError",
        "ServingError", "SnapshotError", "TrainingError", "__version__", "load_config", "load_model", "run",
        "serve", "shutdown"])
    for name in raymlops.__all__:
        assert getattr(raymlops, name) is not None, name
    assert all(callable(getattr(raymlops, f)) for f in ("run", "load_model", "serve", "shutdown"))


def test_importing_the_package_does_not_start_or_import_ray():
    done = subprocess.run([sys.executable, "-c", "import sys, raymlops; print('ray' in sys.modules, "
                           "'mlflow' in sys.modules, 'torch' in sys.modules)"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["False", "False", "False"], done.stdout + done.stderr
