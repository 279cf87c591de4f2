"""``--dry-run``: what a run would take and cost, from the actual texts; nothing is written.

It counts the pending documents the run would take (the source filter and ``--limit``
applied), reads a sample of them (the first ``sample_size`` in the order a run claims them),
extracts each text as a run would, and estimates the prompt tokens of each request and the cost
at the configured model's price: a typical reply for the estimate, the reply limit for the
upper bound. Texts a run would fail (a wrong ``--text-field``) are counted by reason. No claim,
index, batch file or checkpoint is made.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batch_processor.classifiers import load_taxonomy
from batch_processor.documents.text import extract_text
from batch_processor.errors import DataError
from batch_processor.llm.cost import TYPICAL_REPLY_TOKENS, price_for
from batch_processor.llm.messages import prompt_estimate
from batch_processor.models import ModelPrice, TokenUsage
from batch_processor.plain_ids import plain_id
from batch_processor.service.runner import open_store
from batch_processor.settings import Settings

SHOWN_TEXTS = 3


@dataclass(slots=True)
class Preview:
    """What a run would take, and what it would cost with the LLM classifier."""

    source: str
    classifier: str
    model: str
    exists: bool = True
    pending: int = 0
    would_take: int = 0
    sampled: int = 0
    data_problems: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    text_chars: int = 0  # of the sample's usable texts
    prompt_tokens: int = 0  # of the sample's requests
    price: ModelPrice | None = None
    budget_usd: float | None = None
    route: str = "online"
    route_min_docs: int = 0
    #: The share of documents the LLM sees (the cascade's ``cascade_llm_share``; else all).
    llm_share: float = 1.0
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Sampled documents with a usable text."""
        return self.sampled - sum(self.data_problems.values())

    def estimate(self, reply_tokens: int) -> TokenUsage:
        """Tokens of the whole run, scaled from the sample (replies of ``reply_tokens``)."""
        if not self.usable:
            return TokenUsage()
        share = self.usable / self.sampled
        documents = self.would_take * share * self.llm_share
        prompt = self.prompt_tokens / self.usable
        return TokenUsage(
            input_tokens=round(prompt * documents), output_tokens=round(reply_tokens * documents)
        )

    def _route(self) -> str:
        """Which route the run would take (``auto`` decides by the backlog)."""
        if self.route != "auto":
            return self.route
        chosen = "batch" if self.pending >= self.route_min_docs else "online"
        return f"auto: {chosen} ({self.pending} pending, threshold {self.route_min_docs})"

    def summary(self, max_reply_tokens: int) -> dict[str, Any]:
        """Everything as plain values (the table, ``--json`` and the log)."""
        typical = self.estimate(TYPICAL_REPLY_TOKENS)
        worst = self.estimate(max_reply_tokens)
        cost = self.price.cost(typical) if self.price else None
        data: dict[str, Any] = {
            "source": self.source,
            "classifier": self.classifier,
            "pending": self.pending,
            "would_take": self.would_take,
            "sampled": self.sampled,
            "would_fail_in_sample": dict(self.data_problems),
            "truncated_in_sample": self.truncated,
            "mean_text_chars": round(self.text_chars / self.usable) if self.usable else 0,
            "llm_model": self.model,
            **({"cascade_llm_share": self.llm_share} if self.classifier == "cascade" else {}),
            "llm_input_tokens": typical.input_tokens,
            "llm_output_tokens": typical.output_tokens,
            "llm_cost_usd": round(cost, 6) if cost is not None else None,
            "llm_cost_max_usd": round(self.price.cost(worst), 6) if self.price else None,
            "llm_cost_batch_route_usd": (
                round(self.price.cost(typical, batch=True), 6) if self.price else None
            ),
            "llm_route": self._route(),
            "budget_usd": self.budget_usd,
        }
        if self.classifier == "offline":
            # Nothing here is spent by this run: the LLM figures say what an LLM run would
            # cost, and are labelled so.
            data = {key: value for key, value in data.items() if not key.startswith("llm_")}
            data["cost_usd"] = 0.0
            data["an_llm_run_would_cost_usd"] = round(cost, 6) if cost is not None else None
            data["an_llm_run_would_cost_at_most_usd"] = (
                round(self.price.cost(worst), 6) if self.price else None
            )
            data["llm_model_priced"] = self.model
            data["budget_usd"] = self.budget_usd
        if not self.exists:
            data["problem"] = "the source collection does not exist"
        elif self.price is None:
            data["problem"] = f"no price known for {self.model}: add it to llm_prices"
        if cost and self.budget_usd is not None and cost > self.budget_usd:
            data["budget_covers_documents"] = int(self.would_take * self.budget_usd / cost)
        return data


async def preview(settings: Settings, *, sample_size: int = 500) -> Preview:
    """Count, sample and estimate the run ``settings`` describe (see the module docstring)."""
    taxonomy = load_taxonomy(settings.taxonomy_file)
    result = Preview(
        source=f"{settings.database}.{settings.source_collection}",
        classifier=settings.classifier.value,
        model=settings.llm_model,
        price=price_for(settings.llm_model, settings.llm_prices),
        budget_usd=settings.budget_usd,
        route=settings.llm_route.value,
        route_min_docs=settings.batch_route_min_docs,
        llm_share=settings.cascade_llm_share if settings.classifier == "cascade" else 1.0,
    )
    async with open_store(settings) as store:
        presence = await store.source_presence()
        if not presence.exists:
            result.exists = False
            return result
        await store.source.check_filter()
        result.pending = await store.source.count_pending()
        result.would_take = min(result.pending, settings.limit or result.pending)
        cursor = store.source.page_cursor(min(sample_size, result.would_take) or 1)
        try:
            sample = await cursor.next_page() if result.would_take else []
        finally:
            await cursor.close()
    roles = settings.roles
    for doc in sample[: result.would_take]:
        result.sampled += 1
        try:
            if doc.problem is not None:
                raise DataError(doc.problem)
            text = extract_text(doc, settings.text_field, settings.max_text_chars, roles)
        except DataError as exc:
            result.data_problems[exc.message] += 1
            continue
        result.truncated += text.truncated
        result.text_chars += text.conversation.chars
        result.prompt_tokens += prompt_estimate(taxonomy, text.conversation, doc.fields)
        if len(result.examples) < SHOWN_TEXTS:
            result.examples.append((plain_id(doc.id), text.text[:300]))
    return result
