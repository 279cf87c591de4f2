"""Building the configured classifier: settings in, a ready classifier out.

This is where the ``classifier`` and ``llm_*`` settings become plain objects: the taxonomy, the
governor, the spend ledger and the LLM client options. The openai SDK is imported only when the
LLM classifier is chosen, so an offline run never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch_processor.classifiers import AVAILABLE, Classifier, Taxonomy, load_taxonomy
from batch_processor.classifiers.cues import Cues, cues_file_for, load_cues
from batch_processor.errors import ConfigurationError
from batch_processor.llm.cost import SpendLedger, price_for
from batch_processor.llm.governor import Governor
from batch_processor.settings import Settings

if TYPE_CHECKING:
    from batch_processor.cascade.classifier import CascadeClassifier
    from batch_processor.classifiers.offline import OfflineClassifier
    from batch_processor.llm.endpoint import LLMOptions


def build_classifier(settings: Settings) -> Classifier:
    """The classifier the settings name; raise ConfigurationError for an unusable setup."""
    taxonomy = load_taxonomy(settings.taxonomy_file)
    if settings.classifier == "offline":
        return offline_classifier(settings)
    if settings.classifier == "llm":
        return _llm_classifier(settings, taxonomy)
    if settings.classifier == "cascade":
        return _cascade(settings, taxonomy)
    raise ConfigurationError(
        f"invalid setting classifier (--classifier / BATCH_PROCESSOR_CLASSIFIER): unknown "
        f"classifier {settings.classifier!r}; available: {', '.join(AVAILABLE)}"
    )


def as_cascade(classifier: Classifier) -> CascadeClassifier | None:
    """``classifier`` as the confidence cascade, or None for another classifier.

    The cascade module (numpy) is imported only when the cascade is the one chosen.
    """
    if classifier.name != "cascade":
        return None
    from batch_processor.cascade.classifier import CascadeClassifier

    assert isinstance(classifier, CascadeClassifier)
    return classifier


def offline_classifier(settings: Settings) -> OfflineClassifier:
    """The offline classifier of the settings' taxonomy (and its cues)."""
    from batch_processor.classifiers.offline import OfflineClassifier  # numpy, py3langid

    taxonomy = load_taxonomy(settings.taxonomy_file)
    return OfflineClassifier(taxonomy, _cues_beside(settings, taxonomy))


def classifier_identity(settings: Settings) -> dict[str, str | None]:
    """What the configured classifier stores in a result's ``classifier`` (for ``--outdated``).

    Name, version (the prompt version for the LLM), model and taxonomy version; computed
    without opening a client.
    """
    taxonomy = load_taxonomy(settings.taxonomy_file)
    if settings.classifier in {"llm", "cascade"}:
        from batch_processor.llm.client import PROMPT_VERSION
    if settings.classifier in {"offline", "cascade"}:
        from batch_processor.classifiers.offline import OfflineClassifier
    if settings.classifier == "llm":
        version, model = PROMPT_VERSION, settings.llm_model
    elif settings.classifier == "offline":
        version, model = OfflineClassifier.version, None
    elif settings.classifier == "cascade":
        version, model = f"{OfflineClassifier.version}+llm{PROMPT_VERSION}", settings.llm_model
    else:
        build_classifier(settings)  # raises the error naming the classifier setting
        raise AssertionError("unreachable")
    return {
        "name": settings.classifier.value,
        "version": version,
        "model": model,
        "taxonomy_version": taxonomy.version,
    }


def _cues_beside(settings: Settings, taxonomy: Taxonomy) -> Cues | None:
    """The cues of a custom taxonomy file (``NAME.cues.toml`` beside it), if it has them."""
    if settings.taxonomy_file is None:
        return None
    path = cues_file_for(settings.taxonomy_file)
    if not path.exists():
        return None
    return load_cues(path, categories=taxonomy.categories, urgency=taxonomy.urgency)


def _cascade(settings: Settings, taxonomy: Taxonomy) -> Classifier:
    """The offline classifier, the LLM where it is unsure, and the optional second tier."""
    from batch_processor.cascade.calibration import Calibration
    from batch_processor.cascade.classifier import CascadeClassifier
    from batch_processor.cascade.escalation import Escalation

    second = None
    if settings.llm_escalation_model is not None:
        larger = settings.model_copy(update={"llm_model": settings.llm_escalation_model})
        second = _llm_classifier(larger, taxonomy)
    return CascadeClassifier(
        offline=offline_classifier(settings),
        llm=_llm_classifier(settings, taxonomy),
        escalation=Escalation(
            share=settings.cascade_llm_share,
            audit_share=settings.cascade_audit_share,
            confidence=settings.cascade_confidence,
            calibration=Calibration.shipped(),
        ),
        second=second,
        second_below=settings.llm_escalation_below,
    )


def _llm_classifier(settings: Settings, taxonomy: Taxonomy) -> Classifier:
    from batch_processor.llm.client import (  # loads openai only when chosen
        LLMClassifier,
    )

    price = price_for(settings.llm_model, settings.llm_prices)
    if settings.budget_usd is not None and price is None:
        raise ConfigurationError(
            f"invalid setting budget_usd (--budget-usd / BATCH_PROCESSOR_BUDGET_USD): no price is "
            f"known for model {settings.llm_model!r}; add it to llm_prices"
        )
    options = llm_options(settings)
    governor = Governor(
        concurrency=settings.concurrent,
        minimum=settings.min_concurrent,
        rpm=settings.rpm,
        tpm=settings.tpm,
        burst_seconds=settings.rate_burst_seconds,
    )
    return LLMClassifier(
        options=options,
        taxonomy=taxonomy,
        governor=governor,
        ledger=SpendLedger(price=price, budget_usd=settings.budget_usd),
    )


def llm_options(settings: Settings) -> LLMOptions:
    """The LLM classifier's options, from the settings of the same meaning."""
    from batch_processor.llm.endpoint import LLMOptions  # loads the LLM client only when chosen

    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LLMOptions(
        model=settings.llm_model,
        api_key=api_key,
        base_url=settings.llm_base_url,
        timeout=settings.llm_timeout,
        output=settings.llm_output,
        reasks=settings.llm_reasks,
        max_output_tokens=settings.llm_max_output_tokens,
        temperature=settings.llm_temperature,
        max_connections=settings.concurrent,
    )
