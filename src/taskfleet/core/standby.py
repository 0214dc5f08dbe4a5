"""Agents of this server waiting for work, to whom a new task can be leased as it is queued.

A submit used to queue its tasks, wake every agent that might take one, and have each
claim its task back out of the queue: a second write and, on PostgreSQL, a second round
trip between a submit and its agent, and thousands of claims after a broadcast to a fleet.
An agent whose last claim found nothing, that has a free slot and takes work, is *on
standby*: its transport registers how to hand it a task (`TaskService.standby`), and a
submit then inserts a task such an agent may take already leased to it, in the same
insert (`TaskService.submit`), and hands it over. The claim rules still hold: the agent
had nothing queued for it (or it would not be on standby: any wake-up, which every queued
task it could take sends, ends the standby before it claims); it gets a task only of a
type it takes, outside any job (whose blacklists and dependencies a claim would check),
targeted at it, at one of its groups, at tags it all has or at any agent; and the tasks of
one submit go out in claim order (job priority, priority, then submit order), one per
waiting agent, the longest waiting first.

Standby is per server: on another replica the agent's task is queued as before and its
wake-up reaches it there. A standby taken by a submit is ended by the hand-over, once the
insert is committed (or, if the insert fails, by a hand-over of None); a transport woken
meanwhile learns from ending its standby that a task is on its way and waits for it
rather than claiming (or answering a long-poll empty). A hand-over that finds the
transport gone (its connection closed while the insert ran) gives the task back to the
queue (`TaskService`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskfleet.core.models import Agent, NewTask, TargetKind, Task

#: How many waiters one submit looks at, at most, for its tasks not aimed at one agent.
SCAN_BUDGET = 1_000

#: Takes a task leased to the agent; False when the transport can no longer deliver it.
#: None says that the submit which took the standby failed: nothing comes, claim again.
HandOver = Callable[[Task | None], bool]


@dataclass(slots=True, eq=False)
class Waiter:
    agent: Agent
    lease_seconds: float
    hand_over: HandOver
    taken: bool = False  #: by a submit, whose hand-over follows its insert


class Standby:
    """At most one waiter per agent name: the latest registration wins."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiter] = {}

    def register(self, waiter: Waiter) -> Callable[[], bool]:
        """Until the returned function is called; it returns False when a submit took the
        standby already (its task is on its way to `hand_over`)."""
        self._waiting[waiter.agent.name] = waiter

        def cancel() -> bool:
            if self._waiting.get(waiter.agent.name) is waiter:
                del self._waiting[waiter.agent.name]
            return not waiter.taken

        return cancel

    def take(self, tasks: Sequence[NewTask]) -> dict[int, Waiter]:
        """The waiters that may take these tasks, by the task's index, each taken off
        standby (one task each). Tasks not targeted at one agent look at no more than
        `SCAN_BUDGET` waiters in all: a submit that no waiter may take (a type nobody on
        standby runs) must not cost a look at every idle agent per task; what is not
        handed over is queued, as it always was."""
        chosen: dict[int, Waiter] = {}
        if not self._waiting:  # a busy fleet: nothing to order the tasks for
            return chosen
        budget = SCAN_BUDGET
        for i in sorted(range(len(tasks)), key=lambda i: _claim_order(tasks[i], i)):
            if not self._waiting:
                break
            task = tasks[i]
            if task.job_id is not None:
                continue
            waiter: Waiter | None = None
            if task.target_kind is TargetKind.AGENT:
                found = self._waiting.get(task.target)
                if found is not None and _may_take(found.agent, task):
                    waiter = found
            elif budget > 0:
                for candidate in self._waiting.values():  # the longest waiting first
                    budget -= 1
                    if _may_take(candidate.agent, task):
                        waiter = candidate
                        break
                    if budget <= 0:
                        break
            if waiter is not None:
                del self._waiting[waiter.agent.name]
                waiter.taken = True
                chosen[i] = waiter
        return chosen

    def __contains__(self, agent_name: object) -> bool:
        return agent_name in self._waiting


def _claim_order(task: NewTask, index: int) -> tuple[int, int, int]:
    """The order a claim takes queued tasks in: the insert gives ids in submit order."""
    return (-task.job_priority, -task.priority, index)


def _may_take(agent: Agent, task: NewTask) -> bool:
    """Whether a claim by this agent could return this task, were it queued: the rules of
    the claim's query (store/queue.py) for a task outside any job."""
    if not agent.enabled or (agent.task_types and task.type not in agent.task_types):
        return False
    kind = task.target_kind
    if kind is TargetKind.ANY:
        return True
    if kind is TargetKind.AGENT:
        return task.target == agent.name
    if kind is TargetKind.GROUP:
        return task.target in agent.groups
    return set(task.target.split(",")) <= set(agent.tags)
