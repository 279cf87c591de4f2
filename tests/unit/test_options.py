"""The pipeline's options stay in step with the settings they come from."""

from __future__ import annotations

from dataclasses import MISSING, fields

from batch_processor.pipeline.options import PipelineOptions
from batch_processor.service.jobs import pipeline_options
from batch_processor.settings import Settings


def test_every_pipeline_option_is_a_setting_and_declares_no_default_of_its_own() -> None:
    """Each option names a setting; its default lives in the settings alone."""
    for option in fields(PipelineOptions):
        assert option.name in Settings.model_fields, option.name
        assert option.default is MISSING and option.default_factory is MISSING, option.name
    defaults = pipeline_options(Settings.model_construct())
    for option in fields(PipelineOptions):
        assert getattr(defaults, option.name) == Settings.model_fields[option.name].default


def test_options_are_taken_from_the_settings() -> None:
    """A changed setting reaches the pipeline."""
    settings = Settings.model_construct(batch_size=7)  # defaults for the rest, no env read
    assert pipeline_options(settings).batch_size == 7
