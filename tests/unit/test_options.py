"""The pipeline's options stay in step with the settings they come from."""

from __future__ import annotations

from dataclasses import fields

from batch_processor.pipeline.options import PipelineOptions
from batch_processor.service.jobs import pipeline_options
from batch_processor.settings import Settings


def test_every_pipeline_option_is_a_setting_with_the_same_default() -> None:
    """Each option names a setting, and its default is the setting's default."""
    defaults = PipelineOptions()
    for option in fields(PipelineOptions):
        setting = Settings.model_fields[option.name]
        assert getattr(defaults, option.name) == setting.default, option.name


def test_options_are_taken_from_the_settings() -> None:
    """A changed setting reaches the pipeline."""
    settings = Settings.model_construct(batch_size=7)  # defaults for the rest, no env read
    assert pipeline_options(settings).batch_size == 7
