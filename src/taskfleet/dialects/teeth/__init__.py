"""The teeth dialect (seed `003_6194758775641374.txt`, PROTOCOLS.md §4): teeth-agent's
line-delimited JSON over TCP, where the agent dials in and both sides send commands.

`Listener` (listener.py) accepts agents on `teeth_port` (8081, as the overlord), with TLS
when a certificate is configured; the app's lifespan starts and stops it. Each connection
(connection.py) admits its agent by the id in its handshake, as the registration policy
allows, then turns the agent's `ping`, `log` and `task_status` into engine calls and sends
it the tasks queued for it as commands. The framing is `taskfleet.agent.teeth.wire`, which
the agent's teeth mode shares. docs/dialects/teeth.md says where taskfleet differs from
the original on purpose.
"""

from __future__ import annotations

from taskfleet.dialects.teeth.listener import Listener

__all__ = ["Listener"]
