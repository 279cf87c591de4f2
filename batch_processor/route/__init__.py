"""The Batch API route: a backlog sent to the provider as batches, at half the price.

``--llm-route batch`` sends the pending documents to the provider's Batch API; ``auto`` does so
when the backlog reaches ``batch_route_min_docs`` and the endpoint serves the Batch API,
leaving high-priority documents (and, in continuous mode, what arrives meanwhile) to the
online route. A slice of at most ``batch_route_max_requests`` documents and
``batch_route_max_mb`` of requests is one provider batch, recorded in MongoDB at each step
so that any worker can finish it.

- :mod:`.lifecycle`: the steps and the leases (:class:`BatchRoute`);
- :mod:`.takeover`: which unfinished slices a worker goes on with (its own, dead workers');
- :mod:`.building`: claiming and sorting a slice's documents, the request lines;
- :mod:`.polling`: waiting for a batch to end, fetching its result files;
- :mod:`.answers`: storing what the batch answered, classifying the rest online;
- :mod:`.orphans`: provider batches and files no slice holds;
- :mod:`.lines`: the request and result line formats; :mod:`.options`; :mod:`.ports`.

Documents and results go through the same outcome path as the online route
(:mod:`batch_processor.documents.outcomes`).
"""

from batch_processor.route.answers import AnswerReader
from batch_processor.route.building import SliceBuilder
from batch_processor.route.lifecycle import BatchRoute
from batch_processor.route.options import RouteOptions, RouteStats

__all__ = ["AnswerReader", "BatchRoute", "RouteOptions", "RouteStats", "SliceBuilder"]
