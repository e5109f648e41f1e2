"""The Dagster instance the project ships: ``dagster.yaml`` at the top of the repository.

It sets what a single machine needs beyond Dagster's defaults: run retries for runs whose process
died, and a run queue that never runs two runs of one partition at once. :func:`prepare_home` puts
it in ``$DAGSTER_HOME`` (the sandbox's commands call it), leaving a file someone else wrote alone.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_INSTANCE", "prepare_home"]

SHIPPED_INSTANCE = Path(__file__).resolve().parent.parent / "dagster.yaml"
# The first line of the shipped file, and what earlier versions of the project wrote.
_OURS = ("# The Dagster instance of crm-pipelines", "telemetry:\n  enabled: false\n")


def prepare_home(home: Path) -> Path:
    """Create ``home`` with the shipped ``dagster.yaml`` unless it holds one of its own; returns the file."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    shipped = SHIPPED_INSTANCE.read_text(encoding="utf-8")
    current = config.read_text(encoding="utf-8") if config.exists() else None
    if current != shipped and (current is None or current.startswith(_OURS[0]) or current == _OURS[1]):
        config.write_text(shipped, encoding="utf-8")
    return config
