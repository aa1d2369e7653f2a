"""Where a trained forecaster lies inside a logged MLflow model.

The pipelines log a forecaster (the folder :meth:`latent_ode.Forecaster.save` writes) as the
pyfunc artifact :data:`FORECASTER_ARTIFACT`, and save it under the same name among a training
run's artifacts; the service downloads a registered version and loads the forecaster from it.
Both sides read the layout from here, so that neither imports the other.

Layout of a downloaded pyfunc model directory::

    MLmodel                      the flavour record; names the artifact's real path
    artifacts/forecaster/        usually: config.json + weights.safetensors
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FORECASTER_ARTIFACT", "forecaster_dir", "forecaster_path"]

FORECASTER_ARTIFACT = "forecaster"
"""The artifact key of the forecaster folder in a pyfunc model, and its folder in a run."""


def forecaster_dir(model_dir: str | Path) -> Path:
    """The conventional forecaster folder inside a downloaded pyfunc model directory.

    Args:
        model_dir: the folder holding ``MLmodel``.

    Returns:
        ``model_dir/artifacts/forecaster``.
    """
    return Path(model_dir) / "artifacts" / FORECASTER_ARTIFACT


def forecaster_path(model_dir: str | Path) -> Path:
    """The forecaster folder inside a downloaded pyfunc model, as its ``MLmodel`` records it.

    MLflow copies an artifact under the *basename of its source directory*, not under its key,
    so :func:`forecaster_dir` only holds when the folder logged was named ``forecaster``. The
    MLmodel file records the real path; it is used when present.

    Args:
        model_dir: the folder holding ``MLmodel``.

    Returns:
        The forecaster folder (:func:`forecaster_dir` when MLmodel is missing or names none).
    """
    # mlflow is imported here, not at the top: it is slow to import and only loading needs it.
    from mlflow.models import Model

    model_dir = Path(model_dir)
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():  # Model.load raises MlflowException, not OSError, for this
        return forecaster_dir(model_dir)
    try:
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        relative = flavor["artifacts"][FORECASTER_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError):
        return forecaster_dir(model_dir)
    return model_dir / relative
