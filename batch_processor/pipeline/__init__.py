"""The one processing loop: pages in, one validated result per document out.

:mod:`.core` wires the parts and runs them in one ``TaskGroup``: :mod:`.producer` pages and
claims (in priority order, :mod:`.priorities`; under the in-flight bound of :mod:`.control`),
:mod:`.task` classifies each document, :mod:`.writer` stores outcomes in bulk,
:mod:`.bookkeeping` and :mod:`.tracker` settle each document once, :mod:`.drain` works the
retry queues and :mod:`.recovery` finishes a crashed job's batch files. Result and failure
records are built and stored by :mod:`batch_processor.documents.outcomes` (for the Batch API
route too).

It sees MongoDB through :mod:`batch_processor.documents.ports`' protocols, the classifier
through ``Classifier`` and metrics through ``RunMetrics`` (:mod:`.stats`).
"""
