"""docs/architecture.md stays true: every ``path/to/file.py:name`` it cites is defined in that file,
every path it names exists, and every package and contract of pyproject's [tool.importlinter] is in
it (the contracts themselves are held by lint-imports: tests/unit/test_layers.py)."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
# A path from the repository's root, optionally with ``:name`` or ``:Class.method``.
REFERENCE = re.compile(
    r"(?<![\w./])((?:appliance|edge_api|uplink|tui|provisioning|tests|bench|docs)/[\w/.-]*?)"
    r"(?::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?))?(?=[`\s,;)]|$)"
)


@cache
def defined_names(path: Path) -> frozenset[str]:
    """A module's top-level functions, classes and assigned names, and each class's methods as
    ``Class.method``."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def unresolved(text: str, root: Path) -> list[str]:
    """The references in ``text`` that name no existing path under ``root``, or a name its file
    does not define."""
    wrong = []
    for match in REFERENCE.finditer(text):
        path, name = match.group(1).rstrip("."), match.group(2)
        if not (root / path).exists():
            wrong.append(f"{match.group(0)}: no such path")
        elif name is not None and (not path.endswith(".py") or name not in defined_names(root / path)):
            wrong.append(f"{match.group(0)}: {name} is not defined in {path}")
    return wrong


# A file or folder named inside its package's line (``cli/common.py``, ``receiver.py``, ``storage/``).
SHORT_PATH = re.compile(r"`((?:\w+/)*\w+(?:\.py|/))`")
PACKAGES = ("appliance", "edge_api", "uplink", "tui", "provisioning")


def missing_short_paths(text: str, root: Path) -> list[str]:
    """The short paths in ``text`` that no file or folder of the packages under ``root`` ends with."""
    present = {f"{package}/" for package in PACKAGES} | {
        "/".join(path.relative_to(root).parts) + ("/" if path.is_dir() else "")
        for package in PACKAGES
        for path in (root / package).rglob("*")
        if "__pycache__" not in path.parts
    }
    shorts = {match.group(1) for match in SHORT_PATH.finditer(text)}
    return sorted(s for s in shorts if not any(p == s or p.endswith("/" + s) for p in present))


def importlinter() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]


def test_every_file_and_name_the_doc_cites_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert len(REFERENCE.findall(text)) > 50
    assert unresolved(text, ROOT) == []
    assert missing_short_paths(text, ROOT) == []


def test_every_package_of_the_layers_contract_is_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    contracts = importlinter()["contracts"]
    assert isinstance(contracts, list)
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    packages = [package.strip() for layer in layers for package in layer.split("|")]
    assert len(packages) == 10
    assert [p for p in packages if f"`{p.replace('.', '/')}/`" not in text] == []


def test_every_contract_is_named_in_the_doc() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())  # a name wrapped over two lines reads as one
    contracts = importlinter()["contracts"]
    assert isinstance(contracts, list)
    assert [contract["name"] for contract in contracts if contract["name"] not in text] == []


def test_a_wrong_name_or_path_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "appliance" / "core" / "ledger.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "QUEUED = 'q'\n\ndef decide():\n    pass\n\nclass Store:\n    def write(self):\n        pass\n"
    )
    good = (
        "`appliance/core/ledger.py:decide`, `appliance/core/ledger.py:Store.write`, "
        "appliance/core/ledger.py:QUEUED"
    )
    assert unresolved(good, tmp_path) == []
    bad = "`appliance/core/ledger.py:submit`, `appliance/core/ledger.py:Store.read`, `appliance/core/gone.py`"
    assert unresolved(bad, tmp_path) == [
        "appliance/core/ledger.py:submit: submit is not defined in appliance/core/ledger.py",
        "appliance/core/ledger.py:Store.read: Store.read is not defined in appliance/core/ledger.py",
        "appliance/core/gone.py: no such path",
    ]
    assert missing_short_paths("`core/ledger.py`, `ledger.py`, `core/`, `chain.py`, `old/`", tmp_path) == [
        "chain.py",
        "old/",
    ]
