"""Schema inference from a first sample: a column's kind is what its values are, not its dtype.

A DataFrame with one bad value in a numeric column has dtype ``object`` for that column; the
schema a stream stage infers from its first rows must still call the column a number, so
that the one bad value is the dead letter and the good rows flow on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusionkit.sources import replay
from fusionkit.streaming.validate import Schema


def _frame_with_one_bad_value() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x1": rng.normal(size=100), "y": rng.integers(0, 2, 100)})
    df = df.astype({"x1": object, "y": object})
    df.loc[10, "x1"] = "not a number"
    df.loc[11, "y"] = None
    return df


def test_object_columns_get_the_kind_of_their_values():
    df = _frame_with_one_bad_value()
    assert Schema.infer(df.head(10)).columns == {"x1": "number", "y": "integer"}
    # a sample holding the bad values too: most values are numbers, so the kind is a number
    assert Schema.infer(df.head(20)).columns == {"x1": "number", "y": "integer"}
    frame = pd.DataFrame({"s": pd.Series(["a", None], dtype=object),
                          "b": pd.Series([True, False], dtype=object),
                          "m": pd.Series(["a", 1], dtype=object)})
    assert Schema.infer(frame).columns == {"s": "string", "b": "bool", "m": "string"}
    ints = pd.DataFrame({"i": pd.Series([1, 2, 3, "x"], dtype=object)})
    assert Schema.infer(ints).columns == {"i": "integer"}


def test_one_bad_value_in_a_replayed_frame_is_the_only_dead_letter():
    src = replay(_frame_with_one_bad_value(), label="y", start_time=0.0)
    src.open()
    batch = src.read(100)
    schema = Schema.infer(batch)  # the sample a stage checks may hold the bad rows
    good, bad, why = schema.split(batch)
    assert len(bad) == 2 and len(good) == 98, list(why)[:3]
    assert sorted(why) == ["missing value in 'y'", "wrong type in 'x1': 'not a number'"]
    assert good["x1"].dtype == np.float64
