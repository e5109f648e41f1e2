"""Identity resolution: accounts and contacts from every system deduplicated into golden records."""

import dagster as dg

from crm_pipelines.identity.golden_ids import previous_ids
from crm_pipelines.identity.outputs import identity_files
from crm_pipelines.identity.resolve import resolve_entities
from crm_pipelines.identity.rules import load_match_rules
from crm_pipelines.lake import partition_dir
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
    # The golden ids the warehouse holds: tonight's clusters keep them.
    with warehouse.get().connect(read_only=True) as wh:
        pushed = pushed_values(wh)
        previous = previous_ids(wh)
    con = mapping_connection(spill_dir=lake.path / "_spill")
    try:
        stats = resolve_entities(
            con=con,
            accounts_glob=str(partition_dir(lake.path, "staging", "canonical", "account", pk) / "*.parquet"),
            contacts_glob=str(partition_dir(lake.path, "staging", "canonical", "contact", pk) / "*.parquet"),
            out_dir=files.folder,
            rules=load_match_rules(),
            pushed=pushed,
            previous=previous,
        )
    finally:
        con.close()
    summary = stats.as_dict()
    context.log.info(f"identity resolution: {summary}")
    return dg.MaterializeResult(
        metadata={
            "golden_accounts": dg.MetadataValue.int(stats.account.golden),
            "golden_contacts": dg.MetadataValue.int(stats.contact.golden),
            "account_duplicates_merged": dg.MetadataValue.int(stats.account.merged),
            "contact_duplicates_merged": dg.MetadataValue.int(stats.contact.merged),
            **{
                f"golden_{entity}_ids_{outcome}": dg.MetadataValue.int(getattr(ids, outcome))
                for entity, ids in (("account", stats.account.ids), ("contact", stats.contact.ids))
                for outcome in ("kept", "created", "merged", "split")
            },
            "stats": dg.MetadataValue.json(summary),
            "seconds": stats.seconds,
        }
    )
