"""The native REST API under /api/v1: operators' endpoints and the agents' HTTP fallback.

Every endpoint declares the role it needs through a dependency; agents see only their own
tasks and events. Errors come out as problem+json through `ProblemRoute`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.auth import admin, agent, caller, services
from taskfleet.api.problems import ProblemRoute
from taskfleet.core import errors, models
from taskfleet.core.accounts import SESSION_TTL_SECONDS
from taskfleet.core.models import Agent, Principal, Progress, TaskFilter, TaskStatus
from taskfleet.services import Services

router = APIRouter(prefix="/api/v1", route_class=ProblemRoute)

Admin = Annotated[Principal, Depends(admin)]
Caller = Annotated[Principal, Depends(caller)]
AgentCaller = Annotated[Agent, Depends(agent)]
Found = Annotated[Services, Depends(services)]
MAX_WAIT_SECONDS = 55.0  #: long-polls stay under the 60 s proxies allow for idle requests
TaskId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
JobId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
After = Annotated[int, Query(ge=0, le=s.MAX_ID, description="only ids greater than this")]


# -- sessions -----------------------------------------------------------------------------


@router.post("/login", response_model=s.Session, tags=["sessions"])
async def login(body: s.Login, found: Found) -> s.Session:
    token = await found.accounts.login(body.name, body.secret)
    return s.Session(token=token, expires_in=SESSION_TTL_SECONDS)


@router.post("/logout", status_code=204, tags=["sessions"])
async def logout(request: Request, found: Found) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("send the session token as `Authorization: Bearer <token>`")
    await found.accounts.logout(token.strip())
    return Response(status_code=204)


@router.get("/me", tags=["sessions"])
async def me(who: Caller) -> dict[str, Any]:
    return {"name": who.name, "role": who.role.value}


# -- accounts and registration ---------------------------------------------------------------


@router.get("/accounts", response_model=list[s.AccountOut], tags=["accounts"])
async def list_accounts(_: Admin, found: Found) -> list[s.AccountOut]:
    return [s.AccountOut.of(a) for a in await found.accounts.all()]


@router.post("/accounts", status_code=201, response_model=s.AccountOut, tags=["accounts"])
async def add_account(body: s.AccountIn, _: Admin, found: Found) -> s.AccountOut:
    return s.AccountOut.of(await found.accounts.add(body.name, body.role, body.secret))


@router.delete("/accounts/{name}", status_code=204, tags=["accounts"])
async def remove_account(name: str, _: Admin, found: Found) -> Response:
    await found.accounts.remove(name)
    return Response(status_code=204)


@router.get("/registration", response_model=s.Policy, tags=["accounts"])
async def get_policy(_: Admin, found: Found) -> s.Policy:
    return s.Policy(policy=await found.accounts.registration_policy())


@router.put("/registration", response_model=s.Policy, tags=["accounts"])
async def set_policy(body: s.Policy, _: Admin, found: Found) -> s.Policy:
    await found.accounts.set_registration_policy(body.policy)
    return body


@router.post("/register", status_code=201, response_model=s.AgentOut, tags=["accounts"])
async def register(body: s.Registration, found: Found) -> s.AgentOut:
    """Self-registration of an agent, as the registration policy allows; with a
    registration `token`, under any policy (the agent joins the configured group)."""
    if body.token is not None:
        await found.registration.register_agent(body.name, body.secret, body.token)
    else:
        await found.accounts.register_agent(body.name, body.secret)
    return s.AgentOut.of(await found.agents.get(body.name))


# -- agents, groups, events ---------------------------------------------------------------


@router.get("/agents", response_model=list[s.AgentOut], tags=["agents"])
async def list_agents(_: Admin, found: Found) -> list[s.AgentOut]:
    return [s.AgentOut.of(a) for a in await found.agents.all()]


@router.get("/agents/{name}", response_model=s.AgentOut, tags=["agents"])
async def show_agent(name: str, _: Admin, found: Found) -> s.AgentOut:
    return s.AgentOut.of(await found.agents.get(name))


@router.patch("/agents/{name}", response_model=s.AgentOut, tags=["agents"])
async def patch_agent(name: str, body: s.AgentPatch, _: Admin, found: Found) -> s.AgentOut:
    agents = found.agents
    updated = await agents.update(
        name,
        enabled=body.enabled,
        tags=body.tags,
        nickname=body.nickname,
        metadata=body.metadata,
    )
    if body.groups is not None:
        updated = await agents.set_groups(name, body.groups)
    if body.requested_status is not None:
        updated = await agents.request_status(name, body.requested_status, body.lazy)
    return s.AgentOut.of(updated)


@router.delete("/agents/{name}", status_code=204, tags=["agents"])
async def delete_agent(name: str, _: Admin, found: Found) -> Response:
    await found.agents.delete(name)
    return Response(status_code=204)


@router.get("/agents/{name}/events", response_model=list[s.EventOut], tags=["events"])
async def agent_events(
    name: str, _: Admin, found: Found, limit: Annotated[int | None, Query(ge=1, le=10_000)] = None
) -> list[s.EventOut]:
    events = await found.agents.list_events(name, limit)
    return [s.EventOut(id=e.id, time=s.iso(e.time), data=e.data) for e in events]


@router.post("/events", status_code=201, response_model=s.EventOut, tags=["events"])
async def post_event(me: AgentCaller, found: Found, data: Annotated[Any, Body()]) -> s.EventOut:
    """An agent records an event (any JSON). Admins read them per agent."""
    event = await found.agents.post_event(me, data)
    return s.EventOut(id=event.id, time=s.iso(event.time), data=event.data)


@router.get("/groups", response_model=list[s.GroupOut], tags=["groups"])
async def list_groups(_: Admin, found: Found) -> list[s.GroupOut]:
    return [
        s.GroupOut(name=g.name, created_at=s.iso(g.created_at))
        for g in await found.agents.list_groups()
    ]


@router.post("/groups", status_code=201, response_model=s.GroupOut, tags=["groups"])
async def add_group(body: s.GroupIn, _: Admin, found: Found) -> s.GroupOut:
    group = await found.agents.add_group(body.name)
    return s.GroupOut(name=group.name, created_at=s.iso(group.created_at))


@router.get("/groups/{name}/members", response_model=list[s.AgentOut], tags=["groups"])
async def group_members(name: str, _: Admin, found: Found) -> list[s.AgentOut]:
    return [s.AgentOut.of(a) for a in await found.agents.group_members(name)]


@router.delete("/groups/{name}", status_code=204, tags=["groups"])
async def delete_group(name: str, _: Admin, found: Found) -> Response:
    await found.agents.delete_group(name)
    return Response(status_code=204)


# -- jobs and tasks -----------------------------------------------------------------------


@router.post("/jobs", status_code=201, response_model=s.JobOut, tags=["jobs"])
async def add_job(body: s.JobIn, _: Admin, found: Found) -> s.JobOut:
    job = await found.store.add_job(
        body.name, body.type, body.priority, body.settings, found.clock.now()
    )
    return s.JobOut.of(job)


@router.get("/jobs", response_model=list[s.JobOut], tags=["jobs"])
async def list_jobs(
    _: Admin, found: Found, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[s.JobOut]:
    return [s.JobOut.of(j) for j in await found.store.list_jobs(limit)]


@router.get("/jobs/{job_id}", response_model=s.JobOut, tags=["jobs"])
async def show_job(job_id: JobId, _: Admin, found: Found) -> s.JobOut:
    job = await found.store.get_job(job_id)
    if job is None:
        raise errors.NotFound(f"no job {job_id}")
    return s.JobOut.of(job)


async def _submit(found: Services, items: list[s.TaskIn]) -> list[s.TaskOut]:
    created = []
    plain = [t.to_new() for t in items if not t.broadcast]
    if plain:
        created += await found.tasks.submit(plain)
    for item in (t for t in items if t.broadcast):
        assert item.group is not None
        created += await found.tasks.broadcast(item.group, item.to_new())
    return [s.TaskOut.of(t) for t in created]


@router.post("/tasks", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_task(body: s.TaskIn, _: Admin, found: Found) -> list[s.TaskOut]:
    """Queues one task (or, with `broadcast`, one per group member). Returns what was queued."""
    return await _submit(found, [body])


@router.post("/tasks/batch", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_tasks(body: s.TaskBatch, _: Admin, found: Found) -> list[s.TaskOut]:
    return await _submit(found, body.tasks)


@router.get("/tasks", response_model=s.TaskPage, tags=["tasks"])
async def list_tasks(
    who: Caller,
    found: Found,
    status: TaskStatus | None = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[int | None, Query(ge=1, le=s.MAX_ID)] = None,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> s.TaskPage:
    """Tasks in id order, filtered; an agent sees only the tasks it ran."""
    agent_id = None
    if not who.is_admin:
        agent_id = (await found.agents.for_principal(who)).id
    elif agent is not None:
        agent_id = (await found.agents.get(agent)).id
    query = TaskFilter(
        status=status, type=type, agent_id=agent_id, job_id=job, after_id=after, limit=limit
    )
    found_tasks = await found.tasks.find(query)
    next_after = found_tasks[-1].id if len(found_tasks) == limit else None
    return s.TaskPage(tasks=[s.TaskOut.of(t) for t in found_tasks], next_after=next_after)


@router.get("/tasks/{task_id}", response_model=s.TaskOut, tags=["tasks"])
async def show_task(task_id: TaskId, who: Caller, found: Found) -> s.TaskOut:
    return s.TaskOut.of(await found.tasks.get(task_id, who))


@router.get("/tasks/{task_id}/wait", response_model=s.TaskOut, tags=["tasks"])
async def wait_task(
    task_id: TaskId,
    who: Caller,
    found: Found,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 25.0,
) -> s.TaskOut:
    """Returns once the task has finished, or as it stands after `timeout` seconds."""
    return s.TaskOut.of(await found.tasks.wait(task_id, timeout, who))


@router.post("/tasks/{task_id}/cancel", response_model=s.TaskOut, tags=["tasks"])
async def cancel_task(task_id: TaskId, _: Admin, found: Found) -> s.TaskOut:
    return s.TaskOut.of(await found.tasks.cancel(task_id))


@router.post("/tasks/{task_id}/requeue", response_model=s.TaskOut, tags=["tasks"])
async def requeue_task(
    task_id: TaskId,
    _: Admin,
    found: Found,
    attempts: Annotated[int, Query(ge=1, le=100, description="attempts it gets anew")] = 3,
) -> s.TaskOut:
    """Puts a finished task back in the queue; attempt numbers keep counting up."""
    return s.TaskOut.of(await found.tasks.requeue(task_id, attempts))


@router.get("/tasks/{task_id}/logs", response_model=list[s.LogChunkOut], tags=["tasks"])
async def task_logs(
    task_id: TaskId,
    who: Caller,
    found: Found,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[s.LogChunkOut]:
    await found.tasks.get(task_id, who)
    chunks = await found.tasks.read_log(task_id, after, limit)
    return [
        s.LogChunkOut(id=c.id, attempt=c.attempt, time=s.iso(c.time), text=c.text) for c in chunks
    ]


@router.get("/tasks/{task_id}/outputs", response_model=list[s.OutputOut], tags=["tasks"])
async def task_outputs(task_id: TaskId, who: Caller, found: Found) -> list[s.OutputOut]:
    await found.tasks.get(task_id, who)
    return [
        s.OutputOut(id=o.id, time=s.iso(o.time), data=o.data)
        for o in await found.tasks.outputs(task_id)
    ]


# -- the agent's HTTP fallback (long-poll) ----------------------------------------------------


@router.post("/agent/hello", response_model=s.AgentOut, tags=["agent"])
async def hello(body: s.Hello, me: AgentCaller, found: Found) -> s.AgentOut:
    updated = await found.agents.hello(
        me,
        version=body.version,
        platform=body.platform,
        task_types=body.task_types,
        tags=body.tags,
    )
    return s.AgentOut.of(updated)


@router.post(
    "/agent/claim",
    response_model=s.TaskOut | None,
    tags=["agent"],
    responses={204: {"description": "no task within the wait"}},
)
async def claim(
    me: AgentCaller,
    found: Found,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 25.0,
) -> Any:
    """Long-poll for the next task; 204 when none came within `wait` seconds."""
    await found.agents.seen(me)
    task = await found.tasks.claim_wait(me, wait)
    return Response(status_code=204) if task is None else s.TaskOut.of(task)


@router.post("/agent/tasks/{task_id}/progress", response_model=s.LeaseOut, tags=["agent"])
async def progress(
    task_id: TaskId, body: s.ProgressIn, me: AgentCaller, found: Found
) -> s.LeaseOut:
    """Extends the lease; answers 409 when the attempt is no longer current."""
    report = Progress(percent=body.percent, eta=body.eta, activity=body.activity)
    task = await found.tasks.heartbeat(me, task_id, body.attempt, report)
    return s.LeaseOut(
        status=task.status,
        cancel_requested=task.status is TaskStatus.CANCEL_REQUESTED,
        lease_expires=s.iso(task.lease_expires),
    )


@router.post("/agent/tasks/{task_id}/result", response_model=s.TaskOut, tags=["agent"])
async def result(task_id: TaskId, body: s.ResultIn, me: AgentCaller, found: Found) -> s.TaskOut:
    """Records the attempt's outcome; a repeat for the same attempt is accepted once."""
    tasks = found.tasks
    if body.status == "complete":
        task = await tasks.complete(me, task_id, body.attempt, body.result)
    elif body.status == "error":
        task = await tasks.fail(me, task_id, body.attempt, body.msg)
    else:
        task = await tasks.confirm_cancel(me, task_id, body.attempt)
    return s.TaskOut.of(task)


