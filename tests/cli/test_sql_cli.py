"""`tbpr sql` on a real DuckDB warehouse: a long result is printed up to --limit (the rest counted),
written whole by --out (Parquet or CSV), and every statement of a file is printed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

TbprIO = Callable[[list[str]], tuple[int, str, str]]  # the `tbpr_io` fixture of tests/cli/conftest.py
ROWS = 200_000


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.sql(f"CREATE TABLE t AS SELECT 100000 + i AS id, 'row ' || i AS label FROM range({ROWS}) r(i)")
    return path


def _query(tmp_path: Path, sql: str) -> str:
    path = tmp_path / "q.sql"
    path.write_text(sql)
    return str(path)


def test_a_long_result_prints_up_to_the_limit_and_counts_the_rest(
    warehouse: Path, tmp_path: Path, tbpr_io: TbprIO
) -> None:
    query = _query(tmp_path, "-- every row\nSELECT id FROM t ORDER BY id")
    code, out, err = tbpr_io(["sql", query, "--warehouse", str(warehouse), "--limit", "10"])
    assert code == 0, err
    assert "100009" in out and "100010" not in out
    assert f"{ROWS - 10:,} more rows of {ROWS:,} not shown" in " ".join(err.split())
    code, out, err = tbpr_io(["sql", query, "--warehouse", str(warehouse)])  # default: 1000
    assert code == 0 and "100999" in out and "101000" not in out and f"{ROWS - 1000:,} more" in err


def test_every_statement_of_a_file_is_printed(warehouse: Path, tmp_path: Path, tbpr_io: TbprIO) -> None:
    query = _query(tmp_path, "SELECT 'first' AS a;\nSELECT count(*) AS n FROM t;\nSELECT 'third' AS c;")
    code, out, err = tbpr_io(["sql", query, "--warehouse", str(warehouse)])
    assert code == 0, err
    assert all(word in out for word in ("first", f"{ROWS}", "third", "(1/3)", "(3/3)")), out


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_out_writes_the_whole_result(suffix: str, warehouse: Path, tmp_path: Path, tbpr_io: TbprIO) -> None:
    target = tmp_path / f"all{suffix}"
    query = _query(tmp_path, "SELECT id, label FROM t ORDER BY id")
    code, out, err = tbpr_io(["sql", query, "--warehouse", str(warehouse), "--out", str(target)])
    assert code == 0, err
    table = pq.read_table(target) if suffix == ".parquet" else pa_csv.read_csv(target)
    assert table.num_rows == ROWS and table.column_names == ["id", "label"]
    assert table["id"].to_pylist()[-1] == 100000 + ROWS - 1 and f"{ROWS:,} rows" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["w.duckdb", "q.sql", target.name])


@pytest.mark.parametrize(
    ("sql", "name", "words"),
    [
        ("SELECT 1 AS a; SELECT 2 AS b", "r.csv", "several statements"),
        ("SELECT 1 AS a", "r.txt", ".parquet or .csv"),
        ("SELECT 1 AS a", "w.duckdb", ".parquet or .csv"),
    ],
)
def test_out_refuses_what_it_cannot_write(
    sql: str, name: str, words: str, warehouse: Path, tmp_path: Path, tbpr_io: TbprIO
) -> None:
    (tmp_path / "r.csv").write_text("kept")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    query = _query(tmp_path, sql)
    code, _, err = tbpr_io(["sql", query, "--warehouse", str(warehouse), "--out", str(tmp_path / name)])
    assert code == 2 and "Traceback" not in err and words in " ".join(err.split()), err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "q.sql"} == before
