"""Seed 002's design taken literally: pages of 10, 5 calls at a time, a barrier per batch.

``BatchProcessor(batch_size=10, max_concurrent=5, max_retries=3)``: fetch the next 10
unprocessed documents after the last ``_id`` (cursor-based pagination), save the batch to a
local file, classify them under a semaphore of 5 with ``asyncio.gather`` (the next batch starts
when the slowest call of this one ends), retry each call up to 3 times with exponential backoff
from 1 s, then per document ``store_classification`` (``insert_one``) and ``mark_as_processed``
(``update_one``): two round trips per document. A checkpoint file every 50 documents; a call
that still fails goes to a retry-queue file.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI
from pymongo import AsyncMongoClient

from bench.contenders.common import arguments, parse, request, text_of

BATCH_SIZE, MAX_CONCURRENT, MAX_RETRIES, DELAY_BASE, CHECKPOINT_INTERVAL = 10, 5, 3, 1.0, 50


async def main() -> None:  # noqa: C901 - the seed's one method, transcribed
    """Process batches until none is left."""
    args = arguments(__doc__.splitlines()[0])
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.mongodb_uri)
    db = mongo[args.database]
    llm = AsyncOpenAI(api_key="sk-bench", base_url=args.llm_base_url, max_retries=0)
    semaphore = asyncio.Semaphore(MAX_CONCURRENT)
    batch_dir = Path(tempfile.mkdtemp(prefix="seed002-"))
    processed, last_id, batch_number = 0, None, 0

    async def call(doc: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                reply = await llm.chat.completions.create(**request(args.model, text_of(doc)))
                return parse(reply.choices[0].message.content)
            except (openai.APIError, ValueError):
                if attempt == MAX_RETRIES:
                    raise
                await asyncio.sleep(DELAY_BASE * 2**attempt)
        raise AssertionError("unreachable")

    async def process(doc: dict[str, Any]) -> None:
        nonlocal processed
        async with semaphore:
            try:
                result = await call(doc)
            except Exception as exc:  # noqa: BLE001 - to the retry queue, as the seed does
                with (batch_dir / "retry_queue.jsonl").open("a") as queue:
                    queue.write(json.dumps({"id": str(doc["_id"]), "error": repr(exc)}) + "\n")
                return
            await db.sentimental_analysis.insert_one({"source_id": doc["_id"], **result})
            await db.conversation_set.update_one({"_id": doc["_id"]}, {"$set": {"processed": True}})
            processed += 1
            if processed % CHECKPOINT_INTERVAL == 0:
                checkpoint = {"processed": processed, "last_id": str(last_id)}
                (batch_dir / "checkpoint.json").write_text(json.dumps(checkpoint))

    while True:
        query: dict[str, Any] = {"processed": {"$ne": True}}
        if last_id is not None:
            query["_id"] = {"$gt": last_id}
        batch = await db.conversation_set.find(query).sort("_id", 1).limit(BATCH_SIZE).to_list()
        if not batch:
            break
        batch_number += 1
        (batch_dir / f"batch_{batch_number}.json").write_text(
            json.dumps([{**doc, "_id": str(doc["_id"])} for doc in batch], default=str)
        )
        await asyncio.gather(*(process(doc) for doc in batch))
        last_id = batch[-1]["_id"]
    await llm.close()
    await mongo.close()


if __name__ == "__main__":
    asyncio.run(main())
