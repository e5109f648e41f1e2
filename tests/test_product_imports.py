"""The product never imports the sandbox: it is another distribution, absent from the product wheel."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("crm_pipelines", "assets", "resources", "sensors")


def _imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


@pytest.mark.parametrize("package", PRODUCT)
def test_product_modules_never_import_the_sandbox(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _imported_modules(path)
        if name == "crm_pipelines_sandbox" or name.startswith("crm_pipelines_sandbox.")
    ]
    assert offenders == []


def test_the_check_sees_every_way_of_importing(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import crm_pipelines_sandbox.run\n"
        "def f():\n    from crm_pipelines_sandbox import data\n"
        "importlib.import_module('crm_pipelines_sandbox.systems')\n"
    )
    assert _imported_modules(probe) == [
        "crm_pipelines_sandbox.run",
        "crm_pipelines_sandbox",
        "crm_pipelines_sandbox.systems",
    ]
