"""The ``flywheel`` command starts without loading the stages: a command imports what it runs.

Importing the stages (trainer, kinds, pandas, MLflow, the platform) took ~1 s of every command's start, even
``flywheel --help`` (1.2 s before, 0.33 s after, on a 2-core EPYC). Checked by what is imported, not by a timing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# packages no command needs before it runs; a command that uses one imports it itself
_STAGES = ("streams", "trainer", "kinds", "serving", "curation", "registry", "tasks", "flywheel.platform",
           "flywheel.demo.platform", "flywheel.migrate", "pandas", "numpy", "sklearn", "torch", "mlflow", "sqlalchemy",
           "alembic", "confluent_kafka", "psycopg")


def _loaded_after(code: str) -> set[str]:
    probe = (f"{code}\nimport sys\n"
             f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {_STAGES!r} or m in {_STAGES!r}), "
             "file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return set(result.stderr.split())  # stdout: the command's own output


def test_importing_the_cli_loads_no_stage() -> None:
    assert _loaded_after("import flywheel.cli") == set()


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["demo", "--help"], ["topics", "--help"]])
def test_help_loads_no_stage(args: list[str]) -> None:
    loaded = _loaded_after("import sys\nfrom flywheel.cli import app\n"
                           f"sys.argv = ['flywheel', *{args!r}]\n"
                           "try:\n    app()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")
    assert loaded == set()


def test_the_demo_package_loads_its_parts_on_use() -> None:
    loaded = _loaded_after("from flywheel.demo import SCENARIOS\nassert 'tweets' in str(list(SCENARIOS))")
    assert "flywheel.demo.platform" not in loaded
    loaded = _loaded_after("from flywheel.demo import KIND_PARAMS\nassert 'tfidf-logreg' in KIND_PARAMS")
    assert "flywheel.demo.platform" in loaded


def test_every_name_the_demo_package_exports_loads() -> None:
    """``__all__``, the names' modules and the imports for type checkers are three lists: kept in step."""
    import flywheel.demo

    for name in flywheel.demo.__all__:
        assert getattr(flywheel.demo, name) is not None, name