@router.post("/agent/tasks/{task_id}/log", status_code=204, tags=["agent"])
async def append_log(task_id: TaskId, body: s.LogIn, me: AgentCaller, found: Found) -> Response:
    await found.tasks.log(me, task_id, body.attempt, body.text)
    return Response(status_code=204)


@router.post(
    "/agent/tasks/{task_id}/outputs", status_code=201, response_model=s.OutputOut, tags=["agent"]
)
async def add_output(
    task_id: TaskId, body: s.OutputIn, me: AgentCaller, found: Found
) -> s.OutputOut:
    out = await found.tasks.add_output(me, task_id, body.attempt, body.data)
    return s.OutputOut(id=out.id, time=s.iso(out.time), data=out.data)


@router.post("/agent/sign-off", response_model=list[s.TaskOut], tags=["agent"])
async def sign_off(me: AgentCaller, found: Found) -> list[s.TaskOut]:
    """The agent leaves: its running tasks return to the queue."""
    released = await found.tasks.sign_off(me)
    await found.agents.seen(me, online=False)
    return [s.TaskOut.of(t) for t in released]


# -- jobs of tasks with dependencies (Flamenco's jobs) ---------------------------------------


async def _job_summary(found: Services, job_id: int) -> s.JobSummaryOut:
    summary = await found.jobs.get(job_id)
    return s.JobSummaryOut.of(summary, await found.jobs.blacklist(job_id))


