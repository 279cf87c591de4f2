"""Priorities, memory-bounded pages and fenced writes, on in-memory fakes."""

from __future__ import annotations

from typing import Any

from batch_processor.models import SourceDocument
from batch_processor.pipeline.control import Admission
from batch_processor.pipeline.memory import PageSizer
from batch_processor.pipeline.priorities import PriorityPass
from batch_processor.testing.fakes import MemorySource

from .conftest import Rig


def prioritised(count: int, priority: Any, prefix: str) -> list[SourceDocument]:
    """``count`` documents named ``prefix-N`` with this priority value."""
    return [
        SourceDocument(id=f"{prefix}-{i:03d}", fields={"messages": "hi", "priority": priority})
        for i in range(count)
    ]


async def read_all(pages: PriorityPass) -> list[str]:
    """The prefix of each page's first document, page by page, until the pass ends."""
    kinds = []
    while page := await pages.next_page():
        kinds.append(page[0].id.split("-")[0])
        for doc in page:  # taken: as if claimed
            pages._source.states[doc.id].status = "claimed"  # type: ignore[attr-defined]
    return kinds


async def test_lower_levels_get_every_nth_page_while_high_work_lasts() -> None:
    """With fairness 4, every 4th page comes from a lower level; strict order with 0."""
    for fairness, expected in ((4, ["high"] * 3 + ["low"] + ["high"] * 3), (0, ["high"] * 6)):
        source = MemorySource(prioritised(60, 9, "high") + prioritised(20, "low", "low"))
        pages = PriorityPass(
            source, page_size=lambda: 10, priority_field="priority", fairness=fairness,
            on_invalid=lambda _n: None, check_every=0.0,
        )  # fmt: skip
        kinds = await read_all(pages)
        assert kinds[: len(expected)] == expected
        assert len(kinds) == 8 and kinds.count("low") == 2


async def test_a_high_document_arriving_mid_pass_is_read_next() -> None:
    """A high-priority document added while normal pages are read is the very next page."""
    source = MemorySource(prioritised(50, None, "normal"))
    pages = PriorityPass(
        source, page_size=lambda: 10, priority_field="priority", fairness=0,
        on_invalid=lambda _n: None, check_every=0.0,
    )  # fmt: skip
    first = await pages.next_page()
    assert first[0].id.startswith("normal")
    source.add(prioritised(1, "HIGH", "urgent"))
    assert [doc.id for doc in await pages.next_page()] == ["urgent-000"]


async def test_pages_shrink_above_the_memory_limit_and_grow_back() -> None:
    """AIMD: halved per page above max_rss_mb, then +10 % of the batch size per page below."""
    rss = [500.0, 500.0, 500.0, 100.0, 100.0, 100.0]
    admission = Admission(220)
    sizer = PageSizer(
        batch_size=100, max_rss_mb=300, admission=admission, sample=lambda: rss.pop(0)
    )
    sizes = [sizer.next_size() for _ in range(6)]
    assert sizes == [50, 25, 12, 22, 32, 42]
    assert admission.limit == round(220 * 0.42)


async def test_results_of_a_document_taken_over_are_dropped_and_counted(rig: Rig) -> None:
    """A source whose claim changed under the worker: its result is not marked, lost_lease."""
    pipeline = rig.pipeline()
    original = rig.sink.mark_done

    async def taken_over_first(results: Any) -> set[str]:
        for result in results:
            if result.doc_id == "d0003":
                rig.source.states["d0003"].claim = "9999999999999-other-job-1"
        return await original(results)

    rig.sink.mark_done = taken_over_first  # type: ignore[method-assign]
    stats = await pipeline.run()
    assert stats.lost_lease == 1 and stats.succeeded == 24
    assert rig.source.status("d0003") == "claimed"  # left to its new owner
    assert rig.files.names() == []
