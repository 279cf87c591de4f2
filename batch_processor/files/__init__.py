"""The worker's batch directory: the only code that reads or writes it.

- :mod:`.atomic`: durable writes (write, fsync, rename), the directory lock, temp-file sweeps;
- :mod:`.batch_files`: every claimed page, saved before any of it is classified;
- :mod:`.journal`: paid results kept beside their batch file until stored;
- :mod:`.checkpoints`: the job's progress; :mod:`.retry_queues`: the classify, store and
  dead-letter queues; :mod:`.identity`: the worker id;
- :mod:`.provider_batches`: the Batch API route's cache (request and result files).

Every file carries checksums: torn writes and flipped bits are detected, never read as data.
"""
