from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # so tests can `import models.meta` and `pkgtools`
    sys.path.insert(0, str(TESTS))
