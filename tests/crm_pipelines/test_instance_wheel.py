"""The wheel carries the shipped Dagster instances, and an installed package reads its own copies.

``dagster.yaml`` and ``deploy/dagster.yaml`` live at the top of the repository; the wheel gets them at
build time (pyproject's hatch ``force-include``) in ``crm_pipelines/instance_config/``. The wheel is
built with uv (about a second, from its cache) and installed without dependencies into a fresh
virtual environment: the lookups need only the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crm_pipelines.deploy_local import DEPLOY_INSTANCE
from crm_pipelines.instance import SHIPPED_INSTANCE

REPO = Path(__file__).resolve().parents[2]
FILES = {
    "crm_pipelines/instance_config/dagster.yaml": REPO / "dagster.yaml",
    "crm_pipelines/instance_config/deploy/dagster.yaml": REPO / "deploy" / "dagster.yaml",
}
TIMEOUT_SECONDS = 180
LOOKUP = """
import json, sys
from pathlib import Path
import crm_pipelines
from crm_pipelines.deploy_local import DEPLOY_INSTANCE
from crm_pipelines.instance import SHIPPED_INSTANCE, prepare_home
home = prepare_home(Path(sys.argv[1]))
print(json.dumps({
    "package": crm_pipelines.__file__,
    "shipped": str(SHIPPED_INSTANCE),
    "deploy": str(DEPLOY_INSTANCE),
    "shipped_text": SHIPPED_INSTANCE.read_text(encoding="utf-8"),
    "deploy_text": DEPLOY_INSTANCE.read_text(encoding="utf-8"),
    "home_text": home.read_text(encoding="utf-8"),
}))
"""


def uv_command() -> list[str]:
    """uv: on the PATH, or as ``python3 -m uv``."""
    if found := shutil.which("uv"):
        return [found]
    python3 = shutil.which("python3")
    if python3 and subprocess.run([python3, "-m", "uv", "--version"], capture_output=True).returncode == 0:
        return [python3, "-m", "uv"]
    pytest.skip("uv is not installed: it builds the wheel")


def run(argv: list[str], *, cwd: Path) -> str:
    env = {name: value for name, value in os.environ.items() if name not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_checkout_reads_the_repository_files() -> None:
    assert SHIPPED_INSTANCE == REPO / "dagster.yaml"
    assert DEPLOY_INSTANCE == REPO / "deploy" / "dagster.yaml"


def test_the_wheel_ships_both_instances_and_the_installed_package_reads_them(tmp_path: Path) -> None:
    uv = uv_command()
    run([*uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("crm_pipelines-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name, source in FILES.items():
            assert archive.read(name) == source.read_bytes(), name

    venv = tmp_path / "venv"
    run([*uv, "venv", "--python", sys.executable, str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([*uv, "pip", "install", "--python", str(python), "--no-deps", str(wheel)], cwd=tmp_path)
    # -I: neither the working directory nor PYTHONPATH on sys.path, so only the installed package.
    found = json.loads(run([str(python), "-I", "-c", LOOKUP, str(tmp_path / "home")], cwd=tmp_path))

    package = Path(found["package"]).parent
    assert package.is_relative_to(venv)
    assert Path(found["shipped"]) == package / "instance_config" / "dagster.yaml"
    assert Path(found["deploy"]) == package / "instance_config" / "deploy" / "dagster.yaml"
    assert found["shipped_text"] == found["home_text"] == (REPO / "dagster.yaml").read_text(encoding="utf-8")
    assert found["deploy_text"] == (REPO / "deploy" / "dagster.yaml").read_text(encoding="utf-8")
