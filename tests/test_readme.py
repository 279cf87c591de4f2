"""The README's first commands, run as a newcomer runs them: the demo, then the next steps."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from .test_cli import run_cli

README = (Path(__file__).parent.parent / "README.md").read_text()
MARKER = "<!-- tests/test_readme.py runs these"


def shell_blocks(text: str) -> list[str]:
    """The README's ``sh`` code blocks, in order."""
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def next_steps() -> list[list[str]]:
    """The commands of the block after the marker, as arguments after ``batch-processor``."""
    block = shell_blocks(README[README.index(MARKER) :])[0]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        assert words[0] == "batch-processor", line
        commands.append(words[1:])
    return commands


def the_demo() -> list[str]:
    """The demo command of the README's first block, as arguments after ``batch-processor``."""
    last = shell_blocks(README)[0].strip().split("&&")[-1]
    words = shlex.split(last)
    assert words[0] == ".venv/bin/batch-processor", last
    return words[1:]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """One command from a fresh folder at 80 columns, piped, nothing of ours in the env."""
    return run_cli(*args, env={"COLUMNS": "80", **env}, cwd=cwd)


@pytest.mark.timeout(120)  # six processes, each its own embedded server: slow under load
def test_the_readme_demo_and_its_next_steps_run_from_a_fresh_folder(tmp_path: Path) -> None:
    """The demo, then every next step with no flags: exit 0, the demo's data, 80 columns."""
    demo = run(the_demo(), tmp_path, BATCH_PROCESSOR_LOG_FORMAT="json")
    assert demo.returncode == 0, demo.stderr
    events = [json.loads(line) for line in demo.stderr.splitlines() if line.startswith("{")]
    assert "embedded SecantusDB" in events[0]["event"]
    summary = next(e for e in events if e["event"] == "run finished")
    assert summary["processed"] == 500 and summary["failed_by_category"] == {"DATA": 5}
    assert "batch-processor report\n" in demo.stdout  # the next steps, ready to paste

    outputs = {}
    for args in next_steps():
        done = run(args, tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, args
        assert done.stdout or done.stderr, args  # export -o says where it wrote, on stderr
        assert all(len(line) <= 80 for line in done.stdout.splitlines()), (args, done.stdout)
        assert "None" not in done.stdout and "{'" not in done.stdout, (args, done.stdout)
        outputs[" ".join(args[:2])] = done.stdout

    assert re.search(r"│ results\s+│ 495\s+│", outputs["report"]), outputs["report"]
    status = outputs["status"]
    assert re.search(r"│ done\s+│ 495\s+│", status) and re.search(r"│ pending\s+│ 0\s+│", status)
    assert re.search(r"│ \S+\s+│ ended\s+│.*│ 500\s+│", status), status  # the demo's worker
    assert outputs["queue list"].startswith("empty")
    assert re.search(r"│ would take\s+│ 0\s+│", outputs["run --dry-run"])
    with (tmp_path / "results.csv").open(newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert len(rows) == 495 and all(row["sentiment"] for row in rows)
