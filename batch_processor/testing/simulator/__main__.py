"""``python -m batch_processor.testing.simulator``: serve the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import fields

from batch_processor.testing.simulator.server import Simulator, SimulatorConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batch_processor.testing.simulator",
        description="OpenAI-compatible LLM simulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    for f in fields(SimulatorConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, dest=f.name, action=action, default=f.default)
        elif f.name == "models":
            parser.add_argument(flag, nargs="*", default=())
        else:
            kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(
                flag, type=kind, default=None if "None" in str(f.type) else f.default
            )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    options = {f.name: getattr(args, f.name) for f in fields(SimulatorConfig)}
    options["models"] = tuple(options["models"])
    simulator = Simulator(SimulatorConfig(**options), host=args.host, port=args.port)
    await simulator.start()
    print(f"LLM simulator listening on {simulator.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()


def main() -> None:
    """Serve until interrupted."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parser().parse_args()))


if __name__ == "__main__":
    main()
