"""The one pinned image of every component: the default of ``RunConfig.pipeline.image``."""

from selflengthen.config import PipelineConfig

IMAGE: str = PipelineConfig.model_fields["image"].default
