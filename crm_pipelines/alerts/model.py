"""What an alert says: one :class:`Alert`, rendered as a subject line and a plain-text body.

Every channel sends the same words: the e-mail's subject and body, the webhook's text. What goes in
is already redacted (:mod:`crm_pipelines.alerts.redact`); nothing here reads a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PREFIX", "Alert", "AlertKind", "FailedCheck"]

AlertKind = Literal["run_failure", "check_failure", "daily_summary"]

PREFIX = "[crm-pipelines]"
# Steps named in a subject; the body names them all.
SUBJECT_STEPS = 3


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class FailedCheck:
    """A blocking asset check whose failure failed its run, as the run's alert names it.

    Attributes:
        asset_key: The checked asset (``raw/hubspot``).
        check_name: The check (``volume_drop_block``).
        detail: The check's description, else its first metadata entry, first line, redacted.
        step_key: The step its failure failed.
    """

    asset_key: str
    check_name: str
    detail: str | None = None
    step_key: str | None = None

    @property
    def name(self) -> str:
        """``raw/hubspot:volume_drop_block``."""
        return f"{self.asset_key}:{self.check_name}"


@dataclass(frozen=True)
class Alert:
    """One alert.

    Attributes:
        kind: ``run_failure``, ``check_failure`` or ``daily_summary``.
        job: The run's job (None for the daily summary).
        partition: The run's partition (its ``dagster/partition`` tag), or None; the summary's day.
        failed_steps: Step keys that failed, in the order they failed.
        failed_checks: For a run failure, the blocking checks whose failure failed the run (their
            failure has no alert of its own: this one is it).
        error: The first line of the error message, redacted.
        run_id: The run the alert is about.
        run_url: ``<DAGSTER_UI_URL>/runs/<run_id>``.
        asset_key: The checked asset (``raw/hubspot``), for a check failure.
        check_name: The failed check, for a check failure.
        severity: ``ERROR`` or ``WARN``, for a check failure.
        headline: The daily summary's one-line figures.
        lines: The daily summary's body.
    """

    kind: AlertKind
    job: str | None = None
    partition: str | None = None
    failed_steps: tuple[str, ...] = ()
    failed_checks: tuple[FailedCheck, ...] = ()
    error: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    asset_key: str | None = None
    check_name: str | None = None
    severity: str | None = None
    headline: str | None = None
    lines: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """One line: ``[crm-pipelines] nightly_sync failed (2026-12-06): extract_hubspot_contacts``.

        A run failed by a blocking check names the check instead of its step:
        ``[crm-pipelines] nightly_sync failed (2026-12-06): check raw/hubspot:volume_drop_block``.

        A check failure: ``[crm-pipelines] check raw/hubspot:volume_drop_block failed (ERROR) (2026-12-06)``;
        the summary: ``[crm-pipelines] daily summary (2026-12-07): 5 runs succeeded, 1 failed, ...``.
        """
        when = f" ({self.partition})" if self.partition else ""
        if self.kind == "run_failure":
            checked = {check.step_key for check in self.failed_checks}
            named = [f"check {check.name}" for check in self.failed_checks]
            named += [step for step in self.failed_steps if step not in checked]
            steps = ", ".join(named[:SUBJECT_STEPS])
            if len(named) > SUBJECT_STEPS:
                steps += f" and {len(named) - SUBJECT_STEPS} more"
            subject = f"{PREFIX} {self.job} failed{when}" + (f": {steps}" if steps else "")
        elif self.kind == "check_failure":
            subject = f"{PREFIX} check {self.asset_key}:{self.check_name} failed ({self.severity}){when}"
        else:
            subject = f"{PREFIX} daily summary{when}" + (f": {self.headline}" if self.headline else "")
        return _one_line(subject)

    @property
    def body(self) -> str:
        """Plain text, one ``Field: value`` a line, the run's link last."""
        if self.kind == "daily_summary":
            return "\n".join([*((self.headline,) if self.headline else ()), "", *self.lines]).strip() + "\n"
        fields: list[tuple[str, str | None]] = [
            ("Job", self.job),
            ("Partition", self.partition),
        ]
        if self.kind == "check_failure":
            fields += [("Asset", self.asset_key), ("Check", self.check_name), ("Severity", self.severity)]
        else:
            fields.append(("Failed steps", ", ".join(self.failed_steps) or None))
            fields += [
                ("Failed check", f"{check.name}: {check.detail}" if check.detail else check.name)
                for check in self.failed_checks
            ]
        fields += [("Error", self.error), ("Run", self.run_url)]
        return "".join(f"{name}: {_one_line(value)}\n" for name, value in fields if value)
