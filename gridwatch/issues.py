"""Structured, countable data-quality issues.

Every repair or refusal in GridWatch becomes an issue with a stable dotted
``code`` (``readings.duplicate_row``, ``readings.negative_kwh``,
``meters.no_readings`` ...), the table it concerns, the meter (or asset) if
any, a ``count`` of rows or cells affected, and the ``action`` taken. Issues
are collected in an :class:`IssueLog` and written to ``data_quality.csv``.

Actions are a small closed vocabulary so that row accounting can be checked:
``dropped`` rows left the analysis (they count against rows in), the others
kept the row (``set_missing`` replaced a value by NaN, ``resolved`` picked a
value by a documented rule, ``masked`` hid cells from detection, ``kept``
is informational).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridwatch import columns as col

ACTIONS = ("dropped", "set_missing", "resolved", "masked", "kept", "excluded")
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Issue:
    """One data-quality finding.

    Parameters
    ----------
    code : str
        Stable dotted name, ``<table or stage>.<what>``.
    table : str
        ``meters``, ``readings``, ``upstream``, ``weather`` or a stage name.
    count : int
        Rows (or cells, for masks) affected.
    action : str
        One of :data:`ACTIONS`.
    meter_id : str, default ""
        Meter or asset concerned; empty for table-wide findings.
    detail : str, default ""
        Short human explanation.
    severity : str, default "warning"
        One of :data:`SEVERITIES`.
    """

    code: str
    table: str
    count: int
    action: str
    meter_id: str = ""
    detail: str = ""
    severity: str = "warning"

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {ACTIONS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; use one of {SEVERITIES}")


class IssueLog:
    """An append-only collection of issues, cheap to fill for many meters at once.

    Examples
    --------
    >>> log = IssueLog()
    >>> log.add("readings.negative_kwh", "readings", 3, "set_missing", meter_id="M1")
    >>> log.add_per_meter("readings.gap", "readings",
    ...                   pd.Series({"M1": 4, "M2": 0}), "kept", detail="missing hours")
    >>> log.total("readings.gap")
    4
    """

    def __init__(self):
        self._frames: list[pd.DataFrame] = []

    def add(self, code, table, count, action, *, meter_id="", detail="", severity="warning"):
        """Record one issue; zero counts are ignored."""
        issue = Issue(code, table, int(count), action, str(meter_id), detail, severity)
        if issue.count:
            self._frames.append(pd.DataFrame([issue.__dict__]))

    def add_per_meter(self, code, table, counts, action, *, detail="", severity="warning"):
        """Record one issue per meter from a Series of counts indexed by meter id.

        Meters with a zero or missing count are skipped. This is the vectorised
        way to report findings for thousands of meters.
        """
        counts = pd.Series(counts).fillna(0).astype("int64")
        counts = counts[counts > 0]
        if counts.empty:
            return
        Issue(code, table, 1, action, "", detail, severity)  # validate once
        frame = pd.DataFrame(
            {
                "code": code,
                "table": table,
                "count": counts.to_numpy(),
                "action": action,
                "meter_id": counts.index.astype(str),
                "detail": detail,
                "severity": severity,
            }
        )
        self._frames.append(frame)

    def extend(self, other: IssueLog) -> IssueLog:
        """Append every issue of ``other``; returns self."""
        self._frames.extend(other._frames)
        return self

    def to_frame(self) -> pd.DataFrame:
        """All issues as a frame with the ``data_quality.csv`` columns.

        A table-wide finding (no ``meter_id``) recorded more than once with
        the same code, action, detail and severity is one row, its counts
        added: a table read in partitions counts, say, its register first
        reads in each part, and the run reports the table's total.
        """
        if not self._frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in col.DATA_QUALITY_COLUMNS})
        frame = pd.concat(self._frames, ignore_index=True)
        frame["count"] = frame["count"].astype("int64")
        frame = _table_wide_summed(frame)
        # Most severe first, then by code and meter: the order an analyst reads.
        rank = frame["severity"].map({"error": 0, "warning": 1, "info": 2})
        order = np.lexsort((frame["meter_id"].astype(str).to_numpy(),
                            frame["code"].astype(str).to_numpy(), rank.to_numpy()))
        return frame.iloc[order].reset_index(drop=True)[list(col.DATA_QUALITY_COLUMNS)]

    def total(self, code: str | None = None, *, action: str | None = None,
              table: str | None = None) -> int:
        """Sum of ``count`` over issues matching ``code``/``action``/``table``."""
        frame = self.to_frame()
        if code is not None:
            frame = frame[frame["code"] == code]
        if action is not None:
            frame = frame[frame["action"] == action]
        if table is not None:
            frame = frame[frame["table"] == table]
        return int(frame["count"].sum())

    def codes(self) -> set[str]:
        """The distinct codes recorded so far."""
        return set(self.to_frame()["code"])

    def __len__(self) -> int:
        return sum(len(f) for f in self._frames)


def _table_wide_summed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with repeated table-wide rows (no ``meter_id``) summed into the first of them."""
    whole = (frame["meter_id"] == "").to_numpy()
    if whole.sum() < 2:
        return frame
    keys = ["code", "table", "action", "detail", "severity"]
    rows = frame[whole]
    if not rows.duplicated(keys).any():
        return frame
    summed = rows.groupby(keys, sort=False, as_index=False, dropna=False)["count"].sum()
    return pd.concat([frame[~whole], summed.assign(meter_id="")[list(frame.columns)]],
                     ignore_index=True)
