"""The plain asyncio script a user would write: a semaphore, tenacity, AsyncOpenAI, PyMongo.

It reads every unclassified document, classifies all of them at once under a semaphore of
``--concurrent``, retries each call with tenacity as the OpenAI cookbook's "How to handle rate
limits" does (``wait_random_exponential(min=1, max=60)``, 6 attempts), and stores
each result with ``insert_one`` and marks its source with ``update_one``. A document whose
call still fails is logged and skipped (lost for this run). No files, no recovery.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import openai
from openai import AsyncOpenAI
from pymongo import AsyncMongoClient
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from bench.contenders.common import arguments, parse, request, text_of


async def main() -> None:
    """Classify every document that has no ``processed`` flag."""
    args = arguments(__doc__.splitlines()[0])
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.mongodb_uri)
    db = mongo[args.database]
    llm = AsyncOpenAI(api_key="sk-bench", base_url=args.llm_base_url, max_retries=0)
    semaphore = asyncio.Semaphore(args.concurrent)

    async def classify(doc: dict[str, Any]) -> None:
        async with semaphore:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type((openai.APIError, ValueError)),
                    wait=wait_random_exponential(min=1, max=60),
                    stop=stop_after_attempt(6),
                ):
                    with attempt:
                        reply = await llm.chat.completions.create(
                            **request(args.model, text_of(doc))
                        )
                        result = parse(reply.choices[0].message.content)
            except Exception as exc:  # noqa: BLE001 - the script logs and moves on
                print(f"failed {doc['_id']}: {exc!r}", file=sys.stderr)
                return
        await db.sentimental_analysis.insert_one({"source_id": doc["_id"], **result})
        await db.conversation_set.update_one({"_id": doc["_id"]}, {"$set": {"processed": True}})

    docs = await db.conversation_set.find({"processed": {"$ne": True}}).to_list()
    await asyncio.gather(*(classify(doc) for doc in docs))
    await llm.close()
    await mongo.close()


if __name__ == "__main__":
    asyncio.run(main())
