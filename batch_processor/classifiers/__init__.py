"""Classifiers: the protocol, the offline default, and the factory the runner uses."""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import Classifier
from .offline import OfflineClassifier

__all__ = ["Classifier", "OfflineClassifier", "create_classifier"]

AVAILABLE = ("offline",)


def create_classifier(name: str) -> Classifier:
    """Build the classifier named by the ``classifier`` setting."""
    if name == "offline":
        return OfflineClassifier()
    raise ConfigurationError(
        f"invalid setting classifier (--classifier / BATCH_CLASSIFIER): unknown classifier "
        f"{name!r}; available: {', '.join(AVAILABLE)}"
    )
