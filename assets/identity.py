"""Identity resolution: accounts and contacts from every system deduplicated into golden records."""

import dagster as dg

from crm_pipelines.identity.golden_ids import previous_ids
from crm_pipelines.identity.incremental import find_previous_run
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.identity.resolve import resolve_entities, scoring_metadata
from crm_pipelines.identity.review import Decision, decisions_table, record_decisions
from crm_pipelines.identity.rules import load_match_rules
from crm_pipelines.lake import partition_dir, spill_dir
from crm_pipelines.mapping.build import mapping_connection
from crm_pipelines.partitions import NIGHTLY_PARTITIONS
from crm_pipelines.syncs.state import pushed_values
from resources.lake import LakeResource, WarehouseResource


@dg.asset(
    key=["identity", "resolution"],
    deps=[dg.AssetKey(["staging", "account"]), dg.AssetKey(["staging", "contact"])],
    group_name="transform",
    partitions_def=NIGHTLY_PARTITIONS,
    kinds={"duckdb", "parquet"},
    description=(
        "Golden accounts and contacts with the crosswalk: clusters by the declared match rules "
        "(match_rules.yaml), values by field ownership (ownership.yaml), golden ids kept from the "
        "warehouse's crosswalk with merges and splits recorded."
    ),
)
def identity_resolution(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult[None]:
    pk = context.partition_key
    files = identity_files(lake.path, pk)
    # What the syncs last wrote into each record: read back by tonight's extract, an echo, not an edit.
    # The golden ids the warehouse holds (tonight's clusters keep them) and the review decisions
    # people made (honoured over any score).
    with warehouse.get().connect(read_only=True) as wh:
        pushed = pushed_values(wh)
        previous = previous_ids(wh)
        decisions = decisions_table(wh)
    con = mapping_connection(spill_dir=spill_dir(lake.path))
    try:
        stats = resolve_entities(
            con=con,
            accounts_glob=str(partition_dir(lake.path, "staging", "canonical", "account", pk) / "*.parquet"),
            contacts_glob=str(partition_dir(lake.path, "staging", "canonical", "contact", pk) / "*.parquet"),
            out_dir=files.folder,
            rules=load_match_rules(),
            pushed=pushed,
            decisions=decisions,
            previous=previous,
            # Only the records that changed since this run, and the clusters they touch, are
            # resolved again when the previous run's state allows it.
            previous_run=find_previous_run(lake.path, pk),
            partition=pk,
        )
    finally:
        con.close()
    summary = stats.as_dict()
    context.log.info(f"identity resolution: {summary}")
    skipped = {k: v for k, v in scoring_metadata(stats).items() if k.endswith("skipped_blocks") and v}
    if skipped:
        context.log.warning(
            f"blocks too large to compare were skipped (their records unmatched there): {skipped}"
        )
    return dg.MaterializeResult(
        metadata={
            "golden_accounts": dg.MetadataValue.int(stats.account.golden),
            "golden_contacts": dg.MetadataValue.int(stats.contact.golden),
            "account_duplicates_merged": dg.MetadataValue.int(stats.account.merged),
            "contact_duplicates_merged": dg.MetadataValue.int(stats.contact.merged),
            "largest_account_cluster": dg.MetadataValue.int(stats.account.largest_cluster),
            "largest_contact_cluster": dg.MetadataValue.int(stats.contact.largest_cluster),
            **scoring_metadata(stats),
            **{
                f"golden_{entity}_ids_{outcome}": dg.MetadataValue.int(getattr(ids, outcome))
                for entity, ids in (("account", stats.account.ids), ("contact", stats.contact.ids))
                for outcome in ("kept", "created", "merged", "split", "returned")
            },
            **{
                f"{entity}_{name}": value
                for entity, e in (("account", stats.account), ("contact", stats.contact))
                for name, value in (
                    ("mode", dg.MetadataValue.text(e.mode + (f": {e.mode_reason}" if e.mode_reason else ""))),
                    ("records_changed", dg.MetadataValue.int(e.records_changed + e.records_deleted)),
                    ("records_resolved", dg.MetadataValue.int(e.records_resolved)),
                )
            },
            "stats": dg.MetadataValue.json(summary),
            "seconds": stats.seconds,
        }
    )


class MatchDecision(dg.Config):
    """One decision on a pair from ops.match_review."""

    entity: str = "contact"
    record_id_a: str
    record_id_b: str
    decision: str  # must_link or cannot_link
    note: str | None = None


class MatchDecisions(dg.Config):
    decisions: list[MatchDecision]
    decided_by: str


@dg.op(description="Record review decisions in ops.match_decisions; the next identity run honours them.")
def record_match_decisions(
    context: dg.OpExecutionContext, config: MatchDecisions, warehouse: WarehouseResource
) -> None:
    bad = [d.decision for d in config.decisions if d.decision not in ("must_link", "cannot_link")]
    bad += [d.entity for d in config.decisions if d.entity not in ("account", "contact")]
    if bad:
        raise dg.Failure(f"decisions are must_link or cannot_link on an account or contact, not {bad}")
    decisions = [
        Decision(
            "account" if d.entity == "account" else "contact",
            d.record_id_a,
            d.record_id_b,
            "must_link" if d.decision == "must_link" else "cannot_link",
            config.decided_by,
            d.note,
        )
        for d in config.decisions
    ]
    with warehouse.get().transaction() as con:
        n = record_decisions(con, decisions)
    context.log.info(f"{n} decision(s) recorded")


@dg.job(description="Apply match review decisions (launch from the UI with the pairs in its config).")
def apply_match_decisions() -> None:
    record_match_decisions()
