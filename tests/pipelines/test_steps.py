"""Step cores without a tracking server: split, ingest, save/load, train, evaluate, register."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from latent_ode import Normaliser, Series
from latent_ode.errors import ConfigError, DataError
from pipelines.config import load_config, parse_config
from pipelines.steps import decide_promotion, evaluate, ingest, load_split, register, save_split, train
from pipelines.steps.evaluate import metric_name
from pipelines.steps.ingest import split_by_series
from pipelines.steps.train import training_device, world_size
from tests.pipelines.test_config import tiny_config


def _series(n: int) -> list[Series]:
    return [Series(times=np.arange(3.0), values=np.full((3, 1), float(i)), id=f"s{i}")
            for i in range(n)]


def test_split_is_by_series_disjoint_and_seeded() -> None:
    series = _series(50)
    tr, va, te = split_by_series(series, train=0.8, val=0.1, test=0.1, seed=1)
    assert (len(tr), len(va), len(te)) == (40, 5, 5)
    ids = [s.id for s in tr + va + te]
    assert sorted(ids) == sorted(s.id for s in series)
    again = split_by_series(series, train=0.8, val=0.1, test=0.1, seed=1)
    assert [s.id for s in again[2]] == [s.id for s in te]
    other = split_by_series(series, train=0.8, val=0.1, test=0.1, seed=2)
    assert [s.id for s in other[2]] != [s.id for s in te]


def test_split_needs_a_series_in_every_part() -> None:
    with pytest.raises(DataError, match=r"the data have 2 series, too few for a train/val/test"):
        split_by_series(_series(2), train=0.8, val=0.1, test=0.1, seed=0)


@pytest.fixture(scope="module")
def tiny_cfg():
    return parse_config(tiny_config())


@pytest.fixture(scope="module")
def tiny_data(tiny_cfg):
    return ingest(tiny_cfg)


def test_ingest_fits_the_normaliser_on_train_only(tiny_data) -> None:
    assert (len(tiny_data.train), len(tiny_data.val), len(tiny_data.test)) == (24, 8, 8)
    assert tiny_data.channels == ["x"]
    assert tiny_data.normaliser == Normaliser.fit(tiny_data.train, kind="standard")
    assert tiny_data.normaliser != Normaliser.fit(tiny_data.train + tiny_data.test)
    assert tiny_data.source.kind == "generated"


def test_split_folder_round_trips(tiny_data, tmp_path: Path) -> None:
    back = load_split(save_split(tiny_data, tmp_path / "data"))
    assert back.channels == tiny_data.channels and back.time_unit == tiny_data.time_unit
    assert back.normaliser == tiny_data.normaliser
    assert back.source == tiny_data.source
    for name in ("train", "val", "test"):
        a, b = tiny_data.split(name), back.split(name)
        assert [s.id for s in a] == [s.id for s in b]
        for sa, sb in zip(a, b, strict=True):
            np.testing.assert_array_equal(sa.times, sb.times)
            np.testing.assert_array_equal(sa.values, sb.values)


def test_load_split_names_a_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is not an ingested data folder \(no split\.json\)"):
        load_split(tmp_path)


def test_unknown_channel_and_generator_option_are_named() -> None:
    with pytest.raises(ConfigError, match=r"`data\.channels` names \['y'\]"):
        ingest(parse_config(tiny_config(data={"channels": ["y"]})))
    with pytest.raises(ConfigError, match=r"bad `data\.options` for periodic \{'n_pts': 3\}"):
        ingest(parse_config(tiny_config(data={"options": {"n_pts": 3}})))


def _forecast_baseline(series: list[Series], scale: float) -> tuple[int, float, float]:
    """(count, MSE on the model's scale, MAE in user units) of last-observation-carried-forward
    over the second half of each series' span, from the raw values: an answer known without
    the library (one channel, fully observed)."""
    errs = []
    for s in series:
        cut = s.times[0] + 0.5 * (s.times[-1] - s.times[0])
        before = s.times < cut
        errs.append(s.values[~before, 0] - s.values[before, 0][-1])
    err = np.concatenate(errs)
    return err.size, float(np.mean((err / scale) ** 2)), float(np.mean(np.abs(err)))


def test_train_and_evaluate_cores(tiny_cfg, tiny_data, tmp_path: Path) -> None:
    events = []
    result = train(tiny_cfg, tiny_data, callbacks=[events.append], checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").is_file()
    assert {e.kind for e in events} == {"step", "epoch"}
    lib = result.result
    assert lib.steps == 12  # 4 epochs x ceil(24 / 8)
    assert sum(e.kind == "epoch" for e in events) == 4
    # The metrics are those of the kept (best) weights: the best validation of the history.
    val = [h[tiny_cfg.train.val_metric] for h in lib.history]
    assert len(val) == 4
    assert result.metrics[tiny_cfg.train.val_metric] == pytest.approx(min(val))
    assert result.forecaster.metadata["metrics"] == result.metrics

    ev = evaluate(tiny_cfg, result.forecaster, tiny_data)
    # The training data's standard deviation, from the raw values.
    train_values = np.concatenate([s.values[:, 0] for s in tiny_data.train])
    scale = float(np.std(train_values))
    assert scale == pytest.approx(float(tiny_data.normaliser.scale[0]))
    # The test split's rolling-origin backtest: the library's metrics under test/backtest/.
    assert set(ev.backtests) == {"test"}
    backtest = {k.removeprefix("test/"): v for k, v in ev.metrics.items()
                if k.startswith("test/backtest/")}
    assert backtest == pytest.approx(ev.backtests["test"].metrics())
    assert backtest["backtest/windows"] == len(tiny_data.test) * tiny_cfg.evaluate.backtest_cuts
    for split in ("val", "test"):
        m = {k.removeprefix(f"{split}/"): v for k, v in ev.metrics.items()
             if k.startswith(f"{split}/") and not k.startswith(f"{split}/backtest/")}
        assert m == pytest.approx(ev.results[split].metrics)  # the library's, renamed
        # The split's own series are scored, every held-out point once: the forecast regime's
        # baseline (LOCF) and its count are known from the raw data, independently of the model.
        count, base_mse, base_mae_units = _forecast_baseline(tiny_data.split(split), scale)
        assert m["forecast/count"] == count
        assert sum(m[f"forecast/horizon_count/h{k}"] for k in range(1, 6)) == count
        assert m["forecast/baseline_mse"] == pytest.approx(base_mse, rel=1e-6)
        assert m["forecast/baseline_mae_units"] == pytest.approx(base_mae_units, rel=1e-6)
        # The per-channel names carry the channel: one channel, so they equal the pooled ones.
        assert m["forecast/baseline_mse/x"] == pytest.approx(base_mse, rel=1e-6)
        for regime in ("interp", "forecast"):
            # MAE in user units is the normalised MAE times the training scale.
            assert m[f"{regime}/mae_units"] == pytest.approx(m[f"{regime}/mae"] * scale)
            assert m[f"{regime}/skill"] == pytest.approx(
                1 - m[f"{regime}/mse"] / m[f"{regime}/baseline_mse"])
            for stat in ("nll", "coverage_90", "mse", "skill/x"):
                assert math.isfinite(m[f"{regime}/{stat}"]), (split, regime, stat)
    # The training objective's check keeps its own names; evaluate does not produce them.
    assert not any(k.startswith(("val_", "test_")) for k in ev.metrics)
    names = [name for name, _ in ev.figures]
    test_ids = [s.id for s in tiny_data.test[:2]]
    assert names == (["test_channel_skill.png", "test_horizon_error.png",
                      "test_horizon_coverage.png", "test_backtest_error.png"]
                     + [f"series_{i:02d}_{sid}.png" for i, sid in enumerate(test_ids)]
                     + [f"interp_series_{i:02d}_{sid}.png" for i, sid in enumerate(test_ids)])
    for name, fig in ev.figures:
        fig.savefig(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000


def test_metric_names_are_safe_for_mlflow() -> None:
    assert metric_name("test", "interp/mse/HR") == "test/interp/mse/HR"
    assert metric_name("val", "forecast/mae_units/SpO2 (%)") == "val/forecast/mae_units/SpO2 ___"


def test_training_device_takes_the_flag_else_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pipelines.config import get_settings

    get_settings.cache_clear()
    monkeypatch.setenv("LATENT_ODE_DEVICE", "cpu")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's; never moves a CPU process
    try:
        assert training_device(None) == "cpu"
        assert training_device("auto") == ("cuda:1" if torch.cuda.is_available() else "cpu")
        with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda or cuda:N; got 'tpu'"):
            training_device("tpu")
        if not torch.cuda.is_available():
            with pytest.raises(ConfigError, match=r"device 'cuda' asked for, but CUDA is not available"):
                training_device("cuda")
    finally:
        get_settings.cache_clear()


def test_world_size_comes_from_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE must be an integer; got 'four'"):
        world_size()


# ------------------------------------------------------------------------------- register
SKILLED = {"val/interp/skill": 0.2, "val/forecast/skill": 0.1}


@pytest.mark.parametrize(
    ("new", "version", "champ", "force", "promote", "reason"),
    [
        (1.0, None, None, False, True, r"no current `champion`; the new version takes it"),
        (1.0, "3", 2.0, False, True, r"val_loss 1 < 2 of current `champion` version 3"),
        (2.0, "3", 1.0, False, False, r"val_loss 2 is not better than 1 of current `champion` "
                                      r"version 3 \(lower is better\); use --force"),
        (1.0, "3", 1.0, False, False, r"is not better than"),
        (2.0, "3", 1.0, True, True, r"forced \(--force\)"),
        (float("nan"), None, None, False, False, r"val_loss = nan is not finite"),
    ],
)
def test_decide_promotion(new, version, champ, force, promote, reason) -> None:
    d = decide_promotion(metric="val_loss", new_metrics={"val_loss": new} | SKILLED,
                         champion_version=version,
                         champion_metrics=None if champ is None else {"val_loss": champ},
                         force=force)
    assert d.promote is promote
    assert re.search(reason, d.reason), d.reason


@pytest.mark.parametrize(
    ("skills", "reason"),
    [
        ({"val/interp/skill": -0.01, "val/forecast/skill": 0.3},
         r"^val/interp/skill = -0\.01 < 0: on the validation split the model is worse than linear "
         r"interpolation; `champion` stays unchanged; use --force to promote anyway$"),
        ({"val/interp/skill": 0.3, "val/forecast/skill": -2.0},
         r"^val/forecast/skill = -2 < 0: on the validation split the model is worse than LOCF;"),
        ({"val/interp/skill": 0.3, "val/forecast/skill": float("nan")},
         r"^val/forecast/skill = nan < 0"),
        ({"val/interp/skill": 0.3},
         r"^val/forecast/skill is missing, so nothing shows the model beats doing nothing "
         r"\(evaluate the validation split: `latent-ode evaluate`, then `register "
         r"--evaluate-run`\); `champion` stays unchanged; use --force"),
    ],
)
def test_a_version_worse_than_a_baseline_never_takes_the_alias(skills, reason) -> None:
    # Even with no champion at all, and with a far better comparison metric.
    for version, champ in ((None, None), ("3", {"val_loss": 9.0})):
        d = decide_promotion(metric="val_loss", new_metrics={"val_loss": 1.0} | skills,
                             champion_version=version, champion_metrics=champ, force=False)
        assert d.promote is False
        assert re.search(reason, d.reason), d.reason
    forced = decide_promotion(metric="val_loss", new_metrics={"val_loss": 1.0} | skills,
                              champion_version="3", champion_metrics={"val_loss": 0.5}, force=True)
    assert forced.promote is True
    assert forced.reason == ("forced (--force): takes `champion` regardless of val_loss and of "
                             "the validation skill")
    # A zero skill ties with the baseline: allowed.
    tie = decide_promotion(metric="val_loss", new_metrics={"val_loss": 1.0, "val/interp/skill": 0.0,
                                                           "val/forecast/skill": 0.0},
                           champion_version=None, champion_metrics=None, force=False)
    assert tie.promote is True


def test_the_gate_can_be_turned_off_by_the_config() -> None:
    d = decide_promotion(metric="val_loss", new_metrics={"val_loss": 1.0, "val/interp/skill": -1.0},
                         champion_version=None, champion_metrics=None, force=False,
                         require_skill=False)
    assert d.promote is True


@pytest.mark.parametrize(
    ("champ", "new", "promote", "reason"),
    [
        # The champion predates the configured name: compared on the first metric both carry.
        ({"val_loss": 2.0, "val_extrap_mse": 0.1}, {"val_loss": 1.0}, True,
         r"^val_loss 1 < 2 of current `champion` version 3 \(lower is better; compared on "
         r"val_loss, since version 3 has no val/forecast/mse\)$"),
        ({"val_loss": 0.5, "val/interp/mse": 0.9}, {"val_loss": 1.0, "val/interp/mse": 0.4}, True,
         r"^val/interp/mse 0\.4 < 0\.9 .*compared on val/interp/mse"),
        ({"val_loss": 0.5}, {"val_loss": 1.0}, False,
         r"^val_loss 1 is not better than 0\.5 .*compared on val_loss, since version 3 has no "
         r"val/forecast/mse\); use --force"),
        # Nothing in common (only an old name, or nothing at all): a rename never promotes.
        ({"val_extrap_mse": 9.0}, {"val_loss": 1.0}, False,
         r"^current `champion` version 3 has no finite val/forecast/mse nor any of "
         r"\['val/forecast/mse', 'val/interp/mse', 'val_loss'\] to compare on; `champion` stays "
         r"unchanged; use --force to promote anyway$"),
        ({}, {"val_loss": 1.0}, False, r"has no finite val/forecast/mse nor any of"),
        (None, {"val_loss": 1.0}, False, r"has no finite val/forecast/mse nor any of"),
    ],
)
def test_a_champion_without_the_metric_is_compared_on_one_both_carry(champ, new, promote,
                                                                     reason) -> None:
    d = decide_promotion(metric="val/forecast/mse",
                         new_metrics={"val/forecast/mse": 0.01} | new | SKILLED,
                         champion_version="3", champion_metrics=champ, force=False)
    assert d.promote is promote
    assert re.search(reason, d.reason), d.reason


@dataclass
class _Champ:
    version: str
    metric: float | None
    metrics: dict[str, float]


@dataclass
class FakeRegistry:
    """An in-memory registry; ``fail_alias`` makes moving the alias fail."""

    name: str = "m"
    alias: str = "champion"
    versions: dict[str, dict[str, float]] = field(default_factory=dict)
    holder: str | None = None
    fail_alias: bool = False
    tags: dict[tuple[str, str], str] = field(default_factory=dict)

    def champion(self, metric: str):
        if self.holder is None:
            return None
        metrics = self.versions[self.holder]
        return _Champ(self.holder, metrics.get(metric), metrics)

    def exists(self) -> bool:
        return bool(self.versions)

    def log_and_register(self, forecaster_dir: Path, metrics: dict[str, float]) -> str:
        version = str(len(self.versions) + 1)
        self.versions[version] = dict(metrics)
        return version

    def set_alias(self, version: str) -> None:
        if self.fail_alias:
            raise RuntimeError("registry down")
        self.holder = version

    def tag_version(self, version: str, key: str, value: str) -> None:
        self.tags[(version, key)] = value

    def delete_version(self, version: str, *, drop_model: bool = False) -> None:
        del self.versions[version]


def test_register_promotes_only_a_better_version(tiny_cfg, tmp_path: Path) -> None:
    reg = FakeRegistry()
    first = register(tiny_cfg, tmp_path, {"val_loss": 5.0}, reg)
    assert (first.version, first.promoted, reg.holder) == ("1", True, "1")
    worse = register(tiny_cfg, tmp_path, {"val_loss": 6.0}, reg)
    assert (worse.version, worse.promoted, reg.holder) == ("2", False, "1")
    forced = register(tiny_cfg, tmp_path, {"val_loss": 7.0}, reg, force=True)
    assert (forced.promoted, reg.holder) == (True, "3")
    better = register(tiny_cfg, tmp_path, {"val_loss": 1.0}, reg)
    assert (better.promoted, reg.holder) == (True, "4")
    assert reg.tags[("4", "val_loss")] == "1.0"


def test_register_failure_leaves_no_version(tiny_cfg, tmp_path: Path) -> None:
    reg = FakeRegistry(fail_alias=True)
    with pytest.raises(RuntimeError, match="registry down"):
        register(tiny_cfg, tmp_path, {"val_loss": 5.0}, reg)
    assert reg.versions == {} and reg.holder is None


def test_register_needs_the_configured_metric(tiny_cfg, tmp_path: Path) -> None:
    reg = FakeRegistry()
    with pytest.raises(ConfigError, match=r"`register\.metric` is 'val_loss', which this run did "
                                          r"not produce; choose one of \['test_mse'\]"):
        register(tiny_cfg, tmp_path, {"test_mse": 1.0}, reg)
    assert reg.versions == {}


def test_register_gates_on_validation_skill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(tiny_config(register={"require_skill": True}))
    reg = FakeRegistry()
    caplog.set_level("INFO", logger="pipelines")
    losing = register(cfg, tmp_path, {"val_loss": 5.0, "val/interp/skill": -0.3,
                                      "val/forecast/skill": 0.4}, reg)
    # Registered (the version exists) but the alias is not given to a model worse than a baseline.
    assert (losing.version, losing.promoted, reg.holder) == ("1", False, None)
    assert losing.reason.startswith("val/interp/skill = -0.3 < 0: on the validation split the "
                                    "model is worse than linear interpolation")
    assert any("m version 1 registered, NOT promoted to `champion`: val/interp/skill = -0.3 < 0"
               in r.getMessage() for r in caplog.records)
    good = register(cfg, tmp_path, {"val_loss": 6.0} | SKILLED, reg)
    assert (good.promoted, reg.holder) == (True, "2")
    # A lower val_loss does not make up for losing to LOCF.
    better_loss = register(cfg, tmp_path, {"val_loss": 1.0, "val/interp/skill": 0.5,
                                           "val/forecast/skill": -0.1}, reg)
    assert (better_loss.promoted, reg.holder) == (False, "2")
    forced = register(cfg, tmp_path, {"val_loss": 9.0, "val/interp/skill": -1.0}, reg, force=True)
    assert (forced.promoted, reg.holder) == (True, "4")


def test_only_the_tiny_smoke_config_turns_the_skill_gate_off() -> None:
    from tests.pipelines.test_config import CONFIGS

    gates = {p.stem: load_config(p).registry.require_skill for p in CONFIGS.glob("*.toml")}
    assert gates.pop("periodic-tiny") is False
    assert gates and all(gates.values()), gates


def test_plot_forecasts_names_a_wrong_mode(tiny_data) -> None:
    from pipelines.plots import plot_forecasts

    with pytest.raises(ValueError, match=r"`mode` must be 'forecast' or 'interp'; got 'backcast'\."):
        plot_forecasts(None, tiny_data.test[:1], mode="backcast")
