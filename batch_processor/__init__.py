"""batch_processor: crash-safe classification of a live MongoDB collection of conversations.

The public surface is small: the settings, the pipeline and its options, the classifier
protocol with the offline classifier, the result models and the error hierarchy.
"""

from __future__ import annotations

from .classifiers import Classifier, OfflineClassifier, create_classifier
from .errors import (
    BatchProcessorError,
    ConfigurationError,
    DataError,
    ErrorCategory,
    PermanentError,
    RateLimitError,
    ResourceError,
    TransientError,
)
from .models import Classification, ClassifiedDocument, FailedDocument, SourceDocument
from .pipeline import Pipeline, PipelineOptions
from .settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "BatchProcessorError",
    "Classification",
    "ClassifiedDocument",
    "Classifier",
    "ConfigurationError",
    "DataError",
    "ErrorCategory",
    "FailedDocument",
    "OfflineClassifier",
    "PermanentError",
    "Pipeline",
    "PipelineOptions",
    "RateLimitError",
    "ResourceError",
    "Settings",
    "SourceDocument",
    "TransientError",
    "__version__",
    "create_classifier",
    "load_settings",
]
