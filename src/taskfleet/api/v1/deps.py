"""What every /api/v1 module shares: who may call, the services, bounded ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from taskfleet.api import schemas as s
from taskfleet.api.auth import admin, agent, caller, services
from taskfleet.core.models import Agent, Principal
from taskfleet.services import Services

Admin = Annotated[Principal, Depends(admin)]
Caller = Annotated[Principal, Depends(caller)]
AgentCaller = Annotated[Agent, Depends(agent)]
Found = Annotated[Services, Depends(services)]
MAX_WAIT_SECONDS = 55.0  #: long-polls stay under the 60 s proxies allow for idle requests
TaskId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
JobId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
After = Annotated[int, Query(ge=0, le=s.MAX_ID, description="only ids greater than this")]
