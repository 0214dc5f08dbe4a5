from __future__ import annotations

from tests.api.conftest import (  # noqa: F401  (shared live-server fixtures)
    admin,
    live,
    sqlite_template,
    start_server,
)
