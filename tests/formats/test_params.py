"""formats.params.flatten: nested dicts to dotted keys (MLflow params, the service's metrics)."""

from __future__ import annotations

from formats.params import flatten


def test_nested_dicts_become_dotted_keys_and_other_values_are_leaves() -> None:
    nested = {"data": {"split": {"seed": 0}, "channels": ["a", "b"], "limit": None},
              "options": {}, "lr": 0.01}
    assert flatten(nested) == {
        "data.split.seed": 0, "data.channels": ["a", "b"], "data.limit": None,
        "options": {}, "lr": 0.01,
    }


def test_prefix() -> None:
    assert flatten({"val_mse": 0.25, "x": {"y": 1}}, prefix="metrics.") == {
        "metrics.val_mse": 0.25, "metrics.x.y": 1,
    }


def test_config_params_use_the_same_keys() -> None:
    from pipelines.config import flatten_params

    nested = {"data": {"split": {"seed": 0}, "path": "x.csv"}, "evaluate": {}}
    params = flatten_params(nested)
    assert list(params) == list(flatten(nested))
    assert params == {"data.split.seed": "0", "data.path": "x.csv", "evaluate": "{}"}
