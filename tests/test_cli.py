"""The command line: exit codes, configuration errors, and secrets kept out of every output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from batch_processor.runtime.embedded import free_port

from .conftest import worker_command

PASSWORD = "Sup3r-S3cret-Pw"


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess with a clean BATCH_* environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    return subprocess.run(
        worker_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_password_never_appears_in_logs_or_tracebacks(tmp_path: Path, log_format: str) -> None:
    """A run that cannot reach MongoDB exits 1 with one line (no traceback), no password in it."""
    uri = f"mongodb://admin:{PASSWORD}@127.0.0.1:{free_port()}/?authSource=admin"
    result = run_cli(
        "--mongodb-uri",
        uri,
        "--batch-dir",
        str(tmp_path),
        "--retries",
        "1",
        "--log-format",
        log_format,
        env={"BATCH_PROCESSOR_SERVER_SELECTION_TIMEOUT": "0.3"},
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "run failed" in output and "127.0.0.1" in output
    assert "Traceback" not in output and '"exception"' not in output  # expected: one line
    assert PASSWORD not in output


def test_print_config_masks_secrets(tmp_path: Path) -> None:
    """--print-config shows the effective settings with the URI masked."""
    uri = f"mongodb://admin:{PASSWORD}@db.example:27017/"
    result = run_cli(
        "--print-config",
        "--batch-size",
        "7",
        env={"BATCH_PROCESSOR_MONGODB_URI": uri},
        cwd=tmp_path,
    )
    assert result.returncode == 0
    config = json.loads(result.stdout)
    assert config["mongodb_uri"] == "**********" and config["batch_size"] == 7
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--batch-size", "0"], {}, "batch_size"),
        (["--concurrent", "-3"], {}, "concurrent"),
        ([], {"BATCH_PROCESSOR_RETRIES": "many"}, "retries"),
        (["--classifier", "psychic"], {}, "classifier"),
        (["--config", "missing.toml"], {}, "config"),
    ],
)
def test_invalid_settings_exit_2_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    """A bad flag, env value or file exits 2 with a message that names the setting."""
    result = run_cli(
        *args,
        "--mongodb-uri",
        "mongodb://127.0.0.1:1/",
        "--batch-dir",
        str(tmp_path),
        "--log-format",
        "json",
        env={"BATCH_PROCESSOR_SERVER_SELECTION_TIMEOUT": "0.3", **env},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr


def test_flags_override_env_which_overrides_toml(tmp_path: Path) -> None:
    """Precedence: flags, then BATCH_* variables, then the TOML file, then defaults."""
    toml = tmp_path / "batch.toml"
    toml.write_text('batch_size = 11\nconcurrent = 3\nretries = 5\ndatabase = "from_toml"\n')
    result = run_cli(
        "--print-config",
        "--config",
        str(toml),
        "--concurrent",
        "9",
        env={"BATCH_PROCESSOR_RETRIES": "7"},
        cwd=tmp_path,
    )
    config = json.loads(result.stdout)
    assert (config["batch_size"], config["concurrent"], config["retries"]) == (11, 9, 7)
    assert config["database"] == "from_toml"
    assert config["target_collection"] == "sentimental_analysis"


def test_a_command_on_the_embedded_server_a_worker_holds_says_how_to_reach_it(
    tmp_path: Path,
) -> None:
    """While the demo runs ``report`` says how to reach its server (exit 2); ``status`` does."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_")}
    demo = subprocess.Popen(
        worker_command("demo", "--count", "2500", "--log-format", "json"),
        cwd=tmp_path,
        env=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stderr is not None
        for line in demo.stderr:
            if "batch finished" in line:
                break
        result = run_cli("report", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "is running on the embedded server" in line
        assert "--mongodb-uri 'mongodb://127.0.0.1:" in line

        # status is what a person runs during a run: it reads the worker's own server.
        status = run_cli("status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["database"].startswith(f"the embedded server of worker pid {demo.pid} (")
        assert shown["total"] == 2500 and [w["state"] for w in shown["workers"]] == ["alive"]
    finally:
        demo.kill()  # its server goes with it (PR_SET_PDEATHSIG)
        demo.wait(30)
        if demo.stderr is not None:
            demo.stderr.close()


def test_secrets_directory_supplies_settings(tmp_path: Path) -> None:
    """A file per setting in BATCH_PROCESSOR_SECRETS_DIR (or systemd's credentials dir) is read."""
    secrets_dir = tmp_path / "creds"
    secrets_dir.mkdir()
    (secrets_dir / "mongodb_uri").write_text(f"mongodb://app:{PASSWORD}@db:27017/")
    (secrets_dir / "database").write_text("from_secret")
    result = run_cli(
        "--print-config", env={"CREDENTIALS_DIRECTORY": str(secrets_dir)}, cwd=tmp_path
    )
    config = json.loads(result.stdout)
    assert config["database"] == "from_secret" and config["mongodb_uri"] == "**********"
