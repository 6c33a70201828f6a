"""What an earlier fusionkit saved still loads after its classes moved to other modules.

``data/stage_table_before_rooms.pkl`` was written by fusionkit as of 8ace8e0 (before the
rooms of issue 18), with ``ray.cloudpickle`` as the controller pickles its stage table:

    import ray.cloudpickle as cp, pandas as pd, fusionkit as fk
    from river import linear_model, preprocessing
    from fusionkit.runtime.specs import StreamSpec, TrainSpec
    from fusionkit.streaming.operators import KeyedState, Chain
    from fusionkit.training.registry import Guard
    from fusionkit.monitor.drift_watch import DriftSpec
    from fusionkit.training.learners import adapt
    keyed = KeyedState(fn=lambda state, rows, key: rows, key="user", ttl="10m")
    stream = StreamSpec(name="clicks", source=fk.sources.synthetic(rate=1000, seed=0),
                        operators=[Chain([keyed])])
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    train = TrainSpec(name="ctr", on="clicks", model=model, label="clicked",
                      guard=Guard(min_events=10), drift=DriftSpec(window=1000))
    learner = adapt(model, label="y")
    learner.learn(pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}), pd.Series([0, 1, 0, 1]))
    cp.dumps({"stream": stream, "train": train, "learner_state": learner.get_state(),
              "chain_state": stream.operators[0].get_state()})

It names fusionkit.streaming.operators.Chain / KeyedState, fusionkit.training.registry.Guard,
fusionkit.monitor.drift_watch.DriftSpec, and fusionkit.training.learners' adapter.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest

from fusionkit import _moved, _signing
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.registry.guard import Guard
from fusionkit.streaming.chain import Chain
from fusionkit.streaming.keyed import KeyedState
from fusionkit.training.learners import adapt
from fusionkit.training.protocol import load_state

SAVED = (Path(__file__).parent / "data" / "stage_table_before_rooms.pkl").read_bytes()


def test_plain_pickle_cannot_read_it():
    """The gap this closes: the classes are not where the file says."""
    with pytest.raises(AttributeError, match="Chain"):
        pickle.loads(SAVED)


def test_a_stage_table_and_states_saved_before_the_rooms_load():
    saved = _moved.loads(SAVED)
    chain = saved["stream"].operators[0]
    assert isinstance(chain, Chain) and isinstance(chain.operators[0], KeyedState)
    assert chain.operators[0].key == "user" and chain.operators[0].ttl == "10m"
    chain.set_state(saved["chain_state"])
    train = saved["train"]
    assert isinstance(train.guard, Guard) and train.guard.min_events == 10
    assert isinstance(train.drift, DriftSpec) and train.drift.window == 1000
    # the published learner: by itself, and into a learner built from the same model
    X = pd.DataFrame({"a": [1.0, 2.5, 4.0]})
    learner = load_state(saved["learner_state"])
    again = adapt(train.model, label="y")
    again.set_state(saved["learner_state"])
    learned = learner.predict(X).proba
    assert learned.tolist() == again.predict(X).proba.tolist()
    fresh = adapt(train.model.clone(), label="y").predict(X).proba  # the same model, unlearned
    assert learned.tolist() != fresh.tolist(), "the state's learning came along"


def test_signed_files_are_read_through_it(tmp_path, monkeypatch):
    """stages.pkl, checkpoints and registry files are unsealed by _signing.loads."""
    monkeypatch.setenv("FUSIONKIT_HOME", str(tmp_path))
    monkeypatch.delenv(_signing.ENV, raising=False)
    saved = _signing.loads(_signing.seal(SAVED), "stages.pkl")
    assert isinstance(saved["stream"].operators[0], Chain)


def test_a_name_that_is_nowhere_is_still_an_error():
    with pytest.raises(AttributeError):
        _moved.where_now("fusionkit.streaming.operators", "NoSuchThing")
