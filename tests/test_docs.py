"""Docs stay true: the README opens with the two commands, and its configuration table lists exactly
the settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import FlywheelSettings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None and readme.index("```bash") < 40
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `FLYWHEEL_([A-Z0-9_]+)` \|", readme, re.M))
    fields = {name.upper() for name in FlywheelSettings.model_fields}
    assert documented == fields, f"missing: {fields - documented}, stale: {documented - fields}"


def test_documented_defaults_match() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, field in FlywheelSettings.model_fields.items():
        row = re.search(rf"^\| `FLYWHEEL_{name.upper()}` \| ([^|]+) \|", readme, re.M)
        assert row is not None
        shown = row.group(1).strip().strip("`")
        default = field.default
        if default is None:
            assert shown == "unset", name
        elif isinstance(default, bool):  # written as the environment takes it
            assert shown == str(default).lower(), name
        elif isinstance(default, tuple):
            assert shown == ",".join(default), name
        else:
            assert shown == str(default).removesuffix(".0"), name
