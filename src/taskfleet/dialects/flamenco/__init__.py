"""The Flamenco dialect: Flamenco Manager v2's worker protocol (seed
`004_347253ec7c8d085d.txt`, PROTOCOLS.md §5), for Flamenco Worker 2.x unchanged.

Served at the root only: the worker joins every path to `manager_url` with `urljoin`,
which drops any prefix. Workers authenticate with HTTP Basic (`_id`, secret); errors are
plain text with the original's status codes. Where taskfleet differs from the original
on purpose, docs/dialects/flamenco.md says so.
"""

from __future__ import annotations

from fastapi import APIRouter

from taskfleet.dialects.flamenco import tasks, wire, workers

router = APIRouter(route_class=wire.FlamencoRoute, include_in_schema=False)
router.include_router(workers.router)
router.include_router(tasks.router)

__all__ = ["router"]
