"""Event validation: split a batch into the events a stage can take and dead letters.

A schema maps each expected column to a kind: ``"number"``, ``"integer"``, ``"bool"``,
``"string"`` or ``"time"``. Checks are vectorized per column; a batch whose columns already
have the right dtypes and no missing values costs one ``isna`` per column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import pandas as pd

from fusionkit.batch import RESERVED

KINDS = ("number", "integer", "bool", "string", "time")


def _kind_of(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "time"
    if pd.api.types.is_object_dtype(series):  # one bad value makes a number column object
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        if inferred in ("mixed", "mixed-integer"):  # numbers and a few bad values: numbers
            values = series.dropna()
            is_num = values.map(lambda v: isinstance(v, Real) and not isinstance(v, bool))
            if len(values) and is_num.mean() > 0.5:
                ints = values[is_num].map(lambda v: isinstance(v, Integral)).all()
                return "integer" if ints else "number"
        return _OBJECT_KINDS.get(inferred, "string")
    return "string"


# what the values of an object column are, by pandas' inference (missing values skipped)
_OBJECT_KINDS = {"floating": "number", "mixed-integer-float": "number", "decimal": "number",
                 "integer": "integer", "boolean": "bool", "datetime": "time",
                 "datetime64": "time"}


@dataclass(frozen=True)
class Schema:
    """The columns a stage expects and their kinds.

    Examples
    --------
    >>> s = Schema({"price": "number", "device": "string"})
    >>> df = pd.DataFrame({"price": [1.0, "x", None], "device": ["a", "b", "c"]})
    >>> good, bad, why = s.split(df)
    >>> len(good), list(why)
    (1, ["wrong type in 'price': 'x'", "missing value in 'price'"])
    """

    columns: dict[str, str]
    nullable: frozenset[str] = field(default_factory=frozenset)
    extra: str = "allow"  # or "reject": a non-null value in an unknown column is malformed
    # dtypes of the expected columns -> the value checks a batch with them needs (or False)
    _plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        for col, kind in self.columns.items():
            if kind not in KINDS:
                raise ValueError(f"column {col!r}: unknown kind {kind!r}; use one of {KINDS}")
        if self.extra not in ("allow", "reject"):
            raise ValueError("extra must be 'allow' or 'reject'")

    @classmethod
    def infer(cls, batch: pd.DataFrame, **kwargs) -> Schema:
        """The schema of a batch of well-formed events (reserved columns left out)."""
        cols = {c: _kind_of(batch[c]) for c in batch.columns if c not in RESERVED}
        return cls(cols, **kwargs)

    def split(self, batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
        """Return (good events, bad events, reason per bad event).

        No event can make this raise (a stage that failed on one would fail on it again at
        every replay): if checking the batch raises, its halves are checked apart, down to
        the single events that raise alone, which are bad with the exception as reason."""
        try:
            return self._split(batch)
        except Exception:
            return self._split_apart(batch)

    def _split_apart(self, batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
        if len(batch) <= 1:
            try:
                return self._split(batch)
            except Exception as exc:
                why = f"cannot check the event: {type(exc).__name__}: {exc}"[:300]
                return batch.iloc[0:0], batch, pd.Series([why] * len(batch), index=batch.index,
                                                         dtype="object")
        mid = len(batch) // 2
        halves = [self.split(batch.iloc[:mid]), self.split(batch.iloc[mid:])]
        good, bad = (pd.concat([h[i] for h in halves if len(h[i])] or [batch.iloc[0:0]])
                     for i in (0, 1))
        reasons = pd.concat([h[2] for h in halves if len(h[2])]
                            or [pd.Series([], dtype="object")])
        try:
            good = self._typed(good)
        except Exception:  # the halves hold values that cannot share the kind's dtype
            pass
        return good, bad, reasons

    def _typed(self, good: pd.DataFrame) -> pd.DataFrame:
        """Good events with the dtypes of their kinds."""
        if not len(good):
            return good
        return good.astype({c: _dtype(k) for c, k in self.columns.items()
                            if c in good.columns and _dtype(k) is not None
                            and (good[c].dtype == object or _kind_of(good[c]) != k)})

    def _split(self, batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
        if self._conforms(batch):  # the usual batch: typed columns, nothing missing
            return batch, batch.iloc[0:0], pd.Series([], dtype="object")
        reasons = pd.Series(pd.NA, index=batch.index, dtype="object")
        for col, kind in self.columns.items():
            if col not in batch.columns:
                reasons[reasons.isna()] = f"missing column {col!r}"
                break
            reasons = _check_column(batch[col], col, kind, col in self.nullable, reasons)
        if self.extra == "reject":
            for col in batch.columns:
                if col in self.columns or col in RESERVED:
                    continue
                hit = batch[col].notna() & reasons.isna()
                reasons[hit] = f"unexpected column {col!r}"
        bad = reasons.notna()
        if not bad.any():
            return batch, batch.iloc[0:0], reasons.iloc[0:0]
        return self._typed(batch[~bad]), batch[bad], reasons[bad]

    def _conforms(self, batch: pd.DataFrame) -> bool:
        """Whether every column has its kind's dtype and holds no missing or infinite value:
        checked on whole arrays, so a well-formed batch costs microseconds. False means
        "look closer" (``split`` then checks value by value), not "bad".

        What a set of dtypes needs checked is worked out once per set: a stream's batches
        share their dtypes, so a batch costs one look at its dtypes plus a vectorized check of
        the columns that can hold a missing or infinite value (floats, strings, times)."""
        if self.extra == "reject":
            return False
        dtypes = batch.dtypes
        try:
            key = tuple(dtypes[col] for col in self.columns)
            plan = self._plans.get(key)
        except (KeyError, TypeError):  # a missing column, or duplicate column labels
            return False
        if plan is None:
            plan = self._plan(key)
            if len(self._plans) < 64:
                self._plans[key] = plan
        if plan is False:
            return False
        for col, check in plan:
            s = batch[col]
            if check == "nonull":
                if s.array.isna().any():
                    return False
                continue
            arr = s.to_numpy()
            if (check == "finite" and not np.isfinite(arr).all()
                    or check == "noinf" and np.isinf(arr).any()
                    or check == "nonat" and np.isnat(arr).any()):
                return False
        return True

    def _plan(self, dtypes: tuple) -> list[tuple[str, str]] | bool:
        """The value checks batches with these dtypes need, or False if a dtype is wrong."""
        plan = []
        for (col, kind), dtype in zip(self.columns.items(), dtypes, strict=True):
            nullable = col in self.nullable
            if not isinstance(dtype, np.dtype):
                if not (kind == "string" and isinstance(dtype, pd.StringDtype)):
                    return False
                if not nullable:
                    plan.append((col, "nonull"))
                continue
            code = dtype.kind
            if kind in ("number", "integer") and code in "iu" or kind == "bool" and code == "b":
                continue
            if kind == "number" and code == "f":
                plan.append((col, "noinf" if nullable else "finite"))
            elif kind == "time" and code == "M":
                if not nullable:
                    plan.append((col, "nonat"))
            else:
                return False
        return plan


def _dtype(kind: str):
    return {"number": "float64", "integer": "int64", "bool": "bool"}.get(kind)


def _numbers(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The values as floats (NaN where a value is not a number), and where a value is a
    number too large for a float (an integer of hundreds of digits: pandas raises on it)."""
    try:
        return pd.to_numeric(s, errors="coerce"), pd.Series(False, index=s.index)
    except (OverflowError, TypeError, ValueError):
        pass
    values, huge = [], []
    for v in s:
        try:
            values.append(float(pd.to_numeric(v, errors="coerce")))
            huge.append(False)
        except OverflowError:
            values.append(np.nan)
            huge.append(True)
        except (TypeError, ValueError):
            values.append(np.nan)
            huge.append(False)
    return pd.Series(values, index=s.index, dtype="float64"), pd.Series(huge, index=s.index)


