"""Wake-ups between waiters and replicas. The database is the truth; the bus only wakes."""

from __future__ import annotations
