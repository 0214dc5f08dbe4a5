"""The Django Remotes dialect (seed `002_eecca14445c0c994.txt`, PROTOCOLS.md §3), for its
`client.py` unchanged: hosts register with a registration token and their RSA public key,
verify by signing, then list, fetch and run the commands assigned to their host groups and
post the results, everything encrypted as the original does (`taskfleet.core.crypto`).

Served below `remotes_prefix` (default `/remotes/`); the client is pointed at
`http://server/remotes/` and discovers the rest. Where taskfleet differs from the original on
purpose, docs/dialects/remotes.md says so.
"""

from __future__ import annotations

from fastapi import FastAPI

from taskfleet.config import Settings
from taskfleet.dialects.remotes import views
from taskfleet.dialects.remotes.wire import prefix_of


def mount(app: FastAPI, settings: Settings) -> None:
    """Adds the endpoints below the configured prefix."""
    app.include_router(views.router(prefix_of(settings.remotes_prefix)))


__all__ = ["mount", "prefix_of"]
