"""The one processing loop: pages in, one validated result per document out.

:mod:`.core` wires the parts and runs them in one ``TaskGroup``: :mod:`.producer` pages and
claims (in priority order, :mod:`.priorities`; under the in-flight bound, :mod:`.admission`),
:mod:`.task` classifies each document, :mod:`.writer` stores outcomes in bulk,
:mod:`.bookkeeping` and :mod:`.tracker` settle each document once, :mod:`.drain` works the
retry queues and :mod:`.recovery` finishes a crashed job's batch files. :mod:`.outcomes` builds
and stores every result and failure record (for the Batch API route too).

It sees MongoDB, the classifier and metrics only through :mod:`.ports`' protocols.
"""
