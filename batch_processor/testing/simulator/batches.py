"""The simulator's Batch API: ``/v1/files`` and ``/v1/batches``, as OpenAI serves them.

A batch moves from ``validating`` to ``in_progress`` to ``completed`` on the simulator's clock,
``batch_delay`` seconds after it was created (the 24 h window, compressed). Its lines are
answered then, all at once, by the same replies (and faults: near misses, malformed JSON) as
the chat-completions endpoint. A batch whose delay exceeds ``batch_window`` expires at the
window's end with the share of lines the window allowed: the rest land in the error file as
``batch_expired``. ``batch_failed_line_rate`` fails lines with a 500 in the error file, and
``batch_invalid`` fails every new batch's validation. State is in memory: it survives the
client's crashes, as a provider's does, and not the simulator's own restart.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batch_processor.testing.simulator import replies

if TYPE_CHECKING:
    from batch_processor.testing.simulator.server import Simulator

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(slots=True)
class StoredFile:
    """An uploaded or produced file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def view(self) -> dict[str, Any]:
        """The file object of the API."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(slots=True)
class SimBatch:
    """One batch and its progress on the simulator's clock."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created: float  # monotonic
    created_at: int
    status: str = "validating"
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    ended_at: int | None = None

    def view(self) -> dict[str, Any]:
        """The batch object of the API."""
        ended = self.ended_at
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.created_at if self.status != "validating" else None,
            "expires_at": self.created_at + 86_400,
            "completed_at": ended if self.status == "completed" else None,
            "failed_at": ended if self.status == "failed" else None,
            "expired_at": ended if self.status == "expired" else None,
            "cancelled_at": ended if self.status == "cancelled" else None,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


