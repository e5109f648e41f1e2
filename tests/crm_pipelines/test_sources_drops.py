"""Validation of the file-drop settings in sources.yaml."""

import pydantic
import pytest

from crm_pipelines.sources import Dataset, load_sources


def test_the_declared_drops_validate() -> None:
    drops = load_sources()["finance_sftp"].datasets
    assert drops["invoices"].complete_when == "stable"
    assert drops["invoices"].remote_folder("/outbound/finance", "processed") == "/outbound/finance/processed"
    assert drops["payments"].remote_folder("/outbound/finance", "error") == "/outbound/finance/error"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"folder": "outbound/finance"}, "absolute remote path"),
        ({"folder": "/outbound/../etc"}, "without '..'"),
        ({"processed_folder": "../elsewhere"}, "without '..'"),
        ({"markers": ["done/../x"]}, "marker suffix"),
        ({"complete_when": "soon"}, "complete_when"),
        ({"pattern": "sub/invoices_{date}.csv"}, "bare file name"),
    ],
)
def test_bad_drop_settings_are_refused_with_the_key(settings: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Dataset.model_validate({"pattern": "invoices_{date}.csv", "columns": ["a"], **settings})
