"""The client against the service as a real uvicorn process: it waits out the 503s of a service
whose model is not registered yet, its frames are the JSON answer's, and a 422 raises with the
service's detail."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from latent_ode_client import LatentODEClient, ServiceError
from tests.service.service_helpers import make_forecaster, register_version
from tests.service.test_uvicorn_integration import serve

pytestmark = pytest.mark.integration

MODEL = "client-test"
FRAME = pd.DataFrame({
    "series_id": ["bed-1"] * 5 + ["bed-2"] * 3,
    "time": [0.0, 1.0, 2.0, 3.5, 1.5, 0.0, 2.0, 4.0],
    "hr": [70.0, 71.0, np.nan, np.nan, np.nan, 60.0, 62.0, np.nan],
    "temp": [37.0, np.nan, 37.2, np.nan, np.nan, np.nan, 36.6, np.nan],
    "query": [False, False, False, True, True, False, False, True],
})
# The same request as the API documents it.
BODY: dict[str, Any] = {
    "series": [
        {"id": "bed-1", "times": [0.0, 1.0, 2.0], "values": [[70.0, 37.0], [71.0, None],
                                                             [None, 37.2]],
         "query_times": [3.5, 1.5]},
        {"id": "bed-2", "times": [0.0, 2.0], "values": [[60.0, None], [62.0, 36.6]],
         "query_times": [4.0]},
    ],
    "quantiles": [0.05, 0.5], "seed": 3, "num_samples": 8,
}


def _expected_frame(answer: dict[str, Any]) -> pd.DataFrame:
    """The output frame written out by hand from the JSON answer."""
    rows = []
    for s in answer["series"]:
        for i, t in enumerate(s["query_times"]):
            row = {"series_id": s["id"], "time": t, "mode": s["mode"][i]}
            for j, c in enumerate(answer["channels"]):
                row[f"{c}_mean"] = s["mean"][i][j]
                row[f"{c}_std"] = s["std"][i][j]
                for q in s["quantiles"]:
                    row[f"{c}_q{q['quantile']!r}"] = q["values"][i][j]
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_client_against_a_real_service(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # create the store's tables before the service reads
    caplog.set_level(logging.WARNING, logger="latent_ode_client")
    with serve(uri, MODEL, tmp_path / "cache", tmp_path / "service.log",
               registry_retry_initial_s="0.2", registry_retry_max_s="0.5") as base:
        assert httpx.post(f"{base}/v1/predict", json=BODY).status_code == 503  # no model yet
        # Up to ~3 minutes of retries: registering takes seconds, more on a loaded machine.
        client = LatentODEClient(base, max_retries=600, backoff_s=0.1, max_backoff_s=0.3)
        got: dict[str, Any] = {}

        def ask() -> None:
            try:
                got["frame"] = client.predict(FRAME, quantiles=[0.05, 0.5], seed=3, num_samples=8)
            except ServiceError as exc:  # reported by the assertion below
                got["error"] = exc

        thread = threading.Thread(target=ask)
        thread.start()  # before the model exists: the client waits out the 503s
        register_version(uri, make_forecaster(), tmp_path, name=MODEL)
        thread.join(timeout=240)
        assert "frame" in got, got
        answer = httpx.post(f"{base}/v1/predict", json=BODY).json()
        arrays = client.predict_arrays([0.0, 2.0], [[60.0, np.nan], [62.0, 36.6]], [4.0],
                                       series_id="bed-2", quantiles=[0.05, 0.5], seed=3,
                                       num_samples=8)
        with pytest.raises(ServiceError) as exc:
            client.predict(FRAME.assign(spo2=np.nan))
        refused = httpx.post(f"{base}/v1/predict", json={"series": [
            {**BODY["series"][0], "channels": ["hr", "temp", "spo2"],
             "values": [[70.0, 37.0, None], [71.0, None, None], [None, 37.2, None]]}]})
        client.close()
    retries = [r for r in caplog.records if "503" in r.getMessage() and "retrying" in r.getMessage()]
    assert retries, "the client never met the service before its model loaded"
    pd.testing.assert_frame_equal(got["frame"], _expected_frame(answer))
    assert list(got["frame"].columns[:5]) == ["series_id", "time", "mode", "hr_mean", "hr_std"]
    pd.testing.assert_frame_equal(arrays, _expected_frame(answer).iloc[2:].reset_index(drop=True))
    assert refused.status_code == 422
    assert exc.value.status == 422
    assert exc.value.detail == refused.json()["detail"]
    assert "spo2" in exc.value.detail
