"""formats.model_artifact: where the forecaster lies inside a logged pyfunc model."""

from __future__ import annotations

from pathlib import Path

from formats.model_artifact import FORECASTER_ARTIFACT, forecaster_dir, forecaster_path


def test_conventional_folder(tmp_path: Path) -> None:
    assert forecaster_dir(tmp_path) == tmp_path / "artifacts" / "forecaster"
    assert FORECASTER_ARTIFACT == "forecaster"
    # No MLmodel: the conventional folder.
    assert forecaster_path(tmp_path) == tmp_path / "artifacts" / "forecaster"


def test_the_path_mlmodel_records_wins(tmp_path: Path) -> None:
    # MLflow stores an artifact under its source folder's name, not under its key.
    (tmp_path / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    loader_module: mlflow.pyfunc.model\n"
        "    artifacts:\n"
        "      forecaster:\n"
        "        path: artifacts/saved-3\n"
        "        uri: /tmp/saved-3\n"
    )
    assert forecaster_path(tmp_path) == tmp_path / "artifacts" / "saved-3"


def test_an_mlmodel_without_the_artifact_falls_back(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    assert forecaster_path(tmp_path) == forecaster_dir(tmp_path)
