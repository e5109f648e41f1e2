"""The product wheel holds the product packages and nothing of the sandbox (sandbox/ is its own package)."""

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = {"crm_pipelines", "assets", "resources", "sensors"}
# Test and sandbox servers that used to ship in the product.
SERVERS = ("postgres_server.py", "sftp_server.py", "openssh_server.py")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # `uv run` names its own binary in UV; offline, since `uv sync` has cached the build backend.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (run the tests with `uv run pytest` or `make test`)")
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [uv, "build", "--wheel", "--package", "crm-pipelines", "--offline", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("crm_pipelines-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_product_packages(wheel_files: list[str]) -> None:
    top_level = {name.split("/")[0] for name in wheel_files if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == PRODUCT_PACKAGES
    for module in ("crm_pipelines/cli.py", "crm_pipelines/definitions.py", "crm_pipelines/sources.yaml"):
        assert module in wheel_files


def test_the_wheel_holds_nothing_of_the_sandbox(wheel_files: list[str]) -> None:
    assert [name for name in wheel_files if "sandbox" in name.lower()] == []
    assert [name for name in wheel_files if name.rsplit("/", 1)[-1] in SERVERS] == []
