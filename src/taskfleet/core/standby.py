"""Agents of this server waiting for work, to whom a new task can be leased as it is queued.

A broadcast to a fleet of idle agents used to queue one task per member, wake every
member, and have each claim its task back out of the queue: thousands of claims (two
statements each on SQLite, a round trip each on PostgreSQL) right after thousands of
inserts. An agent whose last claim found nothing, that has a free slot and takes work,
is *on standby*: its transport registers how to hand it a task (`TaskService.standby`),
and a broadcast then inserts that member's task already leased to it, in the same insert
(`TaskService.broadcast`), and hands it over. The claim rules still hold: the agent had
nothing queued for it (or it would not be on standby: any wake-up, which every queued task
it could take sends, ends the standby before it claims), and a member gets only a task of
a type it takes, outside any job (whose blacklists a claim would check).

Standby is per server: on another replica the agent's task is queued as before and its
wake-up reaches it there. A standby taken by a broadcast is ended by
the hand-over, once the insert is committed (or, if the insert fails, by a hand-over of
None); a transport woken meanwhile learns from ending its standby that a task is on its
way and waits for it rather than claiming (or answering a long-poll empty). A hand-over
that finds the transport gone (its connection closed while the insert ran) leaves the
task leased, as for any lost delivery: the lease runs out, or the agent's sign-off gives
it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from taskfleet.core.models import Agent, NewTask, TargetKind, Task

#: Takes a task leased to the agent; False when the transport can no longer deliver it.
#: None says that the broadcast which took the standby failed: nothing comes, claim again.
HandOver = Callable[[Task | None], bool]


@dataclass(slots=True, eq=False)
class Waiter:
    agent: Agent
    lease_seconds: float
    hand_over: HandOver
    taken: bool = False  #: by a broadcast, whose hand-over follows its insert


class Standby:
    """At most one waiter per agent name: the latest registration wins."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiter] = {}

    def register(self, waiter: Waiter) -> Callable[[], bool]:
        """Until the returned function is called; it returns False when a broadcast took
        the standby already (its task is on its way to `hand_over`)."""
        self._waiting[waiter.agent.name] = waiter

        def cancel() -> bool:
            if self._waiting.get(waiter.agent.name) is waiter:
                del self._waiting[waiter.agent.name]
            return not waiter.taken

        return cancel

    def take(self, tasks: Iterable[NewTask]) -> dict[int, Waiter]:
        """The waiters that may take these agent-targeted tasks, by the task's index, each
        taken off standby (one task each)."""
        chosen: dict[int, Waiter] = {}
        for i, task in enumerate(tasks):
            waiter = self._waiting.get(task.target)
            if waiter is not None and _may_take(waiter.agent, task):
                del self._waiting[task.target]
                waiter.taken = True
                chosen[i] = waiter
        return chosen

    def __contains__(self, agent_name: object) -> bool:
        return agent_name in self._waiting


def _may_take(agent: Agent, task: NewTask) -> bool:
    if task.target_kind is not TargetKind.AGENT or task.job_id is not None:
        return False
    if not agent.enabled:
        return False
    return not agent.task_types or task.type in agent.task_types
