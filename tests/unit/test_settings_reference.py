"""docs/operations.md, section 11 "Every setting": every setting the box reads is listed once, with
the default the box really uses, written as it would be in venuebox.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from appliance.core.config import Config, load_config

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \| `(?P<default>[^|]+)` \| (?P<meaning>.+) \|$")


def documented() -> dict[str, tuple[str, str]]:
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text.split("\n## 11. Every setting\n", 1)
    assert len(section) == 2, 'docs/operations.md has no section "## 11. Every setting"'
    body = section[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in body.splitlines():
        match = ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} is listed twice"
            rows[match["name"]] = (match["default"], match["meaning"].strip())
    return rows


def toml_value(literal: str) -> Any:
    return tomllib.loads(f"value = {literal}")["value"]


def settings_of(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in Config.__struct_fields__ if name != "data_dir"}


def test_every_setting_is_listed_with_its_real_default_and_a_meaning() -> None:
    rows = documented()
    settings = set(Config.__struct_fields__) - {"data_dir"}
    assert sorted(settings - set(rows)) == [], "settings missing from the runbook"
    assert sorted(set(rows) - settings) == [], "the runbook lists settings the box does not have"
    defaults = settings_of(Config())
    for name, (literal, meaning) in rows.items():
        assert toml_value(literal) == defaults[name], f"{name}: the runbook says {literal}"
        assert len(meaning) > 10, f"{name}: say what it means"


def test_each_listed_default_is_accepted_as_written_in_venuebox_toml(tmp_path: Path) -> None:
    """A tech who copies a row into venuebox.toml gets exactly that value, not a refusal."""
    lines = [f"{name} = {literal}" for name, (literal, _) in documented().items()]
    (tmp_path / "venuebox.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(tmp_path, environ={})
    assert settings_of(config) == settings_of(Config())
