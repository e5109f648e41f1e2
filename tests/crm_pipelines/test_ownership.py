"""Field ownership: one declaration for survivorship and for which fields a sync may write where."""

import pytest

from crm_pipelines.ownership import OwnershipError, load_ownership, parse_ownership


def test_the_shipped_declaration_names_an_owner_and_a_policy_for_every_field() -> None:
    ownership = load_ownership()
    account = ownership.account
    assert account.owner("name") == "erp"  # billing master data
    assert account.priority("name") == ["erp", "salesforce", "hubspot"]
    assert account.owner("domain") == "hubspot"
    assert account.owner("phone") == "salesforce"
    assert account.policy("phone") == "owner_wins"
    # Fields not listed are owned by the default's first system.
    assert account.owner("vat_number") == "erp"
    # A newest_wins field is decided by recency: no priority list, but an owner for ties.
    assert ownership.contact.policy("email") == "newest_wins"
    assert ownership.contact.priority("email") == []
    assert ownership.contact.owner("email") == "salesforce"
    assert ownership.contact.clock_skew_seconds == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "account:\n  fields:\n    nmae: [erp]",
            r"account\.fields: unknown field 'nmae' \(did you mean 'name'\?\)",
        ),
        ("contact:\n  fields:\n    name: [erp]", "contact.fields: unknown field 'name'"),
        ("account:\n  default: [erp, erp]", r"default: \['erp'\] listed twice"),
        ("account:\n  fields:\n    name: [ERP]", "lower case"),
        ("account:\n  fields:\n    name: {systems: [erp], conflicts: loudest_wins}", "owner_wins"),
        ("account:\n  clock_skew: soon", "clock_skew 'soon'"),
        ("account:\n  fields:\n    name: {systems: []}", "at least 1 item"),
        ("lead: {}", "lead"),
        ("account: [unclosed", "not valid YAML"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(OwnershipError, match="<string>") as info:
        parse_ownership(text=text)
    assert info.match(message)
