from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # so tests can `import models.meta` and `pkgtools`
    sys.path.insert(0, str(TESTS))

# Runtimes cache compiled models under $XDG_CACHE_HOME/edgekit (OpenVINO blobs, TensorRT engines):
# keep the suite's caches out of the user's home, in one folder per test session.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="edgekit-test-cache-")