class BatchAPI:
    """Files and batches of one simulator (see the module docstring)."""

    def __init__(self, simulator: Simulator) -> None:
        self._sim = simulator
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self.stats: Counter[str] = Counter()

    def route(self, app: web.Application) -> None:
        """Add the endpoints to ``app``."""
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files", self._list_files)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_delete("/v1/files/{id}", self._delete_file)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    # -- files ----------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField):
            return _error(400, "invalid_request_error", "'file' is required")
        content = upload.file.read()
        if len(content) > self._sim.config.batch_max_bytes:
            return _error(400, "invalid_request_error", "file too large for purpose 'batch'")
        stored = self._store(upload.filename or "upload.jsonl", purpose, content)
        self.stats["uploads"] += 1
        return web.json_response(stored.view())

    async def _list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        data = [f.view() for f in self.files.values() if purpose in (None, f.purpose)]
        return web.json_response({"object": "list", "data": data[::-1], "has_more": False})

    async def _file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        return web.json_response(stored.view()) if stored else _missing("file")

    async def _delete_file(self, request: web.Request) -> web.Response:
        stored = self.files.pop(request.match_info["id"], None)
        if stored is None:
            return _missing("file")
        self.stats["deleted_files"] += 1
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    async def _content(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["id"])
        if stored is None:
            return _missing("file")
        return web.Response(body=stored.content, content_type="application/octet-stream")

    # -- batches --------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        source = self.files.get(str(body.get("input_file_id")))
        if source is None:
            return _missing("file")
        batch = SimBatch(
            id=f"batch_{secrets.token_hex(12)}",
            input_file_id=source.id,
            endpoint=str(body.get("endpoint")),
            completion_window=str(body.get("completion_window", "24h")),
            metadata=body.get("metadata"),
            created=time.monotonic(),
            created_at=int(time.time()),
        )
        self.batches[batch.id] = batch
        self.stats["batches_created"] += 1
        return web.json_response(batch.view())

    async def _list_batches(self, request: web.Request) -> web.Response:
        ordered = list(self.batches.values())[::-1]  # newest first
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = ordered[:limit]
        for batch in page:
            self._advance(batch)
        return web.json_response(
            {
                "object": "list",
                "data": [b.view() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(ordered) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _missing("batch")
        self.stats["retrieves"] += 1
        self._advance(batch)
        return web.json_response(batch.view())

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _missing("batch")
        self._advance(batch)
        if batch.status not in TERMINAL:
            self._finish(batch, share=0.0, status="cancelled")
        return web.json_response(batch.view())

    # -- progress -------------------------------------------------------------------------

    def _advance(self, batch: SimBatch) -> None:
        """Move ``batch`` along the simulator's clock."""
        if batch.status in TERMINAL:
            return
        config = self._sim.config
        age = time.monotonic() - batch.created
        lines = self._lines(batch)
        if lines is None:
            return
        batch.counts["total"] = len(lines)
        if batch.status == "validating":
            batch.status = "in_progress"
        if age >= config.batch_window and config.batch_delay > config.batch_window:
            self._finish(batch, share=config.batch_window / config.batch_delay, status="expired")
        elif age >= config.batch_delay:
            self._finish(batch, share=1.0, status="completed")

    def _lines(self, batch: SimBatch) -> list[dict[str, Any]] | None:
        """The batch's request lines, or None after failing its validation."""
        config = self._sim.config
        source = self.files.get(batch.input_file_id)
        problems: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        if source is None:
            problems.append({"code": "file_not_found", "message": "input file deleted"})
        else:
            seen: set[str] = set()
            for number, raw in enumerate(source.content.splitlines(), 1):
                try:
                    line = json.loads(raw)
                    custom_id = str(line["custom_id"])
                    if line.get("url") != batch.endpoint or custom_id in seen:
                        raise ValueError("url or custom_id")
                except (ValueError, KeyError, TypeError):
                    problem = {"code": "invalid_request", "message": "bad line", "line": number}
                    problems.append(problem)
                    continue
                seen.add(custom_id)
                lines.append(line)
            if len(lines) > config.batch_max_requests:
                problems.append({"code": "too_many_requests", "message": "over the line limit"})
        if config.batch_invalid:
            problems.append({"code": "invalid_batch", "message": "validation failed (simulated)"})
        if problems:
            batch.errors = problems
            batch.status, batch.ended_at = "failed", int(time.time())
            self.stats["batches_failed"] += 1
            return None
        return lines

    def _finish(self, batch: SimBatch, *, share: float, status: str) -> None:
        """Answer the first ``share`` of the lines; the rest expire (or are cancelled)."""
        lines = self._lines(batch) or []
        done = int(len(lines) * share)
        output: list[str] = []
        failed: list[str] = []
        for index, line in enumerate(lines):
            custom_id = line["custom_id"]
            if index >= done:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                failed.append(_line(custom_id, None, {"code": code, "message": "not run"}))
            elif self._sim.chance(self._sim.config.batch_failed_line_rate):
                body = {"error": {"message": "The server had an error (simulated).", "code": None}}
                failed.append(_line(custom_id, {"status_code": 500, "body": body}, None))
            else:
                request = line.get("body") or {}
                body = self._sim.completion(request, replies.prompt_tokens(request))
                output.append(_line(custom_id, {"status_code": 200, "body": body}, None))
        if output:
            batch.output_file_id = self._store(
                f"{batch.id}_output.jsonl", "batch_output", "".join(output).encode()
            ).id
        if failed:
            batch.error_file_id = self._store(
                f"{batch.id}_error.jsonl", "batch_output", "".join(failed).encode()
            ).id
        batch.counts = {"total": len(lines), "completed": len(output), "failed": len(failed)}
        batch.status, batch.ended_at = status, int(time.time())
        self.stats[f"batches_{status}"] += 1
        self.stats["lines_answered"] += len(output)
        self.stats["batch_lines"] += len(lines)

    def _store(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(f"file-{secrets.token_hex(12)}", filename, purpose, content)
        self.files[stored.id] = stored
        return stored


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> str:
    request_id = f"req_{secrets.token_hex(8)}"
    if response is not None:
        response = {**response, "request_id": request_id}
    record = {"id": f"batch_req_{secrets.token_hex(8)}", "custom_id": custom_id}
    return json.dumps(record | {"response": response, "error": error}) + "\n"


def _missing(kind: str) -> web.Response:
    return _error(404, "not_found", f"No such {kind}")


def _error(status: int, code: str, message: str) -> web.Response:
    error = {"message": message, "type": code, "param": None, "code": code}
    return web.json_response({"error": error}, status=status)
