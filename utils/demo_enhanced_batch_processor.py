#!/usr/bin/env python3
"""Demo script of the design documents: seed sample conversations, then classify them.

Takes the options of ``batch-processor demo`` (``--count``, ``--mongodb-uri``, ``--mode``,
``--classifier``, ``--batch-size``, ``--concurrent``, ...). With no ``--mongodb-uri`` it uses the
embedded server. ``--simulate-llm`` starts the OpenAI-compatible simulator (needs the
``[simulator]`` extra) and classifies through it with ``--classifier llm``, no key needed::

    python utils/demo_enhanced_batch_processor.py --count 300
    python utils/demo_enhanced_batch_processor.py --simulate-llm --rpm 600
    python utils/demo_enhanced_batch_processor.py --mode continuous   # Ctrl-C to stop
"""

from __future__ import annotations

import subprocess
import sys

from batch_processor.cli import main
from batch_processor.runtime.embedded import free_port


def with_simulator(args: list[str]) -> int:
    """Run the demo against a simulator process with a provider-like 200 ms latency."""
    port = free_port()
    command = [sys.executable, "-m", "batch_processor.testing.simulator", "--port", str(port)]
    simulator = subprocess.Popen([*command, "--latency", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        assert simulator.stdout is not None
        print(simulator.stdout.readline().strip())
        base_url = f"http://127.0.0.1:{port}/v1"
        return main(["demo", "--classifier", "llm", "--llm-base-url", base_url, *args])
    finally:
        simulator.terminate()
        simulator.wait()


if __name__ == "__main__":
    options = sys.argv[1:]
    if "--simulate-llm" in options:
        options.remove("--simulate-llm")
        raise SystemExit(with_simulator(options))
    raise SystemExit(main(["demo", *options]))
