"""The LLM classifier: the only code that imports the openai SDK (loaded on demand).

- :mod:`.client`: :class:`~.client.LLMClassifier`, one request per conversation, strict JSON
  schema with fallbacks; :mod:`.endpoint`: one request (budget reservation, governor, output
  mode step-down, the client); :mod:`.sdk`: the SDK's calls; :mod:`.messages`: the prompt;
- :mod:`.reply` and :mod:`.repair`: reading a reply, near misses repaired, the rest refused;
- :mod:`.errors`: the SDK's errors translated into :mod:`batch_processor.errors`;
- :mod:`.governor`: RPM/TPM pacing from the provider's headers and an adaptive window;
- :mod:`.cost`: prices and the budget ledger (integer nano-dollars); :mod:`.dedupe`: identical
  texts classified once; :mod:`.batch_api`: the provider's Batch API (files and batches).
"""
