"""Old import path of :mod:`edgekit.runners.tensorrt.profile` (kept so existing imports keep working)."""
import sys

from .tensorrt import profile as _module

sys.modules[__name__] = _module
