"""``python -m batch_processor``: the same as the ``batch-processor`` command."""

from .cli import main

raise SystemExit(main())
