"""The Batch API route on in-memory fakes: slices, resuming, takeovers, answers, budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from batch_processor.files.provider_batches import SliceFiles
from batch_processor.models import SourceDocument, utcnow
from batch_processor.outage import Availability, DatabaseCalls
from batch_processor.retry import RetryPolicy
from batch_processor.route import AnswerReader, BatchRoute, RouteOptions, RouteStats, SliceBuilder
from batch_processor.service.jobs import job_outcomes
from batch_processor.settings import Route
from batch_processor.slice_record import Stage
from batch_processor.testing.fakes import InstantSleep, MemorySink, MemorySource, documents
from batch_processor.testing.route_fakes import BatchLLM, MemoryProvider, MemorySlices
from tests.unit.conftest import DEFAULTS, Rig


class Killed(BaseException):
    """The worker dies here (nothing catches it, as nothing catches a SIGKILL)."""


@dataclass
class Clock:
    """Real time, sleeps that return at once after running ``on_sleep``."""

    on_sleep: Callable[[], None] = lambda: None
    slept: list[float] = field(default_factory=list)

    def now(self) -> datetime:
        """Now."""
        return utcnow()

    async def sleep(self, seconds: float) -> None:
        """Record, run the hook, return."""
        self.slept.append(seconds)
        self.on_sleep()


@dataclass
class World:
    """What every route of a test shares: the source, the records, the provider, the LLM."""

    source: MemorySource
    slices: MemorySlices = field(default_factory=MemorySlices)
    provider: MemoryProvider = field(default_factory=MemoryProvider)
    llm: BatchLLM = field(default_factory=BatchLLM)
    stopped: bool = False

    def route(
        self,
        directory: Path,
        worker: str = "w1/batch-route",
        clock: Clock | None = None,
        **options: object,
    ) -> BatchRoute:
        """A route of one worker (its own batch directory), on the shared world."""
        values: dict[str, object] = {
            "route": Route.BATCH, "min_docs": 1, "max_requests": 50_000, "max_bytes": 10**8,
            "window": "24h", "poll_seconds": 1.0, "poll_max_seconds": 1.0,
            "doc_lease": timedelta(hours=25), "lease": timedelta(seconds=60),
            "concurrent": 4, "online_high_priority": False,
        }  # fmt: skip
        opts = RouteOptions(**(values | options))  # type: ignore[arg-type]
        sleep = InstantSleep()
        policy = RetryPolicy(max_attempts=3, base_delay=0.5, sleep=sleep)
        db = DatabaseCalls(patient=policy, brief=policy, availability=Availability("mongodb"))
        outcomes = job_outcomes(DEFAULTS, "job-r", self.llm)
        stats = RouteStats()
        sink = MemorySink(self.source)
        return BatchRoute(
            options=opts, source=self.source, slices=self.slices, provider=self.provider,
            files=SliceFiles(directory),
            builder=SliceBuilder(options=opts, source=self.source, llm=self.llm, cache=None,
                                 outcomes=outcomes, db=db, worker_id=worker),
            answers=AnswerReader(source=self.source, sink=sink, llm=self.llm, cache=None,
                                 outcomes=outcomes, db=db, classify_policy=policy, concurrent=4,
                                 stats=stats),
            stats=stats, worker_id=worker, job_id="job-r", db=db,
            clock=clock or Clock(on_sleep=self.provider.complete), stopped=lambda: self.stopped,
        )  # fmt: skip


def world(count: int = 20) -> World:
    """A world of ``count`` pending documents with distinct texts."""
    return World(MemorySource(documents(count)))


async def run(route: BatchRoute) -> None:
    """What a batch run does with the route: resume, submit the backlog, finish it all."""
    slices = await route.resume()
    if await route.backlog_wanted():
        slices += await route.submit_backlog()
    await route.finish(slices)
    await route.finish(await route.watched())
    await route.clean_orphans()


async def test_a_backlog_is_one_batch_and_every_document_ends_done(tmp_path: Path) -> None:
    """20 documents: one upload, one batch, 20 results; the record finished, files deleted."""
    w = world(20)
    route = w.route(tmp_path)
    await run(route)

    assert w.source.count("done") == 20
    assert (w.provider.uploads, w.provider.created) == (1, 1)
    assert w.provider.kept == {}  # request, output and error files deleted
    assert [r.stage for r in w.slices.records.values()] == [Stage.FINISHED]
    assert route.stats.stored_from_batch == 20 and route.stats.requests == 20
    assert SliceFiles(tmp_path).cached() == []


async def test_a_text_that_cannot_be_read_fails_at_claim_and_is_never_sent(
    tmp_path: Path,
) -> None:
    """Twelve documents and an empty one: twelve request lines, one DATA failure."""
    docs = [*documents(12), SourceDocument(id="empty", fields={"messages": ""})]
    w = World(MemorySource(docs))
    route = w.route(tmp_path)
    await run(route)

    assert route.stats.requests == 12 and dict(route.stats.failed) == {"DATA": 1}
    assert w.source.count("done") == 12 and w.source.status("empty") == "failed"


async def test_a_failure_has_the_same_reason_on_both_routes(tmp_path: Path) -> None:
    """One outcome path: an empty text fails with the same stored reason online and in a batch."""
    empty = SourceDocument(id="empty", fields={"messages": "   "})
    w = World(MemorySource([empty]))
    await run(w.route(tmp_path / "route"))
    rig = Rig(tmp_path / "online", source=MemorySource([empty]))
    await rig.pipeline().run()

    by_route = w.source.states["empty"].error
    online = rig.source.states["empty"].error
    assert by_route is not None and by_route == online


async def test_failed_and_expired_lines_are_classified_online(tmp_path: Path) -> None:
    """Half the lines expire and two fail: those documents are classified online, none lost."""
    w = world(20)
    route = w.route(tmp_path)
    w.provider.complete = lambda **_: MemoryProvider.complete(  # type: ignore[method-assign]
        w.provider, expired_share=0.5, failing=["d0000", "d0001"]
    )
    route = w.route(tmp_path)
    await run(route)

    assert w.source.count("done") == 20
    assert len(w.llm.online_calls) == 12  # 10 expired + 2 failed
    assert route.stats.stored_from_batch == 8 and route.stats.stored_online == 12


async def test_a_budget_sends_only_what_it_covers(tmp_path: Path) -> None:
    """A budget of 7 requests: 7 documents sent, the rest pending, nothing claimed."""
    w = world(20)
    w.llm.budget = 7 * w.llm.price
    route = w.route(tmp_path)
    await run(route)

    assert w.source.count("done") == 7 and w.source.count(None) == 13
    assert w.source.count("claimed") == 0
    assert route.budget_reached and w.llm.reserved == 0


@pytest.mark.parametrize("dies_at", ["upload", "create", "poll"])
async def test_a_dead_workers_slice_is_finished_by_another_without_its_files(
    dies_at: str, tmp_path: Path
) -> None:
    """A worker dies at a step; another, with an empty directory, finishes the same batch."""
    w = world(15)
    # Stops at its first wait between polls, its batch unfinished: the slice stays submitted.
    stops = Clock(on_sleep=lambda: setattr(w, "stopped", True))
    first = w.route(tmp_path / "first", worker="w1/batch-route", clock=stops)
    if dies_at == "poll":
        await first.finish(await first.submit_backlog())
        w.stopped = False
    else:
        w.provider.fail_next[dies_at] = Killed()
        with pytest.raises(Killed):
            await first.submit_backlog()
    for record in w.slices.records.values():  # its lease runs out
        record.lease_until = utcnow() - timedelta(seconds=1)
    second = w.route(tmp_path / "second", worker="w2/batch-route")
    await run(second)

    assert second.stats.slices_taken_over == 1
    assert w.source.count("done") == 15 and w.source.count("claimed") == 0
    assert w.provider.created == 1 and w.provider.uploads == 1
    assert w.provider.kept == {}
    (record,) = w.slices.records.values()
    assert record.stage is Stage.FINISHED and record.taken_from == ["w1/batch-route"]


async def test_a_live_workers_slice_is_left_to_it(tmp_path: Path) -> None:
    """A slice whose owner keeps its lease is not taken by a second worker."""
    w = world(5)
    first = w.route(tmp_path / "first", worker="w1/batch-route")
    await first.submit_backlog()

    def first_renews() -> None:
        for record in w.slices.records.values():
            record.lease_until = utcnow() + timedelta(seconds=60)

    second = w.route(tmp_path / "second", worker="w2/batch-route", clock=Clock(first_renews))
    await run(second)

    assert second.stats.slices_taken_over == 0
    (record,) = w.slices.records.values()
    assert record.owner == "w1/batch-route" and record.stage is Stage.SUBMITTED


async def test_an_orphan_batch_of_this_installation_is_cancelled_and_deleted(
    tmp_path: Path,
) -> None:
    """A batch naming a slice no record holds: cancelled, its file deleted; others untouched."""
    w = world(0)
    ours_file, their_file = w.provider.keep("x.jsonl", b"{}"), w.provider.keep("y.jsonl", b"{}")
    ours = await w.provider.create(ours_file, {"bp_slice": "gone", "bp_installation": "install-1"})
    theirs = await w.provider.create(their_file, {"bp_slice": "gone", "bp_installation": "other"})
    route = w.route(tmp_path)
    await run(route)

    assert w.provider.made[ours.id].status == "cancelled"
    assert w.provider.made[theirs.id].status == "in_progress"
    assert [name for name, _ in w.provider.kept.values()] == ["y.jsonl"]
    assert route.stats.orphans_cleaned == 1


async def test_the_owner_renews_its_slices_leases_while_it_works(tmp_path: Path) -> None:
    """keep_leases renews a held slice's lease every third of it, until a stop."""
    w = world(5)
    stops = Clock(on_sleep=lambda: setattr(w, "stopped", True))
    route = w.route(tmp_path, clock=stops)
    await route.submit_backlog()
    (record,) = w.slices.records.values()
    record.lease_until = utcnow()  # about to lapse

    await route.keep_leases()

    assert stops.slept == [20.0]  # a third of the 60 s lease
    assert record.lease_until - utcnow() > timedelta(seconds=50)
