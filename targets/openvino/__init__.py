"""The openvino target (see :mod:`.target`); :mod:`.ops` is its op table, :mod:`.int8` its NNCF step."""
from .target import OpenVinoTarget

__all__ = ["OpenVinoTarget"]
