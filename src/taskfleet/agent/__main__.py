"""`python -m taskfleet.agent run|register …`: the agent without the rest of the CLI."""

from __future__ import annotations

from taskfleet.agent.cli import agent

if __name__ == "__main__":
    agent(prog_name="python -m taskfleet.agent")
