"""Every canonical column says whether it is personal data, sensitive, and how analysts see it."""

import pyarrow as pa
import pytest

from crm_pipelines.canonical import CLASSIFICATION, ENTITIES, _classified
from crm_pipelines.privacy.masking import MART_ENTITY
from crm_pipelines.warehouse.marts import MARTS


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_every_canonical_column_is_classified(entity: str) -> None:
    for field in ENTITIES[entity]:
        meta = field.metadata or {}
        assert meta.get(b"pii") in (b"true", b"false"), (entity, field.name)
        assert meta.get(b"sensitive") in (b"true", b"false"), (entity, field.name)
        assert meta.get(b"masking") in (b"hash", b"partial", b"none"), (entity, field.name)
        if meta[b"sensitive"] == b"true":
            assert meta[b"pii"] == b"true", (entity, field.name)
            assert meta[b"masking"] != b"none", (entity, field.name)


def test_personal_columns_are_declared_personal() -> None:
    for entity, column in [
        ("contact", "email"),
        ("contact", "first_name"),
        ("contact", "last_name"),
        ("contact", "phone"),
        ("lead", "email"),
        ("account", "email"),
    ]:
        assert ENTITIES[entity].field(column).metadata[b"pii"] == b"true", (entity, column)
    for column in ("government_id", "birth_date"):
        assert ENTITIES["contact"].field(column).metadata[b"sensitive"] == b"true"
    # E-mails of people are tokens (joinable), not partial masks.
    assert ENTITIES["contact"].field("email").metadata[b"masking"] == b"hash"


def test_a_column_without_a_class_fails() -> None:
    schema = pa.schema([*ENTITIES["payment"], pa.field("iban", pa.string())])
    with pytest.raises(ValueError, match="iban"):
        _classified("payment", schema)
    assert "iban" not in CLASSIFICATION["payment"]


def test_every_mart_is_modelled_on_a_classified_entity() -> None:
    for mart in MARTS:
        assert MART_ENTITY.get(mart.name) in ENTITIES, mart.name
