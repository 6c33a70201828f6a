"""Online scores of served predictions: per (model, version) accuracy and log loss equal a
pandas computation over the same served rows and labels, however the rows are cut."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.training.served_scores import ServedScores, scores_frame


def served(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    proba = rng.uniform(0, 1, n)
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)], "x": rng.normal(size=n),
        "_prediction": proba > 0.5, "_proba": np.where(rng.uniform(size=n) < 0.1, np.nan, proba),
        "_model": rng.choice(["ctr", "ctr-tree"], n), "_version": rng.integers(1, 4, n),
        "clicked": rng.integers(0, 2, n)})


def oracle(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and mean log loss per (model, version), by pandas."""
    d = df.assign(correct=df["_prediction"] == (df["clicked"] == 1))
    p = d["_proba"].clip(1e-15, 1 - 1e-15)
    d["loss"] = -np.log(np.where(d["clicked"] == 1, p, 1 - p))
    g = d.groupby(["_model", "_version"])
    out = pd.DataFrame({"n": g.size(), "accuracy": g["correct"].mean(),
                        "log_loss": g["loss"].mean()}).reset_index()
    return out.rename(columns={"_model": "model", "_version": "version"})


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 400), st.integers(0, 10_000), st.lists(st.integers(1, 50), max_size=8))
def test_scores_equal_pandas_for_any_batch_cuts(n, seed, cuts):
    df = served(n, seed)
    s = ServedScores("clicked")
    edges = np.unique(np.clip(np.cumsum([0, *cuts, n]), 0, n))
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        s.add(df.iloc[a:b])
        again = ServedScores("clicked")  # a checkpoint between batches changes nothing
        again.set_state(pickle.loads(pickle.dumps(s.get_state())))
        s = again
    got = s.frame()
    want = oracle(df)
    assert got[["model", "version", "n"]].values.tolist() == \
        want[["model", "version", "n"]].values.tolist()
    np.testing.assert_allclose(got["accuracy"], want["accuracy"])
    np.testing.assert_allclose(got["log_loss"], want["log_loss"])


def test_rows_that_are_not_scorable_are_left_out():
    df = pd.DataFrame({"_prediction": [1, None, 1, 0], "_version": [1, 1, None, 2],
                       "_model": "m", "y": [1, 1, 1, None]})
    s = ServedScores("y")
    s.add(df)
    assert s.frame()[["version", "n", "accuracy"]].values.tolist() == [[1, 1, 1.0]]
    assert np.isnan(s.frame()["log_loss"].iloc[0])  # no probabilities given
    s.add(pd.DataFrame({"x": [1.0], "y": [1]}))  # not served rows: nothing to score
    assert s.frame()["n"].tolist() == [1]
    assert not ServedScores.applies(["x", "y"]) and ServedScores.applies(["_prediction",
                                                                         "_version"])


def test_scores_kept_apart_add_up():
    df = served(300, 1)
    a, b = ServedScores("clicked"), ServedScores("clicked")
    a.add(df.iloc[:120])
    b.add(df.iloc[120:])
    whole = ServedScores("clicked")
    whole.add(df)
    pd.testing.assert_frame_equal(scores_frame(a.rows() + b.rows()), whole.frame())


@pytest.mark.parametrize("positive", [True, 1])
def test_the_positive_label_is_what_the_probability_is_of(positive):
    df = pd.DataFrame({"_prediction": [1, 0], "_proba": [0.8, 0.3], "_version": [1, 1],
                       "_model": "m", "y": [1, 0]})
    s = ServedScores("y", positive=positive)
    s.add(df)
    assert s.frame()["log_loss"].iloc[0] == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
