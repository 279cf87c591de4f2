"""batch_processor: crash-safe classification of a live MongoDB collection of conversations.

The public surface is small: the settings, the pipeline and its options, the classifier
protocol with the offline classifier, the result models and the error hierarchy.
"""

from __future__ import annotations

from batch_processor.classifiers import Classifier, OfflineClassifier, Taxonomy, load_taxonomy
from batch_processor.errors import (
    BatchProcessorError,
    ConfigurationError,
    DataError,
    ErrorCategory,
    PermanentError,
    RateLimitError,
    ResourceError,
    TransientError,
)
from batch_processor.llm.governor import Governor
from batch_processor.models import (
    Classification,
    ClassifiedDocument,
    ClassifierOutput,
    FailedDocument,
    SourceDocument,
)
from batch_processor.pipeline.core import Pipeline
from batch_processor.pipeline.options import PipelineOptions
from batch_processor.service.classifier_setup import build_classifier
from batch_processor.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "BatchProcessorError",
    "Classification",
    "ClassifiedDocument",
    "Classifier",
    "ClassifierOutput",
    "ConfigurationError",
    "DataError",
    "ErrorCategory",
    "FailedDocument",
    "Governor",
    "OfflineClassifier",
    "PermanentError",
    "Pipeline",
    "PipelineOptions",
    "RateLimitError",
    "ResourceError",
    "Settings",
    "SourceDocument",
    "Taxonomy",
    "TransientError",
    "__version__",
    "build_classifier",
    "load_settings",
    "load_taxonomy",
]
