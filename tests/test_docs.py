"""The README stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from batch_processor.settings import ENV_PREFIX, Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    """Each setting appears with its BATCH_PROCESSOR_ environment variable."""
    missing = [
        name for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README
    ]
    assert missing == []


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run contains the README's test command, letter for letter."""
    command = (
        "python3 -m venv .venv && .venv/bin/pip install --require-hashes -r requirements/test.lock"
        " && .venv/bin/pip install --no-deps -e . && .venv/bin/python -m pytest"
    )
    assert command in README
    assert command in (Path(__file__).parent.parent / ".ci" / "run").read_text()