def _check_column(s: pd.Series, col: str, kind: str, nullable: bool,
                  reasons: pd.Series) -> pd.Series:
    open_ = reasons.isna()
    missing = s.isna()
    if kind in ("number", "integer"):
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            values = s.astype("float64")
        else:
            values, huge = _numbers(s)
            wrong = values.isna() & ~missing & ~huge
            hit = huge & open_
            if hit.any():
                reasons[hit] = f"number out of range in {col!r}"
                open_ = reasons.isna()
            if pd.api.types.is_object_dtype(s):
                wrong |= s.map(lambda v: isinstance(v, bool)) & ~missing
            hit = wrong & open_
            if hit.any():
                reasons[hit] = [f"wrong type in {col!r}: {v!r}"[:200] for v in s[hit]]
                open_ = reasons.isna()
        arr = values.to_numpy(dtype="float64", na_value=np.nan)
        inf = pd.Series(np.isinf(arr), index=s.index) & open_
        if inf.any():
            reasons[inf] = f"non-finite value in {col!r}"
            open_ = reasons.isna()
        if kind == "integer":
            whole = np.isfinite(arr)
            frac = pd.Series(whole & (np.mod(arr, 1, where=whole, out=np.zeros_like(arr)) != 0),
                             index=s.index) & open_
            if frac.any():
                reasons[frac] = f"wrong type in {col!r}: not an integer"
                open_ = reasons.isna()
            if not pd.api.types.is_integer_dtype(s):  # int64 is what the stage makes of it
                out = pd.Series(whole & ((arr >= 2.0**63) | (arr < -(2.0**63))),
                                index=s.index) & open_
                if out.any():
                    reasons[out] = f"integer out of range in {col!r}"
                    open_ = reasons.isna()
    elif kind == "bool" and not pd.api.types.is_bool_dtype(s):
        ok = s.isin([True, False, 0, 1]) | missing
        hit = ~ok & open_
        if hit.any():
            reasons[hit] = [f"wrong type in {col!r}: {v!r}"[:200] for v in s[hit]]
            open_ = reasons.isna()
    elif kind == "string" and pd.api.types.is_object_dtype(s):
        wrong = ~missing & ~s.map(lambda v: isinstance(v, str))
        hit = wrong & open_
        if hit.any():
            reasons[hit] = [f"wrong type in {col!r}: {v!r}"[:200] for v in s[hit]]
            open_ = reasons.isna()
    if not nullable:
        hit = missing & open_
        if hit.any():
            reasons[hit] = f"missing value in {col!r}"
    return reasons