@router.post("/jobs/submit", status_code=201, response_model=s.JobSubmitted, tags=["jobs"])
async def submit_job(body: s.JobSubmission, _: Admin, found: Found) -> s.JobSubmitted:
    """Queues a job with its tasks in one transaction. Tasks run by job priority, task
    priority and age, on agents that take their `task_type`, once their parents completed."""
    job, created = await found.jobs.submit(body.to_new())
    summary = await _job_summary(found, job.id)
    return s.JobSubmitted(**summary.model_dump(), tasks=[s.TaskOut.of(t) for t in created])


@router.get("/job-summaries", response_model=list[s.JobSummaryOut], tags=["jobs"])
async def job_summaries(
    _: Admin, found: Found, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[s.JobSummaryOut]:
    """Jobs, newest first, with their tasks counted by status."""
    return [
        s.JobSummaryOut.of(j, await found.jobs.blacklist(j.job.id))
        for j in await found.jobs.all(limit)
    ]


@router.get("/jobs/{job_id}/summary", response_model=s.JobSummaryOut, tags=["jobs"])
async def job_summary(job_id: JobId, _: Admin, found: Found) -> s.JobSummaryOut:
    return await _job_summary(found, job_id)


@router.post("/jobs/{job_id}/requeue-failed", response_model=s.RequeuedOut, tags=["jobs"])
async def requeue_failed(job_id: JobId, _: Admin, found: Found) -> s.RequeuedOut:
    """Queues every failed task of the job again, forgetting who failed them and the
    job's blacklist."""
    return s.RequeuedOut(requeued=[t.id for t in await found.jobs.requeue_failed(job_id)])


@router.get("/jobs/{job_id}/outputs", response_model=list[s.JobOutputOut], tags=["jobs"])
async def job_outputs(
    job_id: JobId, _: Admin, found: Found, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> list[s.JobOutputOut]:
    """Files the job's tasks produced (Flamenco's /output-produced), oldest first."""
    return [
        s.JobOutputOut(
            id=o.id, task_id=o.task_id, agent_id=o.agent_id, time=s.iso(o.time), data=o.data
        )
        for o in await found.jobs.outputs(job_id, limit)
    ]


@router.get("/tasks/{task_id}/failures", response_model=list[s.TaskFailureOut], tags=["tasks"])
async def task_failures(task_id: TaskId, _: Admin, found: Found) -> list[s.TaskFailureOut]:
    """The failed attempts held against the task: those agents are not offered it again."""
    await found.tasks.get(task_id)
    return [
        s.TaskFailureOut(attempt=f.attempt, agent=f.agent_name, time=s.iso(f.time), error=f.error)
        for f in await found.jobs.failures(task_id)
    ]


# -- schedules: task definitions that run every interval on the agents a route selects ----------

ScheduleId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


async def _schedule_in(found: Services, body: s.ScheduleIn) -> models.NewSchedule:
    return body.to_new([(await found.agents.get(name)).id for name in body.route.agents])


async def _schedule_out(found: Services, schedules: list[models.Schedule]) -> list[s.ScheduleOut]:
    names = {a.id: a.name for a in await found.agents.all()}
    return [s.ScheduleOut.of(sc, names) for sc in schedules]


@router.post("/schedules", status_code=201, response_model=s.ScheduleOut, tags=["schedules"])
async def add_schedule(body: s.ScheduleIn, _: Admin, found: Found) -> s.ScheduleOut:
    """Runs `type` with `config` as payload every `interval` seconds on the routed agents:
    one task per run and agent (agents that run schedules themselves, such as raintank's,
    get the definition instead). The first run is one interval from now."""
    created = await found.schedules.create(await _schedule_in(found, body))
    return (await _schedule_out(found, [created]))[0]


@router.get("/schedules", response_model=list[s.ScheduleOut], tags=["schedules"])
async def list_schedules(
    _: Admin,
    found: Found,
    type: Annotated[str | None, Query(max_length=128)] = None,
    enabled: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=s.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.ScheduleOut]:
    query = models.ScheduleFilter(type=type, enabled=enabled, offset=offset, limit=limit)
    return await _schedule_out(found, await found.schedules.find(query))


@router.get("/schedules/{schedule_id}", response_model=s.ScheduleOut, tags=["schedules"])
async def show_schedule(schedule_id: ScheduleId, _: Admin, found: Found) -> s.ScheduleOut:
    return (await _schedule_out(found, [await found.schedules.get(schedule_id)]))[0]


@router.put("/schedules/{schedule_id}", response_model=s.ScheduleOut, tags=["schedules"])
async def replace_schedule(
    schedule_id: ScheduleId, body: s.ScheduleIn, _: Admin, found: Found
) -> s.ScheduleOut:
    """Replaces the definition; agents that run schedules themselves are told at once."""
    updated = await found.schedules.update(schedule_id, await _schedule_in(found, body))
    return (await _schedule_out(found, [updated]))[0]


@router.delete("/schedules/{schedule_id}", status_code=204, tags=["schedules"])
async def delete_schedule(schedule_id: ScheduleId, _: Admin, found: Found) -> Response:
    """Deletes the schedule; the tasks of its earlier runs stay."""
    if await found.schedules.delete(schedule_id) is None:
        raise errors.NotFound(f"no schedule {schedule_id}")
    return Response(status_code=204)


@router.get("/schedules/{schedule_id}/runs", response_model=list[s.TaskOut], tags=["schedules"])
async def schedule_runs(
    schedule_id: ScheduleId,
    _: Admin,
    found: Found,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.TaskOut]:
    """The tasks the schedule's runs created, with their status and results, in id order."""
    return [s.TaskOut.of(t) for t in await found.schedules.runs(schedule_id, after, limit)]


# -- registration tokens and agents' public keys ---------------------------------------------

TokenId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.post(
    "/registration-tokens",
    status_code=201,
    response_model=s.RegistrationTokenOut,
    tags=["registration"],
)
async def create_registration_token(
    body: s.RegistrationTokenIn, _: Admin, found: Found
) -> s.RegistrationTokenOut:
    """A token hosts register with (`POST /register` with `token`, or Django Remotes' host
    registration). The answer is the only time the token is shown."""
    created, token = await found.registration.create_token(body.name, body.expires_in)
    return s.RegistrationTokenOut.of(created, token)


@router.get(
    "/registration-tokens", response_model=list[s.RegistrationTokenOut], tags=["registration"]
)
async def list_registration_tokens(_: Admin, found: Found) -> list[s.RegistrationTokenOut]:
    return [s.RegistrationTokenOut.of(t) for t in await found.registration.tokens()]


@router.delete(
    "/registration-tokens/{token_id}",
    response_model=s.RegistrationTokenOut,
    tags=["registration"],
)
async def revoke_registration_token(
    token_id: TokenId, _: Admin, found: Found
) -> s.RegistrationTokenOut:
    """Revokes the token: no more registrations with it; hosts registered with it stay."""
    return s.RegistrationTokenOut.of(await found.registration.revoke_token(token_id))


@router.put("/agents/{name}/public-key", response_model=s.AgentOut, tags=["registration"])
async def set_public_key(name: str, body: s.PublicKeyIn, _: Admin, found: Found) -> s.AgentOut:
    """Sets the agent's RSA public key, verified on the admin's word."""
    return s.AgentOut.of(await found.registration.set_public_key(name, body.public_key))


@router.put("/agent/public-key", response_model=s.AgentOut, tags=["agent"])
async def prove_public_key(body: s.KeyProofIn, me: AgentCaller, found: Found) -> s.AgentOut:
    """The calling agent registers its RSA public key, proving it holds the private key."""
    updated = await found.registration.prove_key(me, body.public_key, body.signature)
    return s.AgentOut.of(updated)


@router.post("/tasks/sealed", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_sealed(body: s.TaskIn, _: Admin, found: Found) -> list[s.TaskOut]:
    """Like `POST /tasks`, with the payload sealed to the agent's verified public key (one
    task per member, each sealed to its own key, with `broadcast`): the server keeps only
    what the agent can open."""
    if body.broadcast and body.group:
        members = await found.agents.group_members(body.group)
        template = body.to_new()
        new = [
            replace(template, target_kind=models.TargetKind.AGENT, target=a.name) for a in members
        ]
    elif body.agent:
        new = [body.to_new()]
    else:
        raise errors.Invalid("a sealed task needs an `agent`, or a `group` with `broadcast`")
    submitted = await found.tasks.submit(await found.registration.seal(new))
    return [s.TaskOut.of(t) for t in submitted]


# -- commands and command groups (Django Remotes hosts run them) ---------------------------

CommandGroupId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
CommandId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.post(
    "/command-groups", status_code=201, response_model=s.CommandGroupOut, tags=["commands"]
)
async def add_command_group(body: s.CommandGroupIn, _: Admin, found: Found) -> s.CommandGroupOut:
    """Commands of the group run on the members of `host_groups`, while the group is active
    and inside its time window; groups run in `order`."""
    return s.CommandGroupOut.of(await found.commands.add_group(body.to_new()))


@router.get("/command-groups", response_model=list[s.CommandGroupOut], tags=["commands"])
async def list_command_groups(_: Admin, found: Found) -> list[s.CommandGroupOut]:
    return [s.CommandGroupOut.of(g) for g in await found.commands.groups()]


@router.get("/command-groups/{group_id}", response_model=s.CommandGroupOut, tags=["commands"])
async def show_command_group(group_id: CommandGroupId, _: Admin, found: Found) -> s.CommandGroupOut:
    return s.CommandGroupOut.of(await found.commands.group(group_id))


@router.put("/command-groups/{group_id}", response_model=s.CommandGroupOut, tags=["commands"])
async def replace_command_group(
    group_id: CommandGroupId, body: s.CommandGroupIn, _: Admin, found: Found
) -> s.CommandGroupOut:
    return s.CommandGroupOut.of(await found.commands.update_group(group_id, body.to_new()))


@router.delete("/command-groups/{group_id}", status_code=204, tags=["commands"])
async def delete_command_group(group_id: CommandGroupId, _: Admin, found: Found) -> Response:
    """Deletes the group and its commands; the tasks of their runs stay."""
    await found.commands.delete_group(group_id)
    return Response(status_code=204)


@router.post("/commands", status_code=201, response_model=s.HostCommandOut, tags=["commands"])
async def add_command(body: s.HostCommandIn, _: Admin, found: Found) -> s.HostCommandOut:
    """Python source every host of the group's host groups runs once. Each run is a task
    of type `command` targeted at the host."""
    return s.HostCommandOut.of(await found.commands.add(body.to_new()))


@router.get("/commands", response_model=list[s.HostCommandOut], tags=["commands"])
async def list_commands(
    _: Admin,
    found: Found,
    group: Annotated[int | None, Query(ge=1, le=s.MAX_ID, description="one group's")] = None,
) -> list[s.HostCommandOut]:
    return [s.HostCommandOut.of(c) for c in await found.commands.all(group)]


@router.get("/commands/{command_id}", response_model=s.HostCommandOut, tags=["commands"])
async def show_command(command_id: CommandId, _: Admin, found: Found) -> s.HostCommandOut:
    return s.HostCommandOut.of(await found.commands.get(command_id))


@router.put("/commands/{command_id}", response_model=s.HostCommandOut, tags=["commands"])
async def replace_command(
    command_id: CommandId, body: s.HostCommandIn, _: Admin, found: Found
) -> s.HostCommandOut:
    """Replaces the definition; hosts that ran it do not run it again."""
    return s.HostCommandOut.of(await found.commands.update(command_id, body.to_new()))


@router.delete("/commands/{command_id}", status_code=204, tags=["commands"])
async def delete_command(command_id: CommandId, _: Admin, found: Found) -> Response:
    await found.commands.delete(command_id)
    return Response(status_code=204)


@router.get("/commands/{command_id}/runs", response_model=list[s.TaskOut], tags=["commands"])
async def command_runs(
    command_id: CommandId,
    _: Admin,
    found: Found,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.TaskOut]:
    """The tasks of the command's runs on every host, newest first."""
    return [s.TaskOut.of(t) for t in await found.commands.runs(command_id, limit)]
