"""What a newcomer meets first: a typo'd command, liveness under the shipped hardening."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from batch_processor.cli.app import parse
from batch_processor.files.atomic import exclusive_lock, lock_holder


def test_a_mistyped_command_is_named_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    """``batch-processor reprot``: one line naming the command, a suggestion, exit 2."""
    with pytest.raises(SystemExit) as ended:
        parse(["reprot", "--json"])
    assert ended.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown command 'reprot' (did you mean 'report'?)" in line
    assert parse(["--limit", "5"]).command == "run"  # flags alone are still run's


def test_a_live_worker_is_alive_when_proc_stat_is_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``ProcSubset=pid`` psutil cannot read the boot time; the lock holder is alive."""

    def hidden(*_: object) -> None:
        raise psutil.AccessDenied(0)

    monkeypatch.setattr(psutil, "Process", hidden)  # as when /proc/stat cannot be read
    lock = tmp_path / "lock"
    with exclusive_lock(lock):
        pid_text, started = lock.read_text().split()
        assert float(started) > 0  # a start time was recorded, not -1
        holder = lock_holder(lock)
        assert holder is not None and holder.alive and holder.pid == int(pid_text)


def test_tables_show_values_as_a_person_reads_them() -> None:
    """No ``None``, ``[]`` or ``{'DATA': 5}`` in a table cell."""
    from batch_processor.cli.display import shown

    assert [shown(None), shown([]), shown({}), shown("")] == ["-"] * 4
    assert shown({"DATA": 5, "TRANSIENT": 1}) == "DATA: 5, TRANSIENT: 1"
    assert shown(["a", "b"]) == "a, b" and shown(True) == "yes" and shown(0) == "0"


def test_a_variable_named_like_a_setting_gets_the_right_name() -> None:
    """``BATCH_SIZE`` means ``batch_size`` (``BATCH_BATCH_SIZE``); far names get no guess."""
    from batch_processor.settings import unknown_variables

    warnings = unknown_variables(
        {"BATCH_SIZE": "10", "BATCH_CONCURENT": "3", "BATCH_PATH": "/x"}, env_file=Path("/none")
    )
    assert warnings == [
        "unknown variable BATCH_SIZE in the environment is ignored "
        "(did you mean BATCH_BATCH_SIZE?)",
        "unknown variable BATCH_CONCURENT in the environment is ignored "
        "(did you mean BATCH_CONCURRENT?)",
        "unknown variable BATCH_PATH in the environment is ignored",
    ]


def test_run_help_is_grouped_with_examples_and_fits_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --help``: groups by concern, examples at the end, no deprecated flag, 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        parse(["run", "--help"])
    text = capsys.readouterr().out
    for title in ("MongoDB:", "source: what is read:", "LLM:", "output: logs and progress:"):
        assert f"\n{title}\n" in text
    assert "--classifier {offline,llm,cascade}" in text and "--claim-ttl" not in text
    assert text.rstrip().splitlines()[-1].startswith("other commands:")
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_bad_value_names_the_file_and_key_or_the_variable_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOML: the file and the key (an unknown key with the setting it meant); env: its name."""
    from batch_processor.errors import ConfigurationError
    from batch_processor.settings import load_settings

    toml = tmp_path / "batch.toml"
    toml.write_text('batch_size = "lots"\nconcurent = 3\n')
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config_file=toml)
    assert raised.value.message.splitlines() == [
        f"invalid setting batch_size in {toml}: key batch_size: Input should be a valid "
        "integer, unable to parse string as an integer",
        f"unknown setting concurent in {toml}: key concurent (did you mean concurrent?)",
    ]
    monkeypatch.setenv("BATCH_CONCURRENT", "many")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "concurrent in the environment variable BATCH_CONCURRENT:" in raised.value.message
