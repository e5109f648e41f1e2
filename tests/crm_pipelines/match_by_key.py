"""Match rules for tests that decide the clusters themselves: accounts by VAT number, contacts by e-mail."""

from crm_pipelines.identity.rules import parse_match_rules

# One rule per entity, so a test decides the clusters by the VAT number or e-mail it gives a record.
RULES = parse_match_rules(
    text="""
    account:
      rules:
        - name: same_vat
          block: [vat_number]
    contact:
      rules:
        - name: same_email
          block: [email]
    """
)
