from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from crm_pipelines.databases.sql_source import TableRead, read_table_batches


@pytest.fixture
def erp(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/erp.db")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE invoices (invoice_id INTEGER PRIMARY KEY, invoice_date DATE, amount NUMERIC(18,2))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO invoices VALUES (1, '2026-11-01', 12.5), (2, '31/13/2025', -1), (3, NULL, 7)"
            )
        )
        conn.execute(sa.text("CREATE TABLE empty_table (id INTEGER PRIMARY KEY, name TEXT)"))
    return engine


def test_streams_in_chunks_and_keeps_malformed_values_as_text(erp: sa.Engine) -> None:
    batches = list(
        read_table_batches(erp, read=TableRead("invoices", order_by=("invoice_id",)), chunk_rows=2)
    )
    assert [b.num_rows for b in batches] == [2, 1]
    rows = pa.Table.from_batches(batches).to_pylist()
    assert rows[1] == {"invoice_id": 2, "invoice_date": "31/13/2025", "amount": "-1"}
    assert rows[2]["invoice_date"] is None


def test_empty_table_still_has_a_schema(erp: sa.Engine) -> None:
    batches = list(read_table_batches(erp, read=TableRead("empty_table")))
    assert len(batches) == 1
    assert batches[0].num_rows == 0
    assert batches[0].schema.names == ["id", "name"]


def test_unknown_column_and_unsafe_table_name_are_refused(erp: sa.Engine) -> None:
    with pytest.raises(LookupError, match="no column"):
        list(read_table_batches(erp, read=TableRead("invoices", columns=["nope"])))
    with pytest.raises(ValueError, match="refusing"):
        list(read_table_batches(erp, read=TableRead("invoices; DROP TABLE invoices")))
