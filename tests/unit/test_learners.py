"""The learner protocol and its adapters: River, scikit-learn partial_fit, plain and own classes."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree
from sklearn.linear_model import SGDClassifier, SGDRegressor

from fusionkit.batch import EVENT_TIME, INGEST_TS, OFFSET
from fusionkit.errors import SchemaError
from fusionkit.training.learners import adapt
from fusionkit.training.prequential import Prequential
from fusionkit.training.protocol import Learner, Prediction, load_state
from fusionkit.training.river_learner import SMALL_REQUEST


def river_pipeline():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


@pytest.fixture(scope="module")
def phishing() -> pd.DataFrame:
    """Phishing as a batch stream: features, a bool ``label`` and the reserved columns."""
    rows = list(datasets.Phishing())
    df = pd.DataFrame([x for x, _ in rows])
    df["label"] = [y for _, y in rows]
    df[EVENT_TIME] = np.arange(len(df), dtype="float64")
    df[INGEST_TS] = 1e9 + np.arange(len(df), dtype="float64")
    df[OFFSET] = np.arange(len(df))
    return df


def batches(df: pd.DataFrame, size: int):
    for start in range(0, len(df), size):
        yield df.iloc[start:start + size]


def run(learner: Learner, df: pd.DataFrame, size: int, label: str = "label",
        task: str = "classification") -> tuple[Prequential, list[Prediction]]:
    pq, out = Prequential(task), []
    for batch in batches(df, size):
        prediction = learner.predict_learn(batch, batch[label])
        pq.update(batch[label], prediction)
        out.append(prediction)
    return pq, out


def linear_stream(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    df["target"] = 2.0 * df["a"] - 3.0 * df["b"] + 1.0 + rng.normal(scale=0.1, size=n)
    return df


# River -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 50, 500])
def test_river_accuracy_matches_progressive_val_score(phishing, size):
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), river_pipeline(), metrics.Accuracy()).get()
    assert expected == pytest.approx(0.8928, abs=0.001)
    pq, _ = run(adapt(river_pipeline()), phishing, size)
    assert pq.values()["n"] == len(phishing)
    assert pq.values()["accuracy"] == pytest.approx(expected, abs=0.01)


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 199), max_size=8))
def test_river_predictions_do_not_depend_on_batch_cuts(phishing, cuts):
    df = phishing.iloc[:200]
    model, expected = river_pipeline(), []
    for x, y in zip(df[feature_names(df)].to_dict("records"), df["label"], strict=True):
        expected.append(model.predict_one(x))
        model.learn_one(x, y)
    learner, got = adapt(river_pipeline()), []
    bounds = [0, *sorted(set(cuts)), len(df)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        got += learner.predict_learn(df.iloc[lo:hi], df["label"].iloc[lo:hi]).y_pred.tolist()
    assert got == expected


def feature_names(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "label" and not c.startswith("_")]


def test_river_classifier_gives_binary_proba_and_excludes_label_and_reserved(phishing):
    learner = adapt(river_pipeline())
    assert learner.task == "classification"
    first = phishing.iloc[:100]
    prediction = learner.predict_learn(first, first["label"])
    assert prediction.proba is not None and prediction.proba.shape == (100,)
    assert ((prediction.proba >= 0) & (prediction.proba <= 1)).all()
    assert (prediction.y_pred == (prediction.proba > 0.5)).all()
    weights = learner.model["LogisticRegression"].weights
    assert set(weights) == set(feature_names(phishing))
    # a later batch still carrying the label column: the label stays out of the features
    learner.predict(phishing.iloc[100:110])
    assert set(learner.model["LogisticRegression"].weights) == set(feature_names(phishing))


def test_river_int_labels_and_explicit_features(phishing):
    df = phishing.assign(label=phishing["label"].astype(int))
    learner = adapt(river_pipeline(), features=["https", "long_url"])
    pq, predictions = run(learner, df, 250)
    assert set(learner.model["LogisticRegression"].weights) == {"https", "long_url"}
    assert all(p.proba is not None for p in predictions)
    assert 0.5 < pq.values()["accuracy"] < 1.0
    with pytest.raises(SchemaError, match="long_url"):
        learner.predict(df.drop(columns=["long_url"]))


def test_river_multiclass_has_no_proba():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.normal(size=300)})
    df["y"] = np.digitize(df["x"], [-0.5, 0.5]).astype(str)
    learner = adapt(tree.HoeffdingTreeClassifier())
    prediction = learner.predict_learn(df, df["y"])
    assert prediction.proba is None
    # a tree with no data cannot predict: None, as in River
    assert prediction.y_pred[0] is None


def test_river_regressor_learns():
    df = linear_stream()
    learner = adapt(preprocessing.StandardScaler() | linear_model.LinearRegression())
    assert learner.task == "regression"
    errors = []
    for batch in batches(df, 500):
        prediction = learner.predict_learn(batch, batch["target"])
        assert prediction.proba is None
        errors.append(np.abs(prediction.y_pred - batch["target"].to_numpy()).mean())
    assert errors[-1] < errors[0] / 2
    assert errors[-1] < 0.15


def test_river_trump_approval_regression():
    rows = list(datasets.TrumpApproval())
    df = pd.DataFrame([x for x, _ in rows]).assign(approval=[y for _, y in rows])
    expected = evaluate.progressive_val_score(
        datasets.TrumpApproval(), preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics.MAE()).get()
    learner = adapt(preprocessing.StandardScaler() | linear_model.LinearRegression())
    pq, _ = run(learner, df, 100, label="approval", task="regression")
    assert pq.values()["mae"] == pytest.approx(expected, rel=1e-9)


def test_river_mini_batch_uses_learn_many(phishing):
    learner = adapt(linear_model.LogisticRegression(), mini_batch=True)
    X = phishing.iloc[:200]
    before = learner.predict(X)
    assert (before.proba == 0.5).all()
    learner.learn(X, X["label"])
    reference = linear_model.LogisticRegression()
    reference.learn_many(X[feature_names(X)], X["label"])
    after = learner.predict(phishing.iloc[200:400])
    expected = reference.predict_proba_many(phishing.iloc[200:400][feature_names(X)])[True]
    np.testing.assert_allclose(after.proba, expected.to_numpy())
    pq, _ = run(adapt(river_pipeline(), mini_batch=True), phishing, 50)
    assert pq.values()["accuracy"] > 0.8


@pytest.mark.parametrize("n", [1, 40, SMALL_REQUEST + 1])
def test_river_mini_batch_serves_records_as_its_batches_predict(phishing, n):
    """A serve request to a mini-batch River model: row by row up to SMALL_REQUEST rows,
    through a DataFrame above; the same answers as predicting the batch either way."""
    learner = adapt(river_pipeline(), mini_batch=True)
    learner.learn(phishing.iloc[:500], phishing["label"].iloc[:500])
    X = phishing.iloc[500 : 500 + n]
    rows = X[feature_names(X)].to_dict("records")
    served, batch = learner.predict_records(rows), learner.predict(X)
    assert served.y_pred.tolist() == batch.y_pred.tolist()
    np.testing.assert_allclose(served.proba, batch.proba, rtol=1e-12)


def test_river_mini_batch_regressor():
    df = linear_stream()
    learner = adapt(linear_model.LinearRegression(), mini_batch=True)
    pq, predictions = run(learner, df, 100, label="target", task="regression")
    assert pq.values()["mae_recent"] < pq.values()["mae"]
    first, last = predictions[0].y_pred, predictions[-1].y_pred
    assert np.abs(last - df["target"].iloc[-100:]).mean() < np.abs(first - df["target"].iloc[:100]).mean() / 1.5


def test_river_mini_batch_needs_learn_many():
    with pytest.raises(TypeError, match="learn_many"):
        adapt(linear_model.PAClassifier(), mini_batch=True)


def test_river_transformer_and_wrong_task_are_refused():
    with pytest.raises(TypeError, match="neither classifies nor regresses"):
        adapt(preprocessing.StandardScaler())
    with pytest.raises(ValueError, match="classification model"):
        adapt(river_pipeline(), task="regression")
    with pytest.raises(ValueError, match="task must be"):
        adapt(river_pipeline(), task="ranking")


# scikit-learn ------------------------------------------------------------------------------

def test_sgd_classifier(phishing):
    learner = adapt(SGDClassifier(loss="log_loss", random_state=0))
    assert learner.task == "classification"
    before = learner.predict(phishing.iloc[:3])
    assert before.y_pred.tolist() == [None, None, None]  # classes unknown yet
    pq, predictions = run(learner, phishing, 100)
    assert predictions[0].y_pred.tolist() == [False] * 100  # constant before the first fit
    assert (predictions[0].proba == 0.5).all()
    assert predictions[1].proba is not None
    assert pq.values()["accuracy"] > 0.8
    assert learner.model.n_features_in_ == len(feature_names(phishing))


def test_sgd_classifier_classes(phishing):
    df = phishing.assign(label=phishing["label"].map({True: "phish", False: "ok"}))
    first = df.iloc[:1]
    with pytest.raises(SchemaError, match="classes=") as info:
        adapt(SGDClassifier()).predict_learn(first, first["label"])
    assert "phish" in str(info.value) or "ok" in str(info.value)
    learner = adapt(SGDClassifier(loss="log_loss"), classes=["ok", "phish"], pos_label="phish")
    assert learner.predict(first).y_pred.tolist() == ["ok"]
    pq, predictions = run(learner, df, 1)
    assert pq.values()["n"] == len(df) and pq.values()["accuracy"] > 0.75
    assert predictions[-1].proba is not None
    with pytest.raises(SchemaError, match="spam"):
        odd = df.iloc[:5].assign(label="spam")
        learner.learn(odd, odd["label"])


def test_sgd_classifier_reports_the_classes_it_is_bound_to(phishing):
    given = adapt(SGDClassifier(loss="log_loss"), classes=[False, True])
    assert given.fixed_classes == [False, True]  # a train stage dead-letters other labels
    inferred = adapt(SGDClassifier(loss="log_loss"))
    assert inferred.fixed_classes is None  # nothing to check against before the first batch
    inferred.predict_learn(phishing.iloc[:50], phishing["label"].iloc[:50])
    assert inferred.fixed_classes == [False, True]
    ints = adapt(SGDClassifier(loss="log_loss"))
    batch = phishing.iloc[:50].assign(label=phishing["label"].iloc[:50].astype(int))
    ints.predict_learn(batch, batch["label"])
    assert ints.fixed_classes == [0, 1]
    assert getattr(adapt(river_pipeline()), "fixed_classes", None) is None  # River: any label


def test_sgd_regressor_with_categories():
    df = linear_stream()
    df["colour"] = np.random.default_rng(2).choice(["red", "green"], size=len(df))
    df["target"] += np.where(df["colour"] == "red", 4.0, 0.0)
    learner = adapt(SGDRegressor(random_state=0), label="target")
    assert learner.task == "regression"
    assert learner.predict(df.iloc[:4]).y_pred.tolist() == [0.0] * 4
    errors = []
    for batch in batches(df, 250):
        prediction = learner.predict_learn(batch, batch["target"])
        errors.append(np.abs(prediction.y_pred - batch["target"].to_numpy()).mean())
    assert errors[-1] < errors[0] / 5 and errors[-1] < 0.5
    assert learner.model.n_features_in_ == 4  # a, b, and one column per colour
    unseen = df.iloc[:3].assign(colour="blue")  # an unseen category encodes as zeros
    assert np.isfinite(learner.predict(unseen).y_pred).all()


# own classes -------------------------------------------------------------------------------

class MeanRegressor:
    """Speaks the protocol without subclassing Learner."""

    task = "regression"

    def __init__(self):
        self.total, self.n = 0.0, 0

    def predict(self, X):
        return np.full(len(X), self.total / self.n if self.n else 0.0)

    def learn(self, X, y):
        self.total += float(y.sum())
        self.n += len(y)

    def get_state(self):
        return f"{self.total}:{self.n}".encode()

    def set_state(self, state):
        total, n = state.decode().split(":")
        self.total, self.n = float(total), int(n)


class Majority:
    """A plain learn_one/predict_one classifier (not River)."""

    def __init__(self):
        self.counts = {}

    def learn_one(self, x, y):
        self.counts[y] = self.counts.get(y, 0) + 1

    def predict_one(self, x):
        return max(self.counts, key=self.counts.get) if self.counts else None


def test_protocol_object_is_used_as_is():
    class Own(Learner):
        pass

    own = Own()
    assert adapt(own) is own
    learner = adapt(MeanRegressor())
    assert learner.task == "regression"
    X = pd.DataFrame({"a": [1.0, 2.0]})
    assert learner.predict_learn(X, pd.Series([2.0, 4.0])).y_pred.tolist() == [0.0, 0.0]
    assert learner.predict(X).y_pred.tolist() == [3.0, 3.0]
    assert learner.get_state() == b"6.0:2"
    fresh = adapt(MeanRegressor())
    fresh.set_state(learner.get_state())
    assert fresh.predict(X).y_pred.tolist() == [3.0, 3.0]


def test_plain_learn_one_class(phishing):
    with pytest.raises(ValueError, match="task="):
        adapt(Majority())
    learner = adapt(Majority(), task="classification")
    pq, predictions = run(learner, phishing, 100)
    assert predictions[0].y_pred[0] is None and predictions[0].proba is None
    assert pq.values()["n"] == len(phishing) - 1
    share = phishing["label"].mean()
    assert pq.values()["accuracy"] == pytest.approx(max(share, 1 - share), abs=0.02)


def test_other_objects_are_refused():
    with pytest.raises(TypeError) as info:
        adapt(42)
    message = str(info.value)
    assert message.startswith("fusionkit cannot train int:")
    for accepted in ("River", "partial_fit", "learn_one", "get_state"):
        assert accepted in message


# state -------------------------------------------------------------------------------------

STATEFUL = {
    "river": lambda: adapt(river_pipeline()),
    "sklearn": lambda: adapt(SGDClassifier(loss="log_loss", random_state=0)),
    "plain": lambda: adapt(Majority(), task="classification"),
}


@pytest.mark.parametrize("kind", list(STATEFUL))
def test_state_round_trip(phishing, kind):
    make = STATEFUL[kind]
    learner = make()
    for batch in batches(phishing.iloc[:600], 200):
        learner.predict_learn(batch, batch["label"])
    state = learner.get_state()
    assert learner.get_state() == state
    fresh = make()
    fresh.set_state(state)
    assert fresh.get_state() == state
    assert hashlib.sha256(fresh.get_state()).hexdigest() == hashlib.sha256(state).hexdigest()
    loaded = load_state(state)
    assert loaded.get_state() == state
    rest = phishing.iloc[600:]
    mine = learner.predict(rest)
    for other in (fresh, loaded):
        theirs = other.predict(rest)
        assert theirs.y_pred.tolist() == mine.y_pred.tolist()
        if mine.proba is not None:
            np.testing.assert_array_equal(theirs.proba, mine.proba)
    a = learner.predict_learn(rest, rest["label"])
    b = fresh.predict_learn(rest, rest["label"])
    assert a.y_pred.tolist() == b.y_pred.tolist()
    if kind == "sklearn":  # equal arrays; pickle may lay out their shared dtypes differently
        np.testing.assert_array_equal(learner.model.coef_, fresh.model.coef_)
    else:  # a restored learner that goes on learning checksums like one never restored
        assert learner.get_state() == fresh.get_state()


def test_state_of_another_kind_is_refused():
    river_state = adapt(river_pipeline()).get_state()
    with pytest.raises(TypeError, match="holds a"):
        adapt(SGDClassifier()).set_state(river_state)
    with pytest.raises(TypeError, match="not a fusionkit Learner"):
        load_state(pickle.dumps({"a": 1}))


def _counter_class() -> type:
    """A learner class as a notebook defines it: in ``__main__``, so it travels by value and
    each process that unpickles it builds its own class object (two calls: two processes)."""

    def learn(self, X, y):
        self.n += len(X)

    def predict(self, X):
        return Prediction(np.zeros(len(X), dtype="int64"))

    return type("Counter", (Learner,), {"__module__": "__main__", "task": "classification",
                                        "n": 0, "learn": learn, "predict": predict})


def test_a_notebook_learner_restores_a_state_from_another_process():
    """A restarted actor builds its learner from the spec (one class object) and restores the
    checkpoint's state (another object of the same class): the same class by name."""
    old, new = _counter_class()(), _counter_class()()
    assert type(old) is not type(new)
    old.learn(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), pd.Series([0, 1, 0]))
    new.set_state(old.get_state())
    assert new.n == 3
    other = type("Other", (Learner,), {"__module__": "__main__", "task": "classification"})()
    with pytest.raises(TypeError, match="holds a __main__.Counter, not a __main__.Other"):
        other.set_state(old.get_state())
