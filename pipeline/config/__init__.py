"""The pipeline configuration: every stage's settings (`sections.py`), loaded from defaults, a
YAML preset and `--set` overrides (`load.py`). Importing it imports no heavy library."""

from pipeline.config.load import PipelineConfig, load_config

__all__ = ["PipelineConfig", "load_config"]
