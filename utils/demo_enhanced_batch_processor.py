#!/usr/bin/env python3
"""Demo script of the design documents: seed sample conversations, then classify them.

Takes the same options as ``batch-processor demo`` (``--count``, ``--mongodb-uri``,
``--batch-size``, ``--concurrent``, ...). With no ``--mongodb-uri`` it uses the embedded server.
"""

from __future__ import annotations

import sys

from batch_processor.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
