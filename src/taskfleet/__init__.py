"""taskfleet: run work on a fleet of machines, speaking six wire protocols on one engine."""

from __future__ import annotations

__version__ = "0.1.0"
