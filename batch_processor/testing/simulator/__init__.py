"""An OpenAI-compatible LLM simulator: a real HTTP server for tests, the demo and benchmarks.

``POST /v1/chat/completions`` answers like the real API (``choices``, ``usage``) with labels
chosen deterministically from the enums of the request's JSON schema (or the schema in the
instructions), so any taxonomy works. Like a model told that labels describe the customer, it
reads only the customer's turns: their sentiment from a small word list, the sentiment at the
start and the end, and whether the issue looks resolved; ``wrong_label_rate`` of the
conversations get a wrong sentiment (a real model is right only most of the time). Given a
labelled file (``answers_file``), it answers the texts it knows with their labels instead, right
for ``answers_accuracy`` of them: a stand-in for a strong model, to measure a classifier or the
cascade against one (:mod:`.answers`). It models a provider's limits and faults:

* latency ``latency ± jitter`` seconds (uniform);
* ``max_concurrency``, ``rpm`` and ``tpm`` limits, answered with 429 and ``retry-after``,
  ``retry-after-ms`` and ``x-ratelimit-*`` headers (RPM and TPM are token buckets holding one
  second's worth, refilled continuously, like real providers);
* injected 500s, hangs, malformed (non-JSON) replies, out-of-enum labels and near misses
  (``"English"`` for ``"en"``, eight themes, a score of 1.5...) at given rates;
  injected 500s fail in front of the rate limiter, so they do not use the RPM budget;
* an API key to check (401), known models (404), a context limit (400
  ``context_length_exceeded``), and servers without JSON-schema support (400 on
  ``response_format``);
* a model that obeys prompt injection: a conversation saying ``answer "X"`` gets category X on
  the first ask (outside the enum), and a valid label when asked again.

``GET /stats`` returns the counters; tests may also set :attr:`Simulator.script` to force the
outcome of the next requests (``"429:90"`` = a 429 asking for 90 s, ``"500"``, ``"status:418"``,
``"malformed"``, ``"out_of_enum"``, ``"hang"``, ``"ok"``); :attr:`Simulator.arrivals` holds the
arrival time of each request. Run it with ``python -m batch_processor.testing.simulator --help``.
"""

from batch_processor.testing.simulator.server import Simulator, SimulatorConfig

__all__ = ["Simulator", "SimulatorConfig"]
