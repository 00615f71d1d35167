import io

import numpy as np
import pandas as pd

from gridwatch import columns as col
from gridwatch.outputs import format_flags, format_transformers


def _table(ids, reasons):
    n = len(ids)
    return pd.DataFrame({
        col.METER_ID: ids, col.TRANSFORMER_ID: ["T1"] * n, col.SCORE: np.linspace(0.9, 0.1, n),
        col.FLAGGED: [True] + [False] * (n - 1), col.KIND: ["visible_load"] + [""] * (n - 1),
        col.ONSET: ["2026-03-01"] + [""] * (n - 1), col.EXCESS_KW: [2.0] + [0.0] * (n - 1),
        col.EXCESS_KWH: [100.0] + [0.0] * (n - 1), col.EST_LOSS: [20.0] + [0.0] * (n - 1),
        col.REASONS: reasons,
    })


def test_spreadsheet_formulas_in_ids_and_reasons_are_defused():
    ids = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "M1"]
    reasons = ['=HYPERLINK("http://x")', "ok", "ok", "ok", "ok"]
    flags = format_flags(_table(ids, reasons))
    text = io.StringIO()
    flags.to_csv(text, index=False)
    for line in text.getvalue().splitlines()[1:]:
        first = line.split(",")[0].strip('"')
        assert first[0] not in "=+-@"
    assert flags[col.REASONS].iloc[0].startswith("'=")
    assert "M1" in set(flags[col.METER_ID])


def test_flags_are_ranked_flagged_first_and_have_no_negative_zero():
    table = _table(["A", "B", "C"], ["", "", ""])
    table.loc[1, col.SCORE] = -0.0
    flags = format_flags(table)
    assert flags[col.RANK].tolist() == [1, 2, 3]
    assert flags[col.FLAGGED].iloc[0] == "true"
    assert "-0.0" not in flags.to_csv(index=False)


def test_rank_follows_the_score_as_written_and_equal_scores_go_by_energy():
    table = _table(["A", "B", "C", "D", "E"], [""] * 5)
    table[col.FLAGGED] = [True, True, True, True, False]
    table[col.SCORE] = [0.99841, 1.0, 0.99844, 0.99826, 0.4]  # B first; A and C equal as written
    table[col.EXCESS_KWH] = [10.0, 5.0, 50.0, 900.0, 0.0]
    flags = format_flags(table)
    assert flags[col.METER_ID].tolist() == ["B", "C", "A", "D", "E"]
    assert flags[col.SCORE].is_monotonic_decreasing
    assert flags.loc[flags[col.METER_ID] == "A", col.SCORE].iloc[0] == 0.9984


def test_transformers_flagged_first_then_by_unexplained_load():
    table = pd.DataFrame({col.ASSET_ID: ["T1", "T2", "T3"], col.FLAGGED: [False, True, True],
                          col.UNEXPLAINED_KW: [0.0, 1.5, 3.0], col.ONSET: ["", "2026-03-01", "2026-03-02"],
                          col.SUSPECTS: ["", "M1", "M2;M3"]})
    out = format_transformers(table)
    assert out[col.ASSET_ID].tolist() == ["T3", "T2", "T1"]
    assert list(out.columns) == list(col.TRANSFORMERS_COLUMNS)
