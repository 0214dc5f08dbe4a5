"""The engine's services wired together: what every transport is handed."""

from __future__ import annotations

from dataclasses import dataclass

from taskfleet.config import Settings
from taskfleet.core.accounts import AccountService
from taskfleet.core.agents import AgentService
from taskfleet.core.commands import CommandService
from taskfleet.core.jobs import JobService
from taskfleet.core.ports import Bus, Clock, Store, SystemClock
from taskfleet.core.registration import RegistrationService
from taskfleet.core.schedules import ScheduleService
from taskfleet.core.tasks import TaskService
from taskfleet.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    bus: Bus
    clock: Clock
    accounts: AccountService
    agents: AgentService
    tasks: TaskService
    metrics: Metrics
    jobs: JobService
    schedules: ScheduleService
    registration: RegistrationService
    commands: CommandService


def wire(settings: Settings, store: Store, bus: Bus, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    metrics = Metrics()
    accounts = AccountService(store, clock, api_keys=settings.api_keys)
    tasks = TaskService(
        store,
        bus,
        clock,
        lease_seconds=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        on_claim=metrics.claimed,
        blacklist_threshold=settings.blacklist_threshold,
    )
    return Services(
        settings=settings,
        store=store,
        bus=bus,
        clock=clock,
        accounts=accounts,
        agents=AgentService(store, bus, clock, event_bound=settings.event_bound),
        tasks=tasks,
        metrics=metrics,
        jobs=JobService(
            store,
            bus,
            clock,
            fail_limit=settings.task_fail_limit,
            output_bound=settings.job_output_bound,
        ),
        schedules=ScheduleService(
            store, bus, clock, move_after=settings.schedule_move_after_seconds
        ),
        registration=RegistrationService(store, clock, accounts, settings.registration_group),
        commands=CommandService(store, clock, tasks, settings.remotes_lease_seconds),
    )
