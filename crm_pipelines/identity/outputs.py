"""Where identity resolution writes its outputs in the lake: golden records, the crosswalk, the review queue."""

from __future__ import annotations

from dataclasses import dataclass

from crm_pipelines.lake import LakePath, partition_dir


@dataclass(frozen=True)
class IdentityFiles:
    folder: LakePath

    @property
    def golden_account(self) -> LakePath:
        return self.folder / "golden_account.parquet"

    @property
    def golden_contact(self) -> LakePath:
        return self.folder / "golden_contact.parquet"

    @property
    def xref(self) -> LakePath:
        return self.folder / "xref_identity.parquet"

    @property
    def review(self) -> LakePath:
        return self.folder / "match_review.parquet"

    @property
    def history(self) -> LakePath:
        return self.folder / "golden_id_history.parquet"

    @property
    def field_sources(self) -> LakePath:
        """Which source record supplied each golden field (``entity``, ``golden_id``, ``supplied_by``)."""
        return self.folder / "golden_field_sources.parquet"

    @property
    def records(self) -> LakePath:
        """Per record its fingerprint and golden id, for the next run to see what changed."""
        return self.folder / "identity_records.parquet"

    @property
    def state(self) -> LakePath:
        """The declarations and weights the run used; written last, so its presence marks a complete run."""
        return self.folder / "identity_state.json"


def identity_files(lake_dir: LakePath, partition: str) -> IdentityFiles:
    return IdentityFiles(partition_dir(lake_dir, "core", "identity", "all", partition))
