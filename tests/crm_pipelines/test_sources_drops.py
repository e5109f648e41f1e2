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


# Other scripts' digits, which a regex's \\d also takes.
FULL_WIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))


@pytest.mark.parametrize(
    ("name", "day", "problem"),
    [
        ("invoices_2026-11-25.csv", "2026-11-25", None),
        ("invoices_2024-02-29.csv", "2024-02-29", None),  # a leap day exists
        ("invoices_2025-13-45.csv", None, "'2025-13-45' in the name is not a calendar date"),
        ("invoices_2025-02-29.csv", None, "'2025-02-29' in the name is not a calendar date"),
        (f"invoices_{'2026-11-25'.translate(FULL_WIDTH)}.csv", None, "not a calendar date"),
        (f"invoices_{'2026-11-25'.translate(ARABIC_INDIC)}.csv", None, "not a calendar date"),
        ("invoices_2026-11-25.csv.bak", None, None),  # not the drop's file at all
        ("payments_2026-11-25.csv", None, None),
    ],
)
def test_only_real_calendar_dates_in_ascii_digits_name_a_day(
    name: str, day: str | None, problem: str | None
) -> None:
    drop = Dataset.model_validate({"pattern": "invoices_{date}.csv", "columns": ["a"]})
    assert drop.date_from_name(name) == day
    found = drop.date_problem(name)
    assert (found is None) == (problem is None)
    if problem is not None:
        assert problem in str(found)
