"""The taskfleet agent: takes tasks from the server, runs them through handlers, reports
back. `taskfleet.agent.app.build(settings)` is its composition root; docs/agent.md tells
how to run it and write handlers."""

from __future__ import annotations
