"""Data collection presets: `--config=experiments/configs/collect.py:PRESET` with PRESET in tiny, cpu, paper.

The presets live with the collector (data_pipelines/presets.py), which also reads them to tell a user
how to finish an interrupted collection.
"""

from data_pipelines.presets import PRESETS, get_config

__all__ = ["PRESETS", "get_config"]
