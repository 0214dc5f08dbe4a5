"""Task dispatch: submit, claim with a lease, report, finish, cancel, wait.

Delivery is at-least-once and recording exactly-once: every claim starts a new attempt
with a lease; only the current attempt may report; a repeated final report for the
current attempt is accepted once and changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from taskfleet.core import errors
from taskfleet.core.agents import agent_channel, check_labels, control_channels
from taskfleet.core.batches import Batch
from taskfleet.core.models import (
    Agent,
    JSONValue,
    LogChunk,
    NewTask,
    Outcome,
    Output,
    Principal,
    Progress,
    TargetKind,
    Task,
    TaskFilter,
    TaskStatus,
)
from taskfleet.core.ports import Bus, Clock, Store
from taskfleet.core.standby import HandOver, Standby, Waiter

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
POLL_INTERVAL_SECONDS = 1.0  #: how late a task can be when a wake-up is lost
QUEUE_CHANNEL = "tasks"  #: woken for every task any agent might take
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_LOG_CHUNK_BYTES = 256 * 1024
MAX_BATCH = 10_000
MAX_PRIORITY = 1_000_000
#: Failed tasks of one job and type after which an agent is blacklisted for them.
BLACKLIST_THRESHOLD = 3


def task_channel(task_id: int) -> str:
    """Bus channel woken when the task may have ended (`wait` listens there); its claim
    does not wake it."""
    return f"task:{task_id}"


def _json_size(value: JSONValue, what: str, limit: int) -> None:
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise errors.Invalid(f"{what} must be JSON") from exc
    if size > limit:
        raise errors.TooLarge(f"{what} must be at most {limit} bytes of JSON")


def check_progress(percent: float | None, eta: float | None, activity: str = "") -> Progress:
    """Progress as an agent reports it. Raises `Invalid` for a percent outside 0-100 or a
    negative eta; the activity text is cut to 1000 characters."""
    if percent is not None and not 0 <= percent <= 100:
        raise errors.Invalid("percent must be between 0 and 100")
    if eta is not None and not eta >= 0:
        raise errors.Invalid("eta must not be negative")
    return Progress(percent=percent, eta=eta, activity=str(activity)[:1000])


def check_new_task(task: NewTask) -> NewTask:
    if not isinstance(task.type, str) or not 0 < len(task.type) <= 128:
        raise errors.Invalid("a task type must be 1-128 characters")
    if not -MAX_PRIORITY <= task.priority <= MAX_PRIORITY:
        raise errors.Invalid(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    if not 1 <= task.max_attempts <= 100:
        raise errors.Invalid("max_attempts must be between 1 and 100")
    if task.timeout_seconds is not None and not 0 < task.timeout_seconds <= 30 * 86400:
        raise errors.Invalid("timeout_seconds must be positive and at most 30 days")
    if task.target_kind is not TargetKind.ANY and not task.target:
        raise errors.Invalid(f"a {task.target_kind.value} target needs a name")
    _json_size(task.payload, "a payload", MAX_PAYLOAD_BYTES)
    if task.target_kind is TargetKind.TAGS:
        tags = check_labels([t.strip() for t in task.target.split(",") if t.strip()], "tags")
        if not tags:
            raise errors.Invalid("a tags target needs at least one tag")
        task = replace(task, target=",".join(tags))
    return task


class TaskService:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        clock: Clock,
        lease_seconds: float = LEASE_SECONDS,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        on_claim: Callable[[Task], None] | None = None,
        blacklist_threshold: int = BLACKLIST_THRESHOLD,
    ) -> None:
        self._store = store
        self.blacklist_threshold = blacklist_threshold
        self._on_claim = on_claim
        self._bus = bus
        self._clock = clock
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.stopping = False
        self._claims: Batch[tuple[Agent, float], Task | None] = Batch(self._claim_tasks)
        self._finishes: Batch[Outcome, tuple[Task, bool]] = Batch(self._finish_tasks)
        self._standby = Standby()

    async def _claim_tasks(self, claims: list[tuple[Agent, float]]) -> list[Task | None]:
        return await self._store.claim_tasks(claims, self._clock.now())

    async def _finish_tasks(
        self, outcomes: list[Outcome]
    ) -> list[tuple[Task, bool] | errors.Error]:
        return await self._store.finish_tasks(outcomes, self._clock.now())

    # -- submitting -----------------------------------------------------------------

    async def submit(self, tasks: Sequence[NewTask]) -> list[Task]:
        """Queues the tasks, all or none. They are on disk when this returns.

        Raises `Invalid` for a bad task and `NotFound` for an unknown target agent or group.
        """
        return await self._submit(tasks, known_agents=frozenset())

    async def broadcast(self, group: str, template: NewTask) -> list[Task]:
        """One task per current member of `group`, each targeted at that member."""
        members = await self._store.group_members(group)
        if not members:
            raise errors.NotFound(f"group {group!r} has no members")
        # The members were just read: looking each one up again would cost a query per task.
        return await self._submit(
            [replace(template, target_kind=TargetKind.AGENT, target=a.name) for a in members],
            known_agents=frozenset(a.name for a in members),
        )

    async def _submit(self, tasks: Sequence[NewTask], known_agents: frozenset[str]) -> list[Task]:
        """Agents on standby that may take a task get it leased as it is inserted
        (core/standby.py); the rest is queued, and whoever may take it woken."""
        if not 0 < len(tasks) <= MAX_BATCH:
            raise errors.Invalid(f"submit between 1 and {MAX_BATCH} tasks at once")
        checked = [check_new_task(t) for t in tasks]
        await self._check_targets(checked, known_agents)
        now = self._clock.now()
        waiters = self._standby.take(checked)
        leases = {i: (w.agent.id, now + w.lease_seconds) for i, w in waiters.items()}
        try:
            created = await self._store.add_tasks(checked, now, leases)
        except BaseException:
            for waiter in waiters.values():
                waiter.hand_over(None)  # nothing comes: they claim again
            raise
        undelivered = [i for i, w in waiters.items() if not self._hand(w, created[i])]
        queued = [t for i, t in enumerate(created) if i not in waiters]
        await self._bus.notify(self._wake_channels(queued))
        for i in undelivered:
            created[i] = await self._give_back(waiters[i], created[i])
        return created

    def _hand(self, waiter: Waiter, task: Task) -> bool:
        if self._on_claim is not None:
            self._on_claim(task)
        return waiter.hand_over(task)

    async def _give_back(self, waiter: Waiter, task: Task) -> Task:
        """The agent a task was leased to as it was inserted left meanwhile (its connection
        closed during the insert): the task goes back to the queue now rather than when
        its lease runs out. The submit stands whatever happens here."""
        log.info(
            "task %d leased to %s, who left meanwhile: queued again",
            task.id,
            waiter.agent.name,
            extra={"action": "hand_over", "task": task.id},
        )
        try:
            return await self.release(waiter.agent, task.id, task.attempt)
        except errors.Error as error:  # finished or requeued meanwhile: nothing to give back
            log.info("task %d not given back: %s", task.id, error, extra={"task": task.id})
        except Exception:  # the database failed: the lease runs out, as for a lost delivery
            log.exception("task %d not given back", task.id, extra={"task": task.id})
        return task

    async def _check_targets(self, tasks: Sequence[NewTask], known_agents: frozenset[str]) -> None:
        """Looks up each distinct target and job once, however many tasks name it."""
        kinds: dict[TargetKind, set[str]] = {}
        for task in tasks:
            kinds.setdefault(task.target_kind, set()).add(task.target)
        for name in sorted(kinds.get(TargetKind.AGENT, set()) - known_agents):
            if await self._store.get_agent(name) is None:
                raise errors.NotFound(f"no agent named {name!r}")
        if TargetKind.GROUP in kinds:
            known = {g.name for g in await self._store.list_groups()}
            missing = sorted(kinds[TargetKind.GROUP] - known)
            if missing:
                raise errors.NotFound(f"no group named {missing[0]!r}")
        for job_id in sorted({t.job_id for t in tasks if t.job_id is not None}):
            if await self._store.get_job(job_id) is None:
                raise errors.NotFound(f"no job {job_id}")

    @staticmethod
    def _wake_channels(tasks: Sequence[Task]) -> set[str]:
        channels: set[str] = set()
        for task in tasks:
            if task.target_kind is TargetKind.AGENT:
                channels.add(agent_channel(task.target))
            else:
                channels.add(QUEUE_CHANNEL)
        return channels

    # -- reading ----------------------------------------------------------------------

    async def get(self, task_id: int, caller: Principal | None = None) -> Task:
        """Raises `NotFound`, also for an agent asking about a task that is not its own."""
        task = await self._store.get_task(task_id)
        if task is None or (caller is not None and not await self._visible(task, caller)):
            raise errors.NotFound(f"no task {task_id}")
        return task

    async def _visible(self, task: Task, caller: Principal) -> bool:
        if caller.is_admin:
            return True
        if task.target_kind is TargetKind.AGENT and task.target == caller.name:
            return True
        agent = await self._store.get_agent(caller.name)
        return agent is not None and task.lease_owner == agent.id

    async def find(self, query: TaskFilter) -> list[Task]:
        if not 0 < query.limit <= 1000:
            raise errors.Invalid("limit must be between 1 and 1000")
        return await self._store.list_tasks(query)

    async def counts(self) -> dict[TaskStatus, int]:
        return await self._store.count_tasks_by_status()

    async def any_queued(self) -> bool:
        return await self._store.any_queued()

    async def wait(self, task_id: int, timeout: float, caller: Principal | None = None) -> Task:
        """Returns the task once it is finished, or as it stands after `timeout` seconds."""
        deadline = self._clock.now() + max(0.0, timeout)
        while True:
            task = await self.get(task_id, caller)
            remaining = deadline - self._clock.now()
            if task.status.terminal or remaining <= 0 or self.stopping:
                return task
            await self._bus.wait([task_channel(task_id)], min(remaining, self.poll_interval))

    def stop(self) -> None:
        """The server is shutting down: every long-poll answers now, as if it timed out,
        so that connections drain at once instead of at the end of their waits."""
        self.stopping = True
        self._bus.wake_all()

    # -- the agent's side ---------------------------------------------------------------

    async def claim(self, agent: Agent, lease_seconds: float | None = None) -> Task | None:
        """Leases the best task this agent may run now, or returns None.

        `lease_seconds` overrides the default lease, for agents that never heartbeat.
        """
        found = await self.claim_many(agent, 1, lease_seconds)
        return found[0] if found else None

    async def claim_many(
        self, agent: Agent, count: int, lease_seconds: float | None = None
    ) -> list[Task]:
        """Leases up to `count` tasks for the agent's free slots, best first, in one
        transaction (with whatever else is claimed meanwhile)."""
        if not agent.enabled or count <= 0:
            return []
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        tasks = [t for t in await self._claims.many([(agent, lease)] * count) if t is not None]
        for task in tasks:
            log.debug("claimed", extra={"action": "claim_task", "task": task.id})
            if self._on_claim is not None:
                self._on_claim(task)
        # No notification on the tasks' channels: only `wait` listens there, for a task's
        # end; on PostgreSQL each would cost a NOTIFY.
        return tasks

    def standby(
        self, agent: Agent, hand_over: HandOver, lease_seconds: float | None = None
    ) -> Callable[[], bool]:
        """Puts the agent on standby (core/standby.py) until the returned function is
        called or a task is handed over: a submit leases a task the agent may take to it
        as it inserts it and calls `hand_over` with it, instead of queueing it and waking
        the agent. Only for an agent whose claim just found nothing, with a free slot; a
        transport ends the standby whenever it is woken, before it claims again. Ending
        it returns False when a submit took it: the task is on its way to `hand_over`
        (unless the submit fails), so do not claim or answer empty meanwhile."""
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        return self._standby.register(Waiter(agent, lease, hand_over))

    def on_standby(self, agent_name: str) -> bool:
        return agent_name in self._standby

    async def claim_wait(
        self, agent: Agent, timeout: float, lease_seconds: float | None = None
    ) -> Task | None:
        """Like `claim`, but waits up to `timeout` seconds for work (long-poll)."""
        deadline = self._clock.now() + max(0.0, timeout)
        channels = [QUEUE_CHANNEL, agent_channel(agent.name)]
        while True:
            task = await self.claim(agent, lease_seconds)
            remaining = deadline - self._clock.now()
            if task is not None or remaining <= 0 or self.stopping:
                return task
            await self._bus.wait(channels, min(remaining, self.poll_interval))
            if self.stopping:  # woken by the shutdown: answer, claim nothing more
                return None
            agent = await self._store.get_agent_by_id(agent.id) or agent

    async def heartbeat(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        progress: Progress | None = None,
        lease_seconds: float | None = None,
    ) -> Task:
        """Extends the lease of the current attempt, recording progress if given.

        `lease_seconds` overrides the default lease, as for `claim`. Raises `Conflict`
        when the attempt is not current (the agent should stop working).
        """
        now = self._clock.now()
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        return await self._store.extend_lease(
            task_id, agent.id, attempt, now + lease, progress, now
        )

    async def keep_alive(self, agent: Agent, lease_seconds: float | None = None) -> list[Task]:
        """Extends the lease of every active task the agent holds, for protocols whose open
        connection is the heartbeat (teeth). A task that moved on meanwhile is skipped.
        Returns the tasks extended."""
        held = TaskFilter(status=TaskStatus.ACTIVE, agent_id=agent.id, limit=1000)
        extended: list[Task] = []
        for task in await self._store.list_tasks(held):
            try:
                extended.append(
                    await self.heartbeat(agent, task.id, task.attempt, None, lease_seconds)
                )
            except (errors.Conflict, errors.NotFound):
                continue
        return extended

    async def complete(self, agent: Agent, task_id: int, attempt: int, result: JSONValue) -> Task:
        """Records the result. Refuses a stale attempt with `Conflict`; the same result
        repeated for the current attempt is accepted once (a different one is a `Conflict`)."""
        _json_size(result, "a result", MAX_PAYLOAD_BYTES)
        return await self._finish(agent, task_id, attempt, TaskStatus.COMPLETED, result, None)

    async def fail(self, agent: Agent, task_id: int, attempt: int, message: str) -> Task:
        """Records the attempt as failed with the agent's message (same rules as `complete`).

        A task with a `fail_limit` above 1 "soft-fails": it goes back to the queue for
        agents that have not failed it, until that many agents failed it or none is left.
        Agents that fail too many tasks of a job's type are blacklisted for them.
        """
        error = str(message)[:10_000] or "the agent reported a failure without a message"
        task = await self._store.get_task(task_id)
        candidates = await self._candidates(task) if task and task.fail_limit > 1 else ()
        task, recorded = await self._store.fail_task(
            task_id,
            agent.id,
            attempt,
            error,
            self._clock.now(),
            blacklist_threshold=self.blacklist_threshold,
            candidates=candidates,
        )
        if recorded:
            requeued = [task] if task.status is TaskStatus.QUEUED else []
            await self._bus.notify(self._wake_channels(requeued) | {task_channel(task_id)})
        return task

    async def _candidates(self, task: Task) -> list[int]:
        """The agents that could take the task if it went back to the queue."""
        return [
            a.id
            for a in await self._store.list_agents()
            if a.enabled and (not a.task_types or task.type in a.task_types)
        ]

    async def release(self, agent: Agent, task_id: int, attempt: int) -> Task:
        """The agent gives its current attempt back (it stops without a verdict): the task
        goes back to the queue. Raises `NotFound`, or `Conflict` for a stale attempt."""
        task = await self._store.release_task(task_id, agent.id, attempt, self._clock.now())
        await self._bus.notify(self._wake_channels([task]) | {task_channel(task_id)})
        return task

    async def confirm_cancel(self, agent: Agent, task_id: int, attempt: int) -> Task:
        return await self._finish(agent, task_id, attempt, TaskStatus.CANCELLED, None, "cancelled")

    async def _finish(
        self,
        agent: Agent,
        task_id: int,
        attempt: int,
        status: TaskStatus,
        result: JSONValue,
        error: str | None,
    ) -> Task:
        outcome = Outcome(task_id, agent.id, attempt, status, result, error)
        task, recorded = await self._finishes(outcome)
        if recorded:
            await self._bus.notify([task_channel(task_id)])
        return task

    async def log(self, agent: Agent, task_id: int, attempt: int, text: str) -> None:
        """Appends to the task's log; only the current attempt's agent may write."""
        if len(text.encode()) > MAX_LOG_CHUNK_BYTES:
            raise errors.TooLarge(f"a log chunk must be at most {MAX_LOG_CHUNK_BYTES} bytes")
        await self._current_attempt(agent, task_id, attempt)
        await self._store.append_log(task_id, attempt, self._clock.now(), text)

    async def add_output(self, agent: Agent, task_id: int, attempt: int, data: JSONValue) -> Output:
        _json_size(data, "an output", MAX_PAYLOAD_BYTES)
        await self._current_attempt(agent, task_id, attempt)
        return await self._store.add_output(task_id, self._clock.now(), data)

    async def attempt_of(self, agent: Agent, task_id: int) -> int:
        """The attempt this agent holds (or last held) on the task, for protocols whose
        reports carry no attempt number. Raises `NotFound` or `Conflict`."""
        task = await self._store.get_task(task_id)
        if task is None:
            raise errors.NotFound(f"no task {task_id}")
        if task.lease_owner != agent.id:
            raise errors.Conflict(f"task {task_id} is not leased to {agent.name}")
        return task.attempt

    async def _current_attempt(self, agent: Agent, task_id: int, attempt: int) -> Task:
        task = await self._store.get_task(task_id)
        if task is None:
            raise errors.NotFound(f"no task {task_id}")
        if task.lease_owner != agent.id or task.attempt != attempt:
            raise errors.Conflict(f"attempt {attempt} of task {task_id} is not current")
        return task

    async def read_log(self, task_id: int, after_id: int = 0, limit: int = 1000) -> list[LogChunk]:
        return await self._store.read_log(task_id, after_id, limit)

    async def outputs(self, task_id: int) -> list[Output]:
        return await self._store.list_outputs(task_id)

    async def sign_off(self, agent: Agent) -> list[Task]:
        """The agent leaves: its active tasks go back to the queue (the attempt it had counts,
        so a task on its last allowed attempt fails), and cancel requests are confirmed."""
        released = await self._store.release_agent_tasks(agent.id, self._clock.now())
        await self._bus.notify(self._wake_channels(released))
        return released

    # -- the operator's side ------------------------------------------------------------

    async def cancel(self, task_id: int) -> Task:
        """A queued task is cancelled at once; an active one is asked to stop and ends as
        cancelled when its agent confirms (or its lease runs out)."""
        task = await self._store.request_cancel(task_id, self._clock.now())
        channels = {task_channel(task_id)}
        if task.lease_owner is not None:
            owner = await self._store.get_agent_by_id(task.lease_owner)
            if owner is not None:
                channels.update(control_channels(owner.name))
        await self._bus.notify(channels)
        return task

    async def requeue(self, task_id: int, attempts: int = 3) -> Task:
        """Puts a finished task back in the queue with `attempts` more attempts (an
        operator's retry). Attempt numbers keep counting up, so a late report from the
        earlier run stays stale."""
        if not 1 <= attempts <= 100:
            raise errors.Invalid("attempts must be between 1 and 100")
        task = await self._store.requeue_task(task_id, self._clock.now(), attempts)
        await self._bus.notify(self._wake_channels([task]) | {task_channel(task_id)})
        return task

    async def reap(self) -> list[Task]:
        """Handles expired leases and timeouts; run periodically by the server."""
        changed = await self._store.expire_leases(self._clock.now())
        if changed:
            queued = [t for t in changed if t.status is TaskStatus.QUEUED]
            channels = self._wake_channels(queued) | {task_channel(t.id) for t in changed}
            await self._bus.notify(channels)
            log.info("reaped %d tasks", len(changed), extra={"action": "reap"})
        return changed
