"""``python -m batch_processor``: the same as the ``batch-processor`` command."""

from batch_processor.cli import main

raise SystemExit(main())
