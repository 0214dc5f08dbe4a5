"""SIGTERM: every long-poll answers at once, as if its wait ran out, so that the graceful
shutdown neither waits out 25 s polls nor cuts them off; nothing claims on the way out."""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Callable

import httpx

from tests.e2e.conftest import AGENT_SECRET
from tests.e2e.server_process import STOP_SECONDS, ServerProcess, poll

POLLS = 5  #: of each kind


def test_long_polls_answer_at_once_on_sigterm(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(TASKFLEET_POLL_INTERVAL="30").start()
    with server.login() as admin:
        for name in [f"n{n}" for n in range(POLLS)] + [f"d{n}" for n in range(POLLS)]:
            admin.post(
                "/accounts", json={"name": name, "role": "agent", "secret": AGENT_SECRET}
            ).raise_for_status()

    def native(n: int) -> int:
        with server.agent_client(f"n{n}", AGENT_SECRET) as agent:
            return agent.post("/agent/claim", params={"wait": 25}, timeout=60).status_code

    def dut(n: int) -> object:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            answer = client.get("/tasks", headers={"Authorization": f"d{n}:{AGENT_SECRET}"})
            return answer.json()

    with concurrent.futures.ThreadPoolExecutor(2 * POLLS) as pool:
        natives = [pool.submit(native, n) for n in range(POLLS)]
        duts = [pool.submit(dut, n) for n in range(POLLS)]
        with server.login() as admin:  # every poll has reached the server and waits
            poll(
                lambda: True if _online(admin) == 2 * POLLS else None,
                "the long-polls to be waiting",
            )
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # Well inside the polls' 25 s: they were answered, not timed out or cut off.
        assert [f.result(timeout=STOP_SECONDS) for f in natives] == [204] * POLLS
        assert [f.result(timeout=STOP_SECONDS) for f in duts] == [
            {"error": False, "events": []}
        ] * POLLS
    assert server.proc.wait(STOP_SECONDS) in (0, -signal.SIGTERM)


def _online(admin: httpx.Client) -> int:
    """Agents marked online: each poll marks its own agent before it starts to wait."""
    found = admin.get("/agents").json()
    agents = found["agents"] if isinstance(found, dict) else found
    return sum(1 for agent in agents if agent["online"])
