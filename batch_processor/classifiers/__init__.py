"""Classifiers: the protocol, the offline default, the LLM classifier (imported on demand).

The offline classifier (numpy, py3langid, VADER) is imported when first used, so that an LLM
run never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.taxonomy import Taxonomy, load_taxonomy

if TYPE_CHECKING:
    from batch_processor.classifiers.offline import OfflineClassifier

__all__ = ["AVAILABLE", "Classifier", "OfflineClassifier", "Taxonomy", "load_taxonomy"]

#: Names accepted by the ``classifier`` setting.
AVAILABLE = ("offline", "llm", "cascade")


def __getattr__(name: str) -> Any:
    """``OfflineClassifier`` on first use (see the module docstring)."""
    if name == "OfflineClassifier":
        from batch_processor.classifiers.offline import OfflineClassifier

        return OfflineClassifier
    raise AttributeError(f"module 'batch_processor.classifiers' has no attribute {name!r}")
