"""Configuration mistakes are one line and exit 2; secrets never reach a log, a file or MongoDB."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batch_processor.classifiers.base import Classifier
from batch_processor.conversation import Conversation
from batch_processor.errors import PermanentError, describe
from batch_processor.models import ClassifierOutput
from batch_processor.service.runner import run_job

from ..conftest import conversation, worker_command

PASSWORD = "s3cr%40tP4ss"  # percent-encoded "s3cr@tP4ss"
API_KEY = "azure-key-0123456789"
LEAKY_URL = f"https://bob:{PASSWORD}@example.invalid/openai/v1?api-key={API_KEY}"


async def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the command; its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *worker_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_no_secret(text: str) -> None:
    """Neither the password (encoded or decoded) nor the key appears."""
    for secret in (PASSWORD, "s3cr@tP4ss", API_KEY):
        assert secret not in text


async def test_broken_toml_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    """A TOML syntax error: exit 2, one line with the file and the line number."""
    config = tmp_path / "bp.toml"
    config.write_text("batch_size = 10\nconcurrent = = 4\n")
    code, out, err = await run_cli("--config", str(config), "--print-config")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "line 2" in lines[0]


async def test_uri_with_an_impossible_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A MongoDB URI with port 99999: exit 2, one line naming mongodb_uri, no traceback."""
    code, _, err = await run_cli(
        "--mongodb-uri",
        "mongodb://127.0.0.1:99999/",
        "--batch-dir",
        str(tmp_path / "b"),
        "--log-format",
        "console",
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and "mongodb_uri" in lines[0] and "Traceback" not in err


async def test_print_config_masks_credentials_inside_urls(tmp_path: Path) -> None:
    """--print-config masks a password and an api-key inside llm_base_url and the URI."""
    code, out, _ = await run_cli(
        "--llm-base-url",
        LEAKY_URL,
        "--mongodb-uri",
        f"mongodb://bob:{PASSWORD}@127.0.0.1:1/",
        "--print-config",
    )
    assert code == 0
    assert_no_secret(out)
    assert "example.invalid" in json.loads(out)["llm_base_url"]


def test_describe_masks_url_credentials_and_keys() -> None:
    """Every stored error string goes through describe(), which masks URL secrets."""
    text = describe(RuntimeError(f"cannot reach {LEAKY_URL}: refused"))
    assert_no_secret(text)
    assert "example.invalid" in text


class LeakyClassifier(Classifier):
    """A classifier whose errors quote a URL with credentials (as some SDKs do)."""

    name = "leaky"
    version = "1"

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """Always fail permanently, naming the endpoint with its credentials."""
        raise PermanentError(f"endpoint {LEAKY_URL} rejected the request")

    def summary(self) -> dict[str, Any]:
        """Nothing to add."""
        return {}

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_stored_error_strings_are_redacted(db: Any, make_settings: Any) -> None:
    """Failure reasons in MongoDB and the dead letter carry no credentials."""
    await db.conversation_set.insert_many([conversation(f"help {i}") for i in range(3)])
    settings = make_settings(llm_base_url=LEAKY_URL)
    stats = await run_job(settings, classifier=LeakyClassifier())

    assert stats.failed == {"PERMANENT": 3}
    marks = [d["processing"] async for d in db.conversation_set.find({}, {"processing": 1})]
    assert len(marks) == 3 and all("example.invalid" in m["error"] for m in marks)
    assert_no_secret(json.dumps(marks, default=str))
    dead = (settings.batch_dir / "dead_letter.jsonl").read_text()
    assert dead.count("\n") == 3
    assert_no_secret(dead)
