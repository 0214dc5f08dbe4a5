"""The seed protocols, each a thin translation onto the engine.

`ROUTERS` names them as uvicorn's `HTTP_PROTOCOLS` names its protocol classes; `app.build`
mounts each at the prefixes its clients use.
"""

from __future__ import annotations
