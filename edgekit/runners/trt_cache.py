"""Old import path of :mod:`edgekit.runners.tensorrt.cache` (kept so existing imports keep working)."""
import sys

from .tensorrt import cache as _module

sys.modules[__name__] = _module
