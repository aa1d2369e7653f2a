"""``POST /v1/predict`` with CSV and Parquet bodies and answers (service.content)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from formats.frames import output_columns, predict_frame, response_to_frame
from service.content import accepted_kind, body_kind
from service.errors import NotAcceptableError, UnsupportedMediaTypeError
from tests.formats.test_frames import input_frame
from tests.service.service_helpers import CHANNELS, MODEL_NAME, make_series

TOL = {"rtol": 1e-5, "atol": 1e-5}  # one micro-batch against another: the solver's tolerance
PARQUET = "application/vnd.apache.parquet"
SUPPORTED = ("application/json, text/csv or application/vnd.apache.parquet "
             "(application/x-parquet)")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    series = make_series(3)
    return input_frame(series, [np.array([11.0, 0.5]), np.array([4.0]), np.array([12.0, -1.0])])


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def post(client: TestClient, body: bytes, content_type: str, accept: str | None = None,
         params: str = "") -> httpx.Response:
    headers = {"Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    return client.post(f"/v1/predict{params}", content=body, headers=headers)


def json_body(frame: pd.DataFrame, **extra) -> dict:
    series = []
    for sid, rows in frame.groupby("series_id", sort=False):
        obs = rows[~rows["query"]]
        series.append({"id": sid, "times": obs["time"].tolist(),
                       "values": [[None if np.isnan(v) else v for v in row]
                                  for row in obs[CHANNELS].to_numpy()],
                       "query_times": rows.loc[rows["query"], "time"].tolist()})
    return {"series": series, **extra}


def test_a_csv_body_answers_as_its_json_request(client, frame) -> None:
    got = post(client, csv_bytes(frame), "text/csv",
               params="?quantiles=0.1,0.9&num_samples=8&seed=4")
    want = client.post("/v1/predict", json=json_body(frame, quantiles=[0.1, 0.9], num_samples=8,
                                                     seed=4))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/json"
    a, b = got.json(), want.json()
    assert [s["id"] for s in a["series"]] == ["s0", "s1", "s2"] and a["num_samples"] == 8
    for x, y in zip(a["series"], b["series"], strict=True):
        assert x["query_times"] == y["query_times"] and x["mode"] == y["mode"]
        np.testing.assert_allclose(x["mean"], y["mean"], **TOL)
        np.testing.assert_allclose(x["quantiles"][1]["values"], y["quantiles"][1]["values"], **TOL)


def test_csv_in_csv_out_is_the_frame_answer(client, registry, frame) -> None:
    got = post(client, csv_bytes(frame), "text/csv; charset=utf-8", accept="text/csv",
               params="?quantiles=0.5&quantiles=0.95&seed=1")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "text/csv; charset=utf-8"
    out = pd.read_csv(io.BytesIO(got.content), dtype={"series_id": str})
    assert list(out.columns) == output_columns(CHANNELS, [0.5, 0.95])
    expected = predict_frame(registry.forecaster, frame, quantiles=[0.5, 0.95], seed=1)
    pd.testing.assert_frame_equal(out, expected, **TOL)


@pytest.mark.parametrize("content_type", [PARQUET, "application/x-parquet"])
def test_parquet_in_parquet_out(client, registry, frame, content_type) -> None:
    got = post(client, parquet_bytes(frame), content_type, accept=content_type)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == PARQUET
    out = pd.read_parquet(io.BytesIO(got.content))
    pd.testing.assert_frame_equal(out, predict_frame(registry.forecaster, frame), **TOL)


def test_a_json_body_can_ask_for_a_parquet_answer(client, frame) -> None:
    body = json_body(frame, quantiles=[0.25])
    got = client.post("/v1/predict", json=body, headers={"Accept": f"{PARQUET}, */*;q=0.1"})
    want = client.post("/v1/predict", json=body)
    assert got.status_code == 200 and got.headers["content-type"] == PARQUET
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(got.content)),
                                  response_to_frame(want.json()), **TOL)


def test_horizon_query_parameters_add_queries(client, frame) -> None:
    observations = frame[~frame["query"]].drop(columns="query")
    got = post(client, csv_bytes(observations), "text/csv", accept="text/csv",
               params="?horizon=2&every=1")
    assert got.status_code == 200, got.text
    out = pd.read_csv(io.BytesIO(got.content), dtype={"series_id": str})
    last = observations.groupby("series_id", sort=False)["time"].max().to_numpy()
    np.testing.assert_allclose(out["time"], np.stack([last + 1, last + 2], axis=1).ravel())


def test_accept_negotiation() -> None:
    assert accepted_kind(None) == accepted_kind("*/*") == accepted_kind("application/*") == "json"
    assert accepted_kind("text/*") == "csv"
    assert accepted_kind("text/csv;q=0.5, application/vnd.apache.parquet") == "parquet"
    assert accepted_kind("text/csv, application/json") == "csv"  # equal q: the first listed
    assert accepted_kind("application/xml, text/csv;q=0.2") == "csv"
    with pytest.raises(NotAcceptableError, match="cannot answer in 'text/csv;q=0'"):
        accepted_kind("text/csv;q=0")
    assert body_kind(None) == body_kind("application/json; charset=utf-8") == "json"
    assert body_kind("application/merge-patch+json") == "json"
    assert body_kind("TEXT/CSV") == "csv" and body_kind("application/x-parquet") == "parquet"
    with pytest.raises(UnsupportedMediaTypeError, match="Content-Type 'text/plain' is not"):
        body_kind("text/plain")


def test_an_unsupported_content_type_gets_415(client, frame) -> None:
    got = post(client, csv_bytes(frame), "text/plain")
    assert got.status_code == 415
    assert got.json() == {"detail": f"Content-Type 'text/plain' is not supported; send "
                                    f"{SUPPORTED}."}


def test_an_unsupported_accept_gets_406(client, frame) -> None:
    got = client.post("/v1/predict", json=json_body(frame), headers={"Accept": "application/xml"})
    assert got.status_code == 406
    assert got.json() == {"detail": f"cannot answer in 'application/xml'; this endpoint answers "
                                    f"{SUPPORTED}."}


CSV_HEADER = "series_id,time,hr,query\n"


@pytest.mark.parametrize(("body", "params", "detail"), [
    (CSV_HEADER + "a,0,70,false\na,1,high,false\n", "",
     "the request body, line 3, column 'hr': a channel value must be a number or empty; got "
     "'high'. Fix or blank out that cell."),
    ("series_id,time,spo2\na,0,99\n", "",
     "the request body: column(s) 'spo2' are not channels of the model; its channels are 'hr', "
     "'temp'. Rename or drop those columns."),
    (CSV_HEADER + "a,0,70,false\na,2,,maybe\n", "",
     "the request body, line 3, column 'query': must be true or false (or empty for false); got "
     "'maybe'."),
    (CSV_HEADER + "a,0,70,false\na,1,71,false\n", "",
     "the request body: series 'a' has no query rows; add rows with query=true at the times to "
     "forecast, or pass ?horizon=H&every=DT."),
    ("", "", "the request body, line 1: the body is empty; a long-format table starts with a "
             "header line such as 'series_id,time,HR'."),
    (CSV_HEADER + "a,0,70,false\na,1,,true\n", "?colour=blue",
     "unknown query parameter(s) ['colour']; a CSV or Parquet body takes quantiles, "
     "num_samples, seed, horizon, every."),
    (CSV_HEADER + "a,0,70,false\na,1,,true\n", "?num_samples=many",
     "query parameter `num_samples` must be an integer; got 'many'."),
    (CSV_HEADER + "a,0,70,false\na,1,,true\n", "?horizon=inf&every=1",
     "query parameter `horizon` must be finite; got 'inf'."),
    (CSV_HEADER + "a,0,70,false\na,1,,true\n", "?quantiles=0.5,1",
     "query parameter `quantiles` must lie strictly between 0 and 1; got '1'."),
    (CSV_HEADER + "a,0,70,false\n", "?horizon=1",
     "`horizon` and `every` go together; give both or neither."),
    (CSV_HEADER + "a,0,70,false\na,1,,true\n", "?num_samples=100000",
     "`num_samples` is 100000; the maximum is 256 (LATENT_ODE_MAX_NUM_SAMPLES); ask for fewer "
     "samples."),
])
def test_every_bad_csv_request_gets_422_with_its_detail(client, body, params, detail) -> None:
    got = post(client, body.encode(), "text/csv", accept="text/csv", params=params)
    assert got.status_code == 422, got.text
    assert got.headers["content-type"] == "application/json"  # errors stay JSON
    assert got.json() == {"detail": detail}


def test_a_body_that_is_not_parquet_gets_422(client) -> None:
    got = post(client, b"series_id,time\n", PARQUET)
    assert got.status_code == 422
    assert got.json()["detail"].startswith("cannot read 'the request body' as parquet (")


def test_a_body_that_is_not_utf8_gets_422(client) -> None:
    got = post(client, (CSV_HEADER + "a,0,7").encode() + b"\xff\n", "text/csv")
    assert got.status_code == 422
    assert got.json() == {"detail": "the request body, line 2, column 6 (byte 29): the byte "
                                    "b'\\xff' is not UTF-8 text; save the file as UTF-8."}


def test_csv_bodies_obey_the_size_limit_and_the_work_budget(make_settings, frame) -> None:
    from service.app import create_app

    body = csv_bytes(frame)
    with TestClient(create_app(make_settings(max_body_bytes=len(body) - 1))) as small:
        got = post(small, body, "text/csv")
    assert got.status_code == 413
    assert got.json()["detail"].startswith(f"the request body is {len(body)} bytes; the limit is "
                                           f"{len(body) - 1} bytes")
    with TestClient(create_app(make_settings(max_request_work=10))) as tight:
        got = post(tight, body, "text/csv", params="?num_samples=8")
    assert got.status_code == 422
    assert "LATENT_ODE_MAX_REQUEST_WORK" in got.json()["detail"]


def test_a_csv_body_without_a_model_gets_503(make_settings, frame) -> None:
    from service.app import create_app

    settings = make_settings(model_uri="models:/no-such-model@champion",
                             registry_retry_initial_s=3600)
    with TestClient(create_app(settings)) as empty:
        got = post(empty, csv_bytes(frame), "text/csv")
    assert got.status_code == 503
    assert got.json()["detail"].startswith("no model is loaded")


@pytest.mark.integration
def test_csv_round_trip_through_real_uvicorn(registry, frame, tmp_path: Path) -> None:
    from tests.service.test_uvicorn_integration import serve

    with serve(registry.tracking_uri, MODEL_NAME, tmp_path / "cache",
               tmp_path / "uvicorn.log") as base:
        got = httpx.post(f"{base}/v1/predict?quantiles=0.05,0.95&seed=2", content=csv_bytes(frame),
                         headers={"Content-Type": "text/csv", "Accept": "text/csv"}, timeout=60)
    assert got.status_code == 200, got.text
    out = pd.read_csv(io.BytesIO(got.content), dtype={"series_id": str})
    expected = predict_frame(registry.forecaster, frame, quantiles=[0.05, 0.95], seed=2)
    pd.testing.assert_frame_equal(out, expected, **TOL)


def test_other_routes_keep_their_json_content_type_error(client) -> None:
    """Only /v1/predict negotiates: the admin route still says its body must be JSON."""
    from tests.service.service_helpers import ADMIN_KEY

    got = client.post("/v1/admin/reload", content=b'{"version": "1"}',
                      headers={"Content-Type": "text/plain", "X-API-Key": ADMIN_KEY})
    assert got.status_code == 422
    assert got.json() == {"detail": "the request body must be JSON sent with the header "
                                    "Content-Type: application/json; got Content-Type "
                                    "'text/plain'."}


def test_a_parquet_body_with_more_rows_than_any_request_gets_413(make_settings) -> None:
    from service.app import create_app

    # 20,000 identical rows: a few kB compressed, more rows than 2 x (5 + 5) allow.
    big = pd.DataFrame({"series_id": ["a"] * 20_000, "time": np.zeros(20_000),
                        "hr": np.full(20_000, 70.0)})
    settings = make_settings(max_series_per_request=2, max_points_per_series=5,
                             max_query_times_per_series=5)
    with TestClient(create_app(settings)) as app:
        got = post(app, parquet_bytes(big), PARQUET)
    assert got.status_code == 413
    assert got.json() == {"detail": "the Parquet body holds 20000 rows; a request holds at most "
                                    "20 (LATENT_ODE_MAX_SERIES_PER_REQUEST x "
                                    "(LATENT_ODE_MAX_POINTS_PER_SERIES + "
                                    "LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES)); send fewer series "
                                    "or points per request."}
