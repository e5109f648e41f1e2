"""The Dagster instance the project ships: ``dagster.yaml`` at the top of the repository.

It sets what a single machine needs beyond Dagster's defaults: run retries for runs whose process
died, and a run queue that never runs two runs of one partition at once. :func:`prepare_home` puts
it in ``$DAGSTER_HOME`` (the sandbox's commands call it), leaving a file someone else wrote alone.

The files stay at the top of the repository (``dagster.yaml``, ``deploy/dagster.yaml``); the wheel
carries copies made at build time (pyproject's hatch ``force-include``) in
``crm_pipelines/instance_config/``. :func:`instance_file` finds the installed copy, else the
repository's: a checkout (or an editable install) reads the repository's, the one source of truth.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED_INSTANCE", "instance_file", "prepare_home"]

# Where the wheel puts the repository's instance files, inside the package.
PACKAGED_DIR = "instance_config"
_REPOSITORY = Path(__file__).resolve().parent.parent


def instance_file(*parts: str) -> Path:
    """A shipped instance file by its path from the repository's top (``"deploy", "dagster.yaml"``).

    The installed package's copy (``crm_pipelines/instance_config/<parts>``) when there is one, else
    the repository's file (whether or not it exists: reading it then names the missing path).
    """
    packaged = resources.files(__package__ or "crm_pipelines").joinpath(PACKAGED_DIR, *parts)
    if isinstance(packaged, Path) and packaged.is_file():
        return packaged.resolve()
    return _REPOSITORY.joinpath(*parts)


SHIPPED_INSTANCE = instance_file("dagster.yaml")
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
