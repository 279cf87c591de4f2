"""A document as both routes see it: where it comes from, what it says, how it ends.

- :mod:`.ports`: the ``Source`` of unprocessed documents and claims, the ``Sink`` for results
  (MongoDB implements them, :mod:`batch_processor.testing.fakes` in memory);
- :mod:`.text`: the conversation read out of a document, or precisely why there is none;
- :mod:`.outcomes`: the one builder of result and failure records, and their fenced bulk store,
  for the online pipeline and the Batch API route alike.
"""
