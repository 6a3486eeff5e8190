"""The warehouse reads each scoring job's `metrics.json` (`read_score_outputs`): one of the wrong shape or
with a field of the wrong type is a TbprError naming the file, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.errors import TbprError
from tasks.report.mlflow_tables import read_score_outputs


@pytest.mark.parametrize("document", [[{"R1": 1.0}], {"R1": "high", "mode": "exhaustive"}])
def test_a_damaged_metrics_json_is_a_clear_error(document: object, tmp_path: Path) -> None:
    (tmp_path / "rankings.parquet").write_bytes(b"")
    (tmp_path / "metrics.json").write_text(json.dumps(document))
    with pytest.raises(TbprError, match=r"metrics\.json"):
        read_score_outputs([str(tmp_path / "rankings.parquet")])


def test_a_good_metrics_json_is_read(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"R1": 50.0, "mode": "pruned", "top_k": 20}))
    table = read_score_outputs([str(tmp_path / "rankings.parquet")])
    assert table.num_rows == 1 and table["R1"][0].as_py() == 50.0
