"""Unit-test tools: a pipeline on in-memory fakes, a temporary batch directory, no sleeping."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.outage import Availability, DatabaseCalls
from batch_processor.pipeline.core import Pipeline
from batch_processor.retry import RetryPolicy
from batch_processor.service.jobs import job_outcomes, pipeline_options
from batch_processor.settings import Settings
from batch_processor.testing.fakes import (
    InstantSleep,
    MemorySink,
    MemorySource,
    ScriptedClassifier,
    documents,
)

#: The pipeline options of the default settings.
DEFAULTS = pipeline_options(Settings.model_construct())


@dataclass
class Rig:
    """A pipeline's collaborators, all in memory or in a temporary directory."""

    batch_dir: Path
    source: MemorySource = field(default_factory=MemorySource)
    classifier: ScriptedClassifier = field(default_factory=ScriptedClassifier)
    sleep: InstantSleep = field(default_factory=InstantSleep)

    def __post_init__(self) -> None:
        """Derive the sink and the file stores."""
        self.sink = MemorySink(self.source)
        self.files = BatchFiles(self.batch_dir / "batches")
        self.checkpoints = CheckpointStore(self.batch_dir)
        self.queues = RetryQueues(self.batch_dir)

    def pipeline(self, job_id: str = "job-1", **options: Any) -> Pipeline:
        """A pipeline over the fakes; ``options`` override PipelineOptions' defaults."""
        defaults: dict[str, Any] = {"batch_size": 10, "concurrent": 4, "flush_interval": 0.01}
        policy = RetryPolicy(max_attempts=3, base_delay=0.5, sleep=self.sleep)
        patient = RetryPolicy(max_attempts=None, give_up_after=None, sleep=self.sleep)
        db = DatabaseCalls(patient=patient, brief=policy, availability=Availability("mongodb"))
        chosen = replace(pipeline_options(Settings.model_construct()), **{**defaults, **options})
        return Pipeline(
            source=self.source,
            sink=self.sink,
            classifier=self.classifier,
            batch_files=self.files,
            checkpoints=self.checkpoints,
            queues=self.queues,
            outcomes=job_outcomes(chosen, job_id, self.classifier),
            worker_id="worker-a",
            options=chosen,
            classify_policy=policy,
            db=db,
            sleep=_never,  # the periodic queue drain does not fire within a unit test
        )


async def _never(_seconds: float) -> None:
    """A sleep that lasts until it is cancelled."""
    await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def _in_process_and_no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that really sleeps or starts a process fails (``tests/`` has those).

    Time is injected here (``InstantSleep``, fake clocks); MongoDB and workers are fakes.
    """

    def no_process(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a unit test started a process: it belongs in tests/, not unit/")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_process)
    yielding = asyncio.sleep

    async def guarded(delay: float, result: Any = None) -> Any:
        if delay > 0:
            raise AssertionError(f"a unit test slept {delay} s: inject the sleep instead")
        return await yielding(0, result)

    def guarded_sync(delay: float) -> None:
        raise AssertionError(f"a unit test slept {delay} s (time.sleep)")

    monkeypatch.setattr(asyncio, "sleep", guarded)
    monkeypatch.setattr(time, "sleep", guarded_sync)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """A rig with 25 pending documents."""
    made = Rig(tmp_path)
    made.source.add(documents(25))
    return made
