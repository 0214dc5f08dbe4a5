"""Jobs: tasks submitted together, with dependencies and job priority (Flamenco's jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    Found,
    JobId,
    TaskId,
)
from taskfleet.services import Services

router = APIRouter(route_class=ProblemRoute)


async def _job_summary(found: Services, job_id: int) -> s.JobSummaryOut:
    summary = await found.jobs.get(job_id)
    return s.JobSummaryOut.of(summary, await found.jobs.blacklist(job_id))


@router.post("/jobs", status_code=201, response_model=s.JobSubmitted, tags=["jobs"])
async def submit_job(body: s.JobSubmission, _: Admin, found: Found) -> s.JobSubmitted:
    """Queues a job with its tasks in one transaction. Tasks run by job priority, task
    priority and age, on agents that take their `task_type`, once their parents completed.
    A job may start empty: tasks submitted later with its `job_id` join it."""
    job, created = await found.jobs.submit(body.to_new())
    summary = await _job_summary(found, job.id)
    return s.JobSubmitted(**summary.model_dump(), tasks=[s.TaskOut.of(t) for t in created])


@router.get("/jobs", response_model=list[s.JobSummaryOut], tags=["jobs"])
async def list_jobs(
    _: Admin, found: Found, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[s.JobSummaryOut]:
    """Jobs, newest first, with their tasks counted by status."""
    return [
        s.JobSummaryOut.of(j, await found.jobs.blacklist(j.job.id))
        for j in await found.jobs.all(limit)
    ]


@router.get("/jobs/{job_id}", response_model=s.JobSummaryOut, tags=["jobs"])
async def show_job(job_id: JobId, _: Admin, found: Found) -> s.JobSummaryOut:
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
