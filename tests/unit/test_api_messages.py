"""Mistakes a newcomer makes with the Python API are refused in a sentence that says what to do."""

from __future__ import annotations

import pandas as pd
import pytest

import fusionkit as fk


def test_a_dataframe_as_source_names_replay():
    df = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    with pytest.raises(TypeError, match=r"fk\.sources\.replay\(df"):
        fk.stream("mine", source=df)
    with pytest.raises(TypeError, match=r"fk\.sources\.replay\('events\.csv'"):
        fk.stream("mine", source="events.csv")
