"""The farm's user errors: each one line naming the problem and the fix (``error: ...``, exit 2 in the CLI)."""
from __future__ import annotations

from edgekit.errors import ConfigError, EdgekitError


class InventoryError(ConfigError):
    """devices.yaml is missing, malformed or names something that does not exist."""


class FarmError(EdgekitError):
    """A farm run cannot start (no device in the pool, coordinator unreachable, unknown job ...)."""
