"""What a long-running process needs beside its work: signals, health, metrics, logs, the fleet.

- :mod:`.shutdown`: the stop switch (SIGTERM/SIGINT; a second signal stops at once; the
  backstop that ends a stop overrunning its grace);
- :mod:`.health`: ``/healthz``, ``/readyz`` and ``/metrics`` on aiohttp, behind an admission
  layer no client can starve; :mod:`.metrics`: the Prometheus view; :mod:`.telemetry`: the
  counters they read;
- :mod:`.fleet`: the lease keeper (renewals, takeovers of dead workers' leases, heartbeats);
- :mod:`.notify`: systemd notifications; :mod:`.logs`: structured logging; :mod:`.progress`:
  the progress bar; :mod:`.schedule`: cron; :mod:`.embedded`: the SecantusDB the demo starts.

Composition (which of these a run gets, from the settings) is :mod:`batch_processor.service`'s.
"""
