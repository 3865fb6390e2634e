"""The layers of docs/architecture.md hold: the import contracts (pyproject's [tool.importlinter], run
by .ci/run) are shown to catch a crossing, and no module reaches into another package's private names
(import-linter sees modules, not names)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appliance", "edge_api", "tui", "uplink", "provisioning")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold_and_catch_the_core_importing_the_shell(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    ledger = tmp_path / "appliance" / "core" / "ledger.py"
    ledger.write_text(ledger.read_text() + "\nfrom appliance.shell import daemon  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "appliance.core.ledger -> appliance.shell.daemon" in broken.stdout


def private_imports(root: Path, package: str) -> list[str]:
    """``from other.module import _name`` where ``other.module`` is outside the importer's package."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        own_package = module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in PACKAGES or node.module.startswith(own_package + "."):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{module}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_packages_private_names() -> None:
    assert [hit for package in PACKAGES for hit in private_imports(ROOT, package)] == []


def test_the_private_name_check_tells_a_sibling_from_its_own_package(tmp_path: Path) -> None:
    core = tmp_path / "appliance" / "core"
    core.mkdir(parents=True)
    (core / "ledger.py").write_text(
        "from appliance.core.outbox import _queue\nfrom appliance.shell.daemon import _runtime, start\n"
    )
    assert private_imports(tmp_path, "appliance") == [
        "appliance.core.ledger: from appliance.shell.daemon import _runtime"
    ]
