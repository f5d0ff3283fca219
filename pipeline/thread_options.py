"""Moved to `pipeline/options.py` (ThreadOptions); this name stays only until evaluate/config.py and demo/config.py
import it from there."""
from clipcache.pipeline.options import ThreadOptions

__all__ = ["ThreadOptions"]
