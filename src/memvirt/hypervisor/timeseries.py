"""The hypervisor's time series, kept in columns of numbers.

A row per VM per control step is written to ``timeseries.parquet``. Kept as a
list of Python dicts, a row costs well over a kilobyte, and a long run — hours
of simulated time with a control step every fraction of a second — would grow
by hundreds of megabytes and slow the garbage collector as it went. Here each
row is a line of two ``int64``/``float64`` arrays (strings, such as the VM's
name and the state, are stored as codes), grown by doubling: about 8 bytes a
value. :meth:`TimeSeries.frame` gives the same pandas DataFrame (column
order, dtypes) that a list of dicts would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class TimeSeries:
    """Rows of named columns: ``floats`` as float64, ``labels`` as strings, the rest int64."""

    def __init__(
        self, columns: Sequence[str], floats: Sequence[str], labels: Sequence[str]
    ) -> None:
        self.columns = tuple(columns)
        self._float = [c for c in self.columns if c in floats]
        self._label = [c for c in self.columns if c in labels]
        self._int = [c for c in self.columns if c not in floats and c not in labels]
        self._f = np.zeros((64, len(self._float)), dtype=np.float64)
        self._i = np.zeros((64, len(self._int) + len(self._label)), dtype=np.int64)
        self._codes: list[dict[str, int]] = [{} for _ in self._label]
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def append(self, row: dict[str, Any]) -> None:
        """Add a row (every column given)."""
        if self.n == self._f.shape[0]:
            self._f = np.concatenate([self._f, np.zeros_like(self._f)])
            self._i = np.concatenate([self._i, np.zeros_like(self._i)])
        k = self.n
        # a row in two assignments, not one per column (a row is written at every control
        # step, for every VM)
        self._f[k] = [row[c] for c in self._float]
        self._i[k] = [row[c] for c in self._int] + [
            codes.setdefault(row[c], len(codes))
            for codes, c in zip(self._codes, self._label, strict=True)
        ]
        self.n += 1

    def frame(self) -> Any:
        """The rows as a pandas DataFrame, columns in order."""
        import pandas as pd

        n = self.n
        data: dict[str, Any] = {}
        for j, c in enumerate(self._float):
            data[c] = self._f[:n, j].copy()
        for j, c in enumerate(self._int):
            data[c] = self._i[:n, j].copy()
        base = len(self._int)
        for j, c in enumerate(self._label):
            names = np.array(list(self._codes[j]), dtype=object)
            data[c] = names[self._i[:n, base + j]] if n else np.array([], dtype=object)
        return pd.DataFrame({c: data[c] for c in self.columns}, columns=list(self.columns))
