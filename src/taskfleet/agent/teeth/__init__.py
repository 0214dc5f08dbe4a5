"""teeth mode: what the taskfleet agent needs to stand in for teeth-agent (seed 003).

`wire` is teeth's framing, shared with the server's dialect (`dialects/teeth`); `config`
is the agent's teeth settings file; `handlers` builds the command handlers (`status`,
`standby.*` over `images`, `decom.*` over `hardware`). The connection itself is
`agent/transports/teeth.py`. docs/dialects/teeth.md tells how to run it.
"""

from __future__ import annotations
