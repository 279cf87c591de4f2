"""Classifiers: the protocol, the offline default, the LLM classifier (imported on demand)."""

from __future__ import annotations

from batch_processor.classifiers.base import Classifier
from batch_processor.classifiers.offline import OfflineClassifier
from batch_processor.classifiers.taxonomy import Taxonomy, load_taxonomy

__all__ = ["AVAILABLE", "Classifier", "OfflineClassifier", "Taxonomy", "load_taxonomy"]

#: Names accepted by the ``classifier`` setting.
AVAILABLE = ("offline", "llm")
