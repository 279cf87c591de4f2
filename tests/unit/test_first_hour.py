"""What a newcomer meets first: a typo'd command, liveness under the shipped hardening."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from batch_processor.cli.app import parse
from batch_processor.errors import ConfigurationError
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


def test_a_mistyped_variable_is_named_with_the_setting_it_meant() -> None:
    """A ``BATCH_PROCESSOR_`` typo gets the closest real name; a far one gets no guess."""
    from batch_processor.settings import unknown_variables

    environ = {
        "BATCH_PROCESSOR_BATCHSIZE": "10",
        "BATCH_PROCESSOR_CONCURENT": "3",
        "BATCH_PROCESSOR_PATH": "/x",
    }
    assert unknown_variables(environ, env_file=Path("/none")) == [
        "unknown variable BATCH_PROCESSOR_BATCHSIZE in the environment is ignored "
        "(did you mean BATCH_PROCESSOR_BATCH_SIZE?)",
        "unknown variable BATCH_PROCESSOR_CONCURENT in the environment is ignored "
        "(did you mean BATCH_PROCESSOR_CONCURRENT?)",
        "unknown variable BATCH_PROCESSOR_PATH in the environment is ignored",
    ]


def test_another_programs_batch_variables_are_left_alone() -> None:
    """``BATCH_SIZE`` or ``BATCH_JOB_ID`` (another tool's) draw no warning: not our prefix."""
    from batch_processor.settings import unknown_variables

    environ = {"BATCH_SIZE": "10", "BATCH_JOB_ID": "7", "BATCH_TEST_MONGODB_URI": "mongodb://x"}
    assert unknown_variables(environ, env_file=Path("/none")) == []


def test_the_legacy_prefix_is_read_with_a_deprecation_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BATCH_CONCURRENT`` still works for a release, named with its new name; new wins."""
    from batch_processor.settings import load_settings, unknown_variables

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BATCH_RETRIES=7\nBATCH_PROCESSOR_RETRIES=4\n")
    monkeypatch.setenv("BATCH_CONCURRENT", "9")
    monkeypatch.setenv("BATCH_CONFIG", str(tmp_path / "none.toml"))

    with pytest.raises(ConfigurationError, match=r"none\.toml does not exist"):
        load_settings()  # the legacy name of the config file is read too
    monkeypatch.delenv("BATCH_CONFIG")
    settings = load_settings()

    assert (settings.concurrent, settings.retries) == (9, 4)
    assert unknown_variables({"BATCH_CONCURRENT": "9"}, env_file=Path(".env")) == [
        "variable BATCH_CONCURRENT in the environment is deprecated: rename it "
        "BATCH_PROCESSOR_CONCURRENT (the BATCH_ prefix will not be read after this release)",
        "variable BATCH_RETRIES in .env is ignored: BATCH_PROCESSOR_RETRIES is set",
    ]


def test_a_bad_legacy_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value under the old name is reported under the name the user wrote."""
    from batch_processor.settings import load_settings

    monkeypatch.setenv("BATCH_CONCURRENT", "many")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert "concurrent in the environment variable BATCH_CONCURRENT:" in raised.value.message


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
    monkeypatch.setenv("BATCH_PROCESSOR_CONCURRENT", "many")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert (
        "concurrent in the environment variable BATCH_PROCESSOR_CONCURRENT:" in raised.value.message
    )


@pytest.mark.parametrize("beside_a_bar", [True, False])
def test_a_console_log_beside_the_bar_leaves_the_routine_lines_to_it(
    capsys: pytest.CaptureFixture[str], beside_a_bar: bool
) -> None:
    """Beside a progress bar no ``batch finished`` lines; warnings stay; without a bar, all."""
    import structlog

    from batch_processor.runtime.logs import configure_logging

    configure_logging("INFO", "console", beside_a_bar=beside_a_bar)
    try:
        log = structlog.get_logger()
        log.info("batch finished", documents=100)
        log.warning("document failed", category="DATA")
        log.info("run finished", processed=100)
    finally:
        configure_logging("INFO", "json")
    text = capsys.readouterr().err
    assert "document failed" in text and "run finished" in text
    assert ("batch finished" in text) is not beside_a_bar


def test_the_next_steps_are_typed_as_the_demo_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.venv/bin/batch-processor demo`` gets ``.venv/bin/batch-processor report`` back."""
    from batch_processor.cli.demo import invoked_as

    script = tmp_path / "venv dir" / "bin" / "batch-processor"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    assert invoked_as() == f"'{script}'"  # quoted: it has a space
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert invoked_as() == "batch-processor"  # on the PATH: the bare name works
    monkeypatch.setattr("sys.argv", ["/x/batch_processor/__main__.py", "demo"])
    assert invoked_as() == "batch-processor"


def test_status_knows_its_own_worker_is_gone_before_its_heartbeat_expires(tmp_path: Path) -> None:
    """After a Ctrl-C the directory's worker is ``ended`` with its count, at once; others stay."""
    from batch_processor.cli.status import as_this_directory_knows
    from batch_processor.files.checkpoints import CheckpointStore
    from batch_processor.files.layout import Layout
    from batch_processor.models import Checkpoint, JobStatus, utcnow

    CheckpointStore(tmp_path).save(
        Checkpoint(job_id="j", status=JobStatus.FINISHED, worker_id="mine", started_at=utcnow(),
                   counters={"succeeded": 1095, "failed": 5})
    )  # fmt: skip

    def rows(claims: int, state: str = "alive") -> list[dict[str, object]]:
        return [
            {"worker": "mine", "state": state, "done": 0, "claims_in_db": claims},
            {"worker": "other", "state": "alive", "done": 3, "claims_in_db": 2},
        ]

    gone, killed, running, silent = rows(0), rows(4), rows(0), rows(0, "dead")
    as_this_directory_knows(gone, tmp_path)
    as_this_directory_knows(silent, tmp_path)
    as_this_directory_knows(killed, tmp_path)
    with exclusive_lock(Layout(tmp_path).lock):
        as_this_directory_knows(running, tmp_path)
    assert [(r["state"], r["done"]) for r in gone] == [("ended", 1100), ("alive", 3)]
    assert [r["state"] for r in killed] == ["dead", "alive"]  # its claims wait for takeover
    assert silent[0]["state"] == "ended"  # silent for a lease, but it left nothing behind
    assert running == rows(0)  # it holds the directory: its heartbeat says the truth
