"""``pipeline run --data-file`` on a small real clinical data set beats both baselines.

The data set has the shape of issue 15's: about 300 patients, seven lab channels, sparse visits.
It is made from PhysioNet 2012 (set A): each stay keeps only its lab rows (Creatinine, BUN,
HCO3, Na, K, HCT, Glucose) and only stays with three visits or more. The first 300 such stays
are the user's file; the next ones are held out entirely (the pipeline never sees them), and on
each held-out stay

- forecasting: the model and LOCF see every visit but the last and answer the last one;
- interpolation: the model and per-channel linear interpolation see a seeded random half of the
  visits and answer the others.

Errors are squared on the training file's standardised scale, averaged per channel and then over
channels (issue 15's P1 averaging), with numpy only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from formats.longformat import SeriesTable, write_long
from latent_ode import Forecaster, Series
from pipelines import tracking
from pipelines.cli import main
from pipelines.pipeline import DERIVED_SETTINGS_ARTIFACT, load_forecaster_from_run
from pipelines.sources.physionet import read_physionet

ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "physionet2012" / "set-a.tar.gz"
LABS = ["Creatinine", "BUN", "HCO3", "Na", "K", "HCT", "Glucose"]
N_USER = 300


def lab_stays(limit: int) -> list[Series]:
    """Each stay's lab rows, for stays with at least three lab visits."""
    table, _ = read_physionet([ARCHIVE], limit=limit)
    idx = [table.channels.index(c) for c in LABS]
    out = []
    for s in table.series:
        values = s.values[:, idx]
        visit = ~np.isnan(values).all(axis=1)
        if visit.sum() >= 3:
            out.append(Series(times=s.times[visit], values=values[visit], id=s.id))
    return out


def channel_mse(errors: list[list[float]]) -> float:
    """Mean over channels of each channel's mean squared error (channels with targets only)."""
    return float(np.mean([np.mean(e) for e in errors if e]))


def per_channel(errors: list[list[float]]) -> str:
    """Each channel's mean squared error, for the log."""
    return " ".join(f"{c} {np.mean(e):.4f}" for c, e in zip(LABS, errors, strict=True) if e)


def forecast_scores(fc: Forecaster, stays: list[Series], scale: np.ndarray,
                    log: list[str] | None = None) -> tuple[float, float]:
    """(model, LOCF) error on each stay's last visit, from the visits before it (per channel
    appended to ``log``)."""
    context = [Series(times=s.times[:-1], values=s.values[:-1], id=s.id) for s in stays]
    preds = fc.predict(context, [s.times[-1:] for s in stays], num_samples=16, seed=0)
    model: list[list[float]] = [[] for _ in LABS]
    locf: list[list[float]] = [[] for _ in LABS]
    for s, c, p in zip(stays, context, preds, strict=True):
        assert p.status == "ok", p.message
        for j in range(len(LABS)):
            seen, y = ~np.isnan(c.values[:, j]), s.values[-1, j]
            if seen.any() and not np.isnan(y):
                model[j].append(((p.mean[0, j] - y) / scale[j]) ** 2)
                locf[j].append(((c.values[seen, j][-1] - y) / scale[j]) ** 2)
    if log is not None:
        log += [f"  forecast model: {per_channel(model)}", f"  forecast LOCF:  {per_channel(locf)}"]
    return channel_mse(model), channel_mse(locf)


def interpolation_scores(fc: Forecaster, stays: list[Series], scale: np.ndarray,
                         log: list[str] | None = None) -> tuple[float, float]:
    """(model, linear interpolation) error on a seeded random half of each stay's visits."""
    rng = np.random.default_rng(0)
    contexts, hidden = [], []
    for s in stays:
        n = len(s.times)
        hide = np.zeros(n, dtype=bool)
        hide[rng.choice(n, size=n - n // 2, replace=False)] = True
        contexts.append(Series(times=s.times[~hide], values=s.values[~hide], id=s.id))
        hidden.append((s.times[hide], s.values[hide]))
    preds = fc.predict(contexts, [t for t, _ in hidden], num_samples=16, seed=0)
    model: list[list[float]] = [[] for _ in LABS]
    linear: list[list[float]] = [[] for _ in LABS]
    for c, (t, y), p in zip(contexts, hidden, preds, strict=True):
        assert p.status == "ok", p.message
        for j in range(len(LABS)):
            seen, target = ~np.isnan(c.values[:, j]), ~np.isnan(y[:, j])
            if seen.any() and target.any():
                line = np.interp(t[target], c.times[seen], c.values[seen, j])
                model[j].extend(((p.mean[target, j] - y[target, j]) / scale[j]) ** 2)
                linear[j].extend(((line - y[target, j]) / scale[j]) ** 2)
    if log is not None:
        log += [f"  interp. model:  {per_channel(model)}", f"  interp. linear: {per_channel(linear)}"]
    return channel_mse(model), channel_mse(linear)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not ARCHIVE.is_file(),
                    reason=f"PhysioNet 2012 archive not found at {ARCHIVE} (expected set-a.tar.gz "
                           "in ../shared/data/physionet2012/ relative to the repository root)")
def test_data_file_beats_both_baselines_on_held_out_patients(
    tmp_path: Path, mlflow_env: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    stays = lab_stays(limit=600)
    user, held_out = stays[:N_USER], stays[N_USER:]
    assert len(held_out) >= 150
    path = write_long(SeriesTable(series=user, channels=LABS, time_unit="hours"),
                      tmp_path / "own-labs.csv")
    monkeypatch.chdir(tmp_path)  # checkpoints go to ./runs

    assert main(["pipeline", "run", "--data-file", str(path), "--max-time", "60"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"settings derived from {path}:\n  data:      300 series, 7 channels")
    parent = re.search(r"^pipeline run (\w+) in experiment 'latent-ode-own-labs'", out, re.M)
    assert parent is not None, out
    client = MlflowClient()
    derived = client.download_artifacts(parent.group(1), DERIVED_SETTINGS_ARTIFACT, str(tmp_path))
    assert Path(derived).read_text(encoding="utf-8") in out
    params = client.get_run(parent.group(1)).data.params
    assert params["model.decoder.anchor"] == "true" and params["train.max_time_s"] == "60.0"
    train = tracking.find_runs(
        f"tags.`mlflow.parentRunId` = '{parent.group(1)}' and tags.`{tracking.TAG_STEP}` = 'train'",
        experiment="latent-ode-own-labs")
    fc = load_forecaster_from_run(train[0].info.run_id)

    assert params["train.val_metric"] == "val_error_ratio"
    scale = fc.normaliser.scale
    log: list[str] = []
    f_model, f_locf = forecast_scores(fc, held_out, scale, log)
    i_model, i_linear = interpolation_scores(fc, held_out, scale, log)
    raw = []
    if fc.blend is not None:  # the same model without its blend, side by side (for the log)
        fc.blend = None
        raw = [f"  without the blend: forecast {forecast_scores(fc, held_out, scale, log)[0]:.4f}, "
               f"interpolation {interpolation_scores(fc, held_out, scale, log)[0]:.4f}"]
    with capsys.disabled():
        print(f"\nown data, {len(held_out)} held-out stays: forecast last visit {f_model:.4f} "  # noqa: T201
              f"(LOCF {f_locf:.4f}); interpolation {i_model:.4f} (linear {i_linear:.4f})\n"
              + "\n".join(raw + log))
    assert f_model < f_locf, f"forecast {f_model:.4f} does not beat LOCF {f_locf:.4f}"
    assert i_model < i_linear, f"interpolation {i_model:.4f} does not beat linear {i_linear:.4f}"
