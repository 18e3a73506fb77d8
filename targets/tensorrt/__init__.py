"""The tensorrt target (:mod:`.target`): :mod:`.ops` its op tables per TensorRT version,
:mod:`.qdq` explicit int8 quantization, :mod:`.lint` the Q/DQ rules TensorRT needs."""
from .target import TensorRTTarget, build_profile, trt_version_for

__all__ = ["TensorRTTarget", "build_profile", "trt_version_for"]
