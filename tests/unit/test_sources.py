"""The synthetic and replay sources: determinism by offset, event time, drift, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.sources.drift import (
    ConceptDrift,
    FeatureDrift,
    concept_drift,
    feature_drift,
    parse_seconds,
    ramp,
    to_offset,
)
from fusionkit.sources.replay import Replay
from fusionkit.sources.synthetic import BLOCK, Synthetic

T0 = 1_700_000_000.0
DRIFTS = (
    FeatureDrift("price", at=3000, shift=1.0, duration=2000),
    FeatureDrift("device", at=5000, probs={"mobile": 0.9}),
    ConceptDrift(at=7000, duration=1500),
)


def read_all(source, chunks):
    """Concatenate reads of the given sizes (stopping at exhaustion)."""
    parts = []
    for n in chunks:
        batch = source.read(n)
        if batch is None:
            break
        parts.append(batch)
    return pd.concat(parts, ignore_index=True)


def chunk_sizes(total):
    return st.lists(st.integers(0, 3 * BLOCK), min_size=1, max_size=12).map(
        lambda sizes: sizes + [total]
    )


# -- Synthetic ---------------------------------------------------------------------------


def test_synthetic_schema_and_realism():
    source = Synthetic(seed=3, start_time=T0)
    source.open()
    batch = source.read(50_000)
    assert source.label == "clicked"
    assert batch.dtypes["device"] == "str" and batch.dtypes["country"] == "str"
    for column in ("user_id", "hour", "position", "age", "clicked", "_offset"):
        assert batch.dtypes[column] == np.int64, column
    assert batch.dtypes["_event_time"] == np.float64
    assert set(batch["device"]) == {"mobile", "desktop", "tablet"}
    assert batch["country"].nunique() == 8
    assert set(batch["position"]) == {1, 2, 3, 4, 5}
    assert batch["hour"].between(0, 23).all() and batch["age"].between(18, 90).all()
    assert (batch["price"] > 0).all() and (batch["dwell"] > 0).all()
    assert batch["user_id"].nunique() > 10_000  # many keys, a few of them hot
    assert batch["user_id"].value_counts().iloc[0] > 50 * batch["user_id"].value_counts().median()
    assert 0.10 <= batch["clicked"].mean() <= 0.30
    assert batch["_offset"].tolist() == list(range(50_000))
    assert np.all(batch["hour"] == (batch["_event_time"] // 3600 % 24))


@settings(max_examples=25, deadline=None)
@given(chunks=chunk_sizes(12_000), seek_to=st.integers(0, 11_000), n=st.integers(1, 5000))
def test_synthetic_rows_depend_on_offset_only(chunks, seek_to, n):
    make = lambda: Synthetic(seed=7, drift=DRIFTS, disorder=0.3, start_time=T0)  # noqa: E731
    reference = make().read(12_000)
    chunked = read_all(make(), chunks)
    pd.testing.assert_frame_equal(chunked.iloc[:12_000], reference)
    source = make()
    source.read(n)
    source.seek(seek_to)
    again = source.read(n)
    expected = reference.iloc[seek_to : seek_to + n].reset_index(drop=True)
    pd.testing.assert_frame_equal(again.iloc[: len(expected)], expected)


def test_synthetic_seed_start_time_and_pickle():
    a = Synthetic(seed=1, start_time=T0)
    copy = pickle.loads(pickle.dumps(a))
    pd.testing.assert_frame_equal(a.read(5000), copy.read(5000))
    assert not Synthetic(seed=2, start_time=T0).read(100).equals(Synthetic(seed=1).read(100))
    wall = Synthetic(seed=1)
    assert pickle.loads(pickle.dumps(wall)).start_time == wall.start_time
    assert len(pickle.dumps(a)) < 2000  # no generated rows travel with the object


def test_synthetic_event_time_in_order_without_disorder():
    batch = Synthetic(rate=2000, start_time=T0).read(10_000)
    assert np.allclose(batch["_event_time"], T0 + np.arange(10_000) / 2000)
    assert np.all(np.diff(batch["_event_time"]) > 0)
    nominal = Synthetic(rate=None, start_time=T0).read(3)
    assert np.allclose(nominal["_event_time"], T0 + np.arange(3) / 10_000)


def test_synthetic_disorder_is_bounded():
    batch = Synthetic(rate=1000, disorder=0.5, start_time=T0).read(20_000)
    lateness = T0 + batch["_offset"] / 1000 - batch["_event_time"]
    assert lateness.between(0, 0.5).all()
    assert (np.diff(batch["_event_time"]) < 0).mean() > 0.3  # really out of order
    assert lateness.max() > 0.45


def test_synthetic_max_events_and_empty_reads():
    source = Synthetic(max_events=10_000, start_time=T0)
    assert len(read_all(source, [3000] * 10)) == 10_000
    assert source.read(100) is None
    source.seek(9_990)
    assert len(source.read(100)) == 10
    empty = Synthetic(start_time=T0).read(0)
    assert len(empty) == 0 and "clicked" in empty.columns and "_offset" in empty.columns
    assert Synthetic(max_events=0).read(5) is None


def test_feature_drift_shifts_numeric_mean_at_offset():
    drift = [FeatureDrift("age", at=20_000, shift=1.0), FeatureDrift("price", at="2s", scale=2.0)]
    source = Synthetic(rate=10_000, seed=5, drift=drift, start_time=T0)
    batch = source.read(40_000)
    before, after = batch.iloc[:20_000], batch.iloc[20_000:]
    assert 9 < after["age"].mean() - before["age"].mean() < 13  # one std is 12 years
    log_price = np.log(batch["price"])
    assert log_price.iloc[20_000:].std() / log_price.iloc[:20_000].std() == pytest.approx(
        2, rel=0.05
    )
    baseline = Synthetic(rate=10_000, seed=5, start_time=T0).read(20_000)
    pd.testing.assert_frame_equal(before, baseline)  # the past is not touched
    assert [p.offset for p in source.drift_points()] == [20_000, 20_000]
    assert {p.kind for p in source.drift_points()} == {"feature"}


def test_feature_drift_categorical_sudden_and_gradual():
    drift = [FeatureDrift("device", at=10_000, probs={"tablet": 0.7}, duration=10_000)]
    batch = Synthetic(seed=2, drift=drift, start_time=T0).read(40_000)
    share = batch["device"].eq("tablet").groupby(batch["_offset"] // 10_000).mean()
    assert share[0] == pytest.approx(0.1, abs=0.02)
    assert share[1] == pytest.approx(0.4, abs=0.03)  # half way through the ramp
    assert share[2] == pytest.approx(0.7, abs=0.02) and share[3] == pytest.approx(0.7, abs=0.02)
    rest = batch.iloc[30_000:]["device"].value_counts(normalize=True)
    assert rest["mobile"] / rest["desktop"] == pytest.approx(2, rel=0.15)  # old proportions


def _accuracy(model, frame):
    x = frame.drop(columns=["clicked", "user_id", "_event_time", "_offset"]).to_dict("records")
    return np.mean(
        [model.predict_one(xi) == yi for xi, yi in zip(x, frame["clicked"], strict=True)]
    )


def _river_model():
    from river import compose, linear_model, preprocessing

    numeric = compose.Select("price", "dwell", "age", "position", "hour")
    categorical = compose.Select("device", "country")
    features = (numeric | preprocessing.StandardScaler()) + (
        categorical | preprocessing.OneHotEncoder()
    )
    return features | linear_model.LogisticRegression()


def test_label_has_signal_for_a_river_model():
    from river import metrics

    batch = Synthetic(seed=11, start_time=T0).read(20_000)
    model, accuracy, auc = _river_model(), metrics.Accuracy(), metrics.ROCAUC()
    x = batch.drop(columns=["clicked", "user_id", "_event_time", "_offset"]).to_dict("records")
    for xi, yi in zip(x, batch["clicked"].tolist(), strict=True):
        proba = model.predict_proba_one(xi).get(1, 0.0)
        accuracy.update(yi, proba > 0.5)
        auc.update(yi, proba)
        model.learn_one(xi, yi)
    majority = max(batch["clicked"].mean(), 1 - batch["clicked"].mean())
    assert accuracy.get() > majority + 0.03
    assert auc.get() > 0.7


def test_concept_drift_makes_the_old_model_worse():
    source = Synthetic(seed=4, drift=[concept_drift(at=8000)], start_time=T0)
    batch = source.read(11_000)
    model = _river_model()
    train = batch.iloc[:6000]
    x = train.drop(columns=["clicked", "user_id", "_event_time", "_offset"]).to_dict("records")
    for xi, yi in zip(x, train["clicked"].tolist(), strict=True):
        model.learn_one(xi, yi)
    before, after = _accuracy(model, batch.iloc[6000:8000]), _accuracy(model, batch.iloc[8000:])
    assert before - after >= 0.10
    assert batch["clicked"].iloc[8000:].mean() == pytest.approx(
        batch["clicked"].iloc[:8000].mean(), abs=0.04
    )
    assert source.drift_points()[0][:2] == (8000, "concept")


def test_drift_times_resolve_with_the_event_rate():
    source = Synthetic(
        rate=500, drift=[ConceptDrift("3s", duration=2.0), feature_drift("age", at=7, shift=1)]
    )
    assert [p.offset for p in source.drift_points()] == [7, 1500]
    assert "over 1000 events" in source.drift_points()[1].description
    assert to_offset("1m", 10) == 600 and to_offset(2.5, 100.0) == 250 and to_offset(42, 1) == 42
    assert parse_seconds("500ms") == 0.5 and parse_seconds("2h") == 7200


@given(start=st.integers(0, 100), duration=st.integers(0, 100))
def test_ramp_goes_from_zero_to_one(start, duration):
    w = ramp(np.arange(300), start, duration)
    assert w[:start].max(initial=0) == 0 and w[start + max(duration, 1) - 1 :].min() == 1
    assert np.all(np.diff(w) >= 0) and w.min() >= 0 and w.max() <= 1


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"drift": [FeatureDrift("colour", at=10, shift=1)]}, ValueError, "unknown drift feature"),
        ({"drift": [FeatureDrift("price", at=10, probs={"a": 1})]}, ValueError, "numeric"),
        ({"drift": [FeatureDrift("device", at=10, shift=1)]}, ValueError, "categorical"),
        ({"drift": [FeatureDrift("device", at=10, probs={"watch": 1})]}, ValueError, "watch"),
        ({"drift": ["price"]}, TypeError, "FeatureDrift"),
        ({"rate": -5}, ValueError, "rate"),
        ({"rate": 0}, ValueError, "rate"),
        ({"seed": -1}, ValueError, "seed"),
        ({"disorder": -0.1}, ValueError, "disorder"),
        ({"max_events": -1}, ValueError, "max_events"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Synthetic(**kwargs)


@pytest.mark.parametrize("at", ["soon", "10 parsecs", -1, float("nan"), True, None])
def test_drift_rejects_bad_times(at):
    with pytest.raises((ValueError, TypeError)):
        ConceptDrift(at=at)


def test_synthetic_rejects_bad_reads():
    source = Synthetic()
    with pytest.raises(ValueError, match="n >= 0"):
        source.read(-1)
    with pytest.raises(ValueError, match="offset"):
        source.seek(-3)


# -- Replay ------------------------------------------------------------------------------


def make_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.random(1000),
            "kind": rng.choice(["a", "b"], 1000),
            "ts": pd.date_range("2024-01-01", periods=1000, freq="250ms"),
            "y": rng.integers(0, 2, 1000),
        }
    )


@pytest.fixture
def frame():
    return make_frame()


def test_replay_dataframe_offsets_and_default_event_time(frame):
    source = Replay(frame, rate=100, label="y", start_time=T0)
    batch = read_all(source, [300] * 5)
    assert source.read(10) is None
    assert batch["_offset"].tolist() == list(range(1000))
    assert np.allclose(batch["_event_time"], T0 + np.arange(1000) / 100)
    pd.testing.assert_frame_equal(batch[frame.columns.tolist()], frame)
    assert "_event_time" not in frame.columns  # the caller's frame is left alone
    assert source.label == "y" and source.describe()["rows"] == 1000
    nominal = Replay(frame, start_time=T0).read(2)
    assert np.allclose(nominal["_event_time"], [T0, T0 + 1e-4])


FRAME = make_frame()


@settings(max_examples=25, deadline=None)
@given(
    chunks=chunk_sizes(1000),
    seek_to=st.integers(0, 2500),
    n=st.integers(0, 1500),
    loop=st.booleans(),
)
def test_replay_rows_depend_on_offset_only(chunks, seek_to, n, loop):
    frame = FRAME
    reference = Replay(frame, time_column="ts", loop=loop).read(max(3000, seek_to + n))
    chunked = read_all(Replay(frame, time_column="ts", loop=loop), chunks)
    pd.testing.assert_frame_equal(chunked.iloc[: len(reference)], reference.iloc[: len(chunked)])
    source = Replay(frame, time_column="ts", loop=loop)
    source.seek(seek_to)
    again = source.read(n)
    expected = reference.iloc[seek_to : seek_to + n].reset_index(drop=True)
    if again is None:
        assert not loop and seek_to >= 1000
    else:
        pd.testing.assert_frame_equal(again, expected)


def test_replay_loop_keeps_offsets_and_time_increasing(frame):
    batch = Replay(frame, time_column="ts", loop=True).read(2500)
    assert batch["_offset"].tolist() == list(range(2500))
    assert np.all(np.diff(batch["_event_time"]) > 0)
    assert batch["x"].iloc[1000] == frame["x"].iloc[0]
    assert Replay(frame.iloc[:0], loop=True).read(5) is None


def test_replay_time_column_kinds(frame):
    expected = (frame["ts"] - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    got = Replay(frame, time_column="ts").read(1000)["_event_time"]
    assert np.allclose(got, expected) and got.iloc[0] == 1_704_067_200.0
    zoned = frame.assign(ts=frame["ts"].dt.tz_localize("Europe/Paris"))
    assert Replay(zoned, time_column="ts").read(1)["_event_time"].iloc[0] == 1_704_067_200.0 - 3600
    numeric = frame.assign(t=np.arange(1000) * 2.0)
    assert Replay(numeric, time_column="t").read(3)["_event_time"].tolist() == [0.0, 2.0, 4.0]
    texts = frame.assign(ts=frame["ts"].astype(str))
    assert Replay(texts, time_column="ts").read(1)["_event_time"].iloc[0] == 1_704_067_200.0
    with pytest.raises(ValueError, match="neither datetimes nor numbers"):
        Replay(frame, time_column="kind").open()
    with pytest.raises(ValueError, match="missing"):
        Replay(numeric.assign(t=np.nan), time_column="t").open()


def test_replay_replaces_reserved_columns(frame):
    recorded = Replay(frame, time_column="ts").read(1000).assign(_ingest_ts=1.0, _offset=7)
    replayed = Replay(recorded, time_column="_event_time").read(1000)
    assert "_ingest_ts" not in replayed.columns
    assert replayed["_offset"].tolist() == list(range(1000))
    assert np.allclose(replayed["_event_time"], recorded["_event_time"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".csv.gz"])
def test_replay_files(frame, tmp_path, suffix):
    path = tmp_path / f"events{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    source = Replay(path, time_column="ts", label="y")
    assert len(pickle.dumps(source)) < 1000
    source.open()
    assert len(pickle.dumps(source)) < 1000  # the rows are reloaded where it runs
    batch = read_all(source, [400] * 3)
    assert len(batch) == 1000 and source.read(1) is None
    assert np.allclose(batch["x"], frame["x"]) and batch["y"].tolist() == frame["y"].tolist()
    assert batch["_event_time"].iloc[0] == 1_704_067_200.0
    assert np.allclose(np.diff(batch["_event_time"]), 0.25)
    same = pickle.loads(pickle.dumps(source))
    same.seek(990)
    pd.testing.assert_frame_equal(same.read(10), batch.iloc[990:].reset_index(drop=True))


def test_replay_river_dataset():
    from river import datasets

    source = Replay(datasets.Phishing(), label="is_phishing", start_time=T0)
    batch = read_all(source, [500] * 4)
    assert len(batch) == 1250 and source.read(1) is None
    assert "is_phishing" in batch.columns and batch["is_phishing"].isin([True, False]).all()
    assert batch.shape[1] == 9 + 1 + 2  # features, label, reserved
    x, y = next(iter(datasets.Phishing()))
    assert batch.iloc[0][list(x)].to_dict() == x and batch["is_phishing"].iloc[0] == y
    pairs = Replay(({"a": i}, i % 2) for i in range(3))  # a generator is read at once
    assert pairs.label == "y" and pairs.read(5)["y"].tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p, f: Replay(p / "nope.csv"), FileNotFoundError, "no such file"),
        (lambda p, f: Replay(p), FileNotFoundError, "no such file"),
        (lambda p, f: Replay(f, rate=-1), ValueError, "rate"),
        (lambda p, f: Replay(f, time_column="when"), ValueError, "time_column 'when'"),
        (lambda p, f: Replay(f, label="target"), ValueError, "label 'target'"),
        (lambda p, f: Replay(42), TypeError, "DataFrame"),
        (lambda p, f: Replay([1, 2]).open(), ValueError, "pairs"),
        (lambda p, f: Replay(iter([({"y": 1}, 0)])), ValueError, "already have a column"),
    ],
)
def test_replay_rejects_bad_arguments(tmp_path, frame, make, error, message):
    with pytest.raises(error, match=message):
        make(tmp_path, frame)


def test_replay_rejects_unknown_suffix_and_missing_columns_in_files(tmp_path, frame):
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(ValueError, match=".csv and .parquet"):
        Replay(tmp_path / "data.json")
    frame.to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(ValueError, match="time_column 'when'"):
        Replay(str(tmp_path / "data.csv"), time_column="when").open()
