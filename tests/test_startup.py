"""Start-up loads only what the chosen path needs."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    """Top-level modules loaded by a fresh interpreter after running ``code``."""
    script = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_command_line_loads_neither_the_sdk_nor_the_offline_stack() -> None:
    """Importing the CLI (every command's start) loads no openai, numpy, langid or prometheus."""
    loaded = _loaded_after("import batch_processor.cli")
    assert not loaded & {"openai", "numpy", "py3langid", "vaderSentiment", "prometheus_client"}


def test_building_the_llm_classifier_does_not_load_the_sdk() -> None:
    """The LLM classifier is built without the SDK: it loads in the warm-up, in a thread."""
    code = (
        "from batch_processor.settings import load_settings\n"
        "from batch_processor.service.classifier_setup import build_classifier\n"
        "build_classifier(load_settings({'classifier': 'llm', 'llm_base_url': 'http://x/v1'},"
        " environ={}))"
    )
    loaded = _loaded_after(code)
    assert "openai" not in loaded and "numpy" not in loaded
