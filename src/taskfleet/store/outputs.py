"""Queries for the outputs a job's tasks produced: a bounded queue per job, newest kept."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import delete, insert, select

from taskfleet.core.models import JobOutput, JSONValue
from taskfleet.store.base import Base
from taskfleet.store.tables import job_outputs


class OutputQueries(Base):
    async def add_job_output(
        self,
        job_id: int,
        task_id: int | None,
        agent_id: int | None,
        time: float,
        data: JSONValue,
        bound: int,
    ) -> JobOutput:
        output = JobOutput(
            id=0, job_id=job_id, task_id=task_id, agent_id=agent_id, time=time, data=data
        )
        values = {k: getattr(output, k) for k in ("job_id", "task_id", "agent_id", "time", "data")}
        async with self._write() as conn:
            new_id = (
                await conn.execute(insert(job_outputs).values(values).returning(job_outputs.c.id))
            ).scalar_one()
            # A bounded queue: keep the newest `bound` outputs of this job.
            oldest_kept = (
                select(job_outputs.c.id)
                .where(job_outputs.c.job_id == job_id)
                .order_by(job_outputs.c.id.desc())
                .offset(bound - 1)
                .limit(1)
                .scalar_subquery()
            )
            await conn.execute(
                delete(job_outputs).where(
                    job_outputs.c.job_id == job_id, job_outputs.c.id < oldest_kept
                )
            )
        return replace(output, id=new_id)

    async def list_job_outputs(self, job_id: int, limit: int) -> list[JobOutput]:
        newest = (
            select(job_outputs)
            .where(job_outputs.c.job_id == job_id)
            .order_by(job_outputs.c.id.desc())
            .limit(limit)
            .subquery()
        )
        async with self._read() as conn:
            rows = await conn.execute(select(newest).order_by(newest.c.id))
            return [
                JobOutput(
                    id=r.id,
                    job_id=r.job_id,
                    task_id=r.task_id,
                    agent_id=r.agent_id,
                    time=r.time,
                    data=r.data,
                )
                for r in rows
            ]
