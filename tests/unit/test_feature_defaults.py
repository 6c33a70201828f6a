"""What a train stage learns from when it is not given ``features``, and the sentence that
replaces River's traceback when text reaches a model made for numbers."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
from river import compose, linear_model, preprocessing
from sklearn.linear_model import SGDClassifier

from fusionkit.batch import is_id_column, model_features
from fusionkit.demo import ctr_model
from fusionkit.sources.synthetic import Synthetic
from fusionkit.training.explain import needs_numbers
from fusionkit.training.learners import adapt


@pytest.fixture(scope="module")
def clicks() -> pd.DataFrame:
    src = Synthetic(seed=1, start_time=0.0)
    src.open()
    return src.read(300)


@pytest.mark.parametrize("name", ["id", "ID", "user_id", "USER_ID", "userId", "sessionID",
                                  "order-uuid", "device.guid"])
def test_names_of_ids(name):
    assert is_id_column(name)


@pytest.mark.parametrize("name", ["paid", "video", "width", "idle", "identity", "price",
                                  "ideal_score", "valid"])
def test_names_that_are_not_ids(name):
    assert not is_id_column(name)


def test_default_features_leave_out_ids_the_label_and_reserved_columns(clicks):
    assert model_features(clicks, "clicked") == ["device", "country", "hour", "position",
                                                 "price", "dwell", "age"]


@pytest.mark.parametrize("model", [
    lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    lambda: SGDClassifier(loss="log_loss"),
], ids=["river", "sklearn"])
def test_learners_learn_from_the_default_features(clicks, model):
    learner = adapt(model())
    learner.learn(clicks[["hour", "price", "user_id", "clicked"]], clicks["clicked"])
    assert learner._columns(clicks) == model_features(clicks, "clicked")


def explain(model, X: pd.DataFrame, y: pd.Series) -> str | None:
    """What the train stage's dry run does: try a copy, explain what it raised."""
    learner = adapt(model)
    try:
        copy.deepcopy(learner).predict_learn(X, y)
    except Exception as exc:
        return needs_numbers(learner, X, y, exc, "clicks")
    return "no error"


def test_text_for_a_model_made_for_numbers_is_one_plain_sentence(clicks):
    message = explain(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                      clicks, clicks["clicked"])
    assert message == (
        "the model StandardScaler | LogisticRegression needs numbers, but the column(s) "
        "'device', 'country' of stream 'clicks' hold text: give it numeric features with "
        "features=[...] (--features in %%fusion train), e.g. features=['hour', 'position', "
        "'price', 'dwell', 'age'], or add an encoder for the text to the model, such as "
        "river.preprocessing.OneHotEncoder (fusionkit.demo.ctr_model shows one)")


def test_models_that_take_text_and_other_errors_are_left_alone(clicks):
    assert explain(ctr_model(), clicks, clicks["clicked"]) == "no error"
    encoded = (compose.SelectType(str) | preprocessing.OneHotEncoder()) + \
        (compose.SelectType(int, float) | preprocessing.StandardScaler())
    assert explain(encoded | linear_model.LogisticRegression(), clicks,
                   clicks["clicked"]) == "no error"

    class Broken(linear_model.LogisticRegression):
        def learn_one(self, x, y, w=1.0):
            raise TypeError("not about text")

    # fails on the numbers too: its own error is the one to show
    assert explain(preprocessing.StandardScaler() | Broken(), clicks, clicks["clicked"]) is None
