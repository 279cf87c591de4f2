"""batch_processor: crash-safe classification of a live MongoDB collection of conversations.

The public surface is small: the settings, the pipeline and its options, the classifier
protocol with the offline classifier, the result models and the error hierarchy. Each name is
imported when first used (PEP 562), so that ``import batch_processor`` -- and every command's
start-up -- loads only what the chosen path needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: The package's version, written here alone (pyproject.toml reads it: [tool.hatch.version]).
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

#: Where each public name lives.
_HOMES = {
    "Classifier": "batch_processor.classifiers",
    "OfflineClassifier": "batch_processor.classifiers",
    "Taxonomy": "batch_processor.classifiers",
    "load_taxonomy": "batch_processor.classifiers",
    "Governor": "batch_processor.llm.governor",
    "Pipeline": "batch_processor.pipeline.core",
    "PipelineOptions": "batch_processor.pipeline.options",
    "build_classifier": "batch_processor.service.classifier_setup",
    "Settings": "batch_processor.settings",
    "load_settings": "batch_processor.settings",
    **dict.fromkeys(
        [
            "BatchProcessorError",
            "ConfigurationError",
            "DataError",
            "ErrorCategory",
            "PermanentError",
            "RateLimitError",
            "ResourceError",
            "TransientError",
        ],
        "batch_processor.errors",
    ),
    **dict.fromkeys(
        [
            "Classification",
            "ClassifiedDocument",
            "ClassifierOutput",
            "FailedDocument",
            "SourceDocument",
        ],
        "batch_processor.models",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (see the module docstring)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batch_processor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
