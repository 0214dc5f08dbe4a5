"""The targets of issue 9, judged from the figures of this run (never asserted in tests)."""

from __future__ import annotations

from common import Results, Target

FLEET_GOAL = 10_000  #: agents
KIB_GOAL = 20.0  #: server memory per agent
BROADCAST_GOAL = 2.0  #: seconds
DEPTH_HIGH, DEPTH_LOW = 1_000_000, 1_000


def judge(results: Results, backends: list[str]) -> None:
    for backend in backends:
        _throughput(results, backend)
        _latency(results, backend)
        _fleet(results, backend)
        _depth(results, backend)


def _fmt(value: float | None, unit: str) -> str:
    return "not measured" if value is None else f"{value:,.3g} {unit}"


def _add(results: Results, name: str, goal: str, measured: str, met: bool | None) -> None:
    results.targets.append(Target(name, goal, measured, met))


def _throughput(results: Results, backend: str) -> None:
    ratio = results.get("throughput", backend, "taskfleet / Celery+Redis")
    lost = results.get("throughput", backend, "kill -9: accepted tasks lost")
    unfinished = results.get("throughput", backend, "kill -9: tasks not completed after restart")
    _add(
        results,
        f"throughput vs Celery+Redis ({backend})",
        ">= 5x",
        _fmt(ratio, "x"),
        None if ratio is None else ratio >= 5,
    )
    if lost is not None and unfinished is not None:
        _add(
            results,
            f"every accepted task and result survives kill -9 ({backend})",
            "0 lost",
            f"{lost:.0f} tasks lost, {unfinished:.0f} not completed after restart",
            lost == 0 and unfinished == 0,
        )


def _latency(results: Results, backend: str) -> None:
    ratio = results.get("latency", backend, "submit to agent p50 / floor")
    _add(
        results,
        f"p50 submit to agent vs floor ({backend})",
        "<= 2x",
        _fmt(ratio, "x"),
        None if ratio is None else ratio <= 2,
    )


def _fleet(results: Results, backend: str) -> None:
    for f in results.figures:
        if (f.workload, f.backend) != ("fleet", backend) or not f.name.endswith(
            ": agents connected"
        ):
            continue
        label = f.name.removesuffix(": agents connected")
        wanted = int(label.rsplit("N=", 1)[1].replace(",", ""))
        if wanted < FLEET_GOAL:
            continue
        connected = f.value or 0
        kib = results.get("fleet", backend, f"{label}: server memory per agent")
        took = results.get("fleet", backend, f"{label}: broadcast to all delivered")
        short = "" if connected >= wanted else f" ({connected:,.0f} of {wanted:,} connected)"
        _add(
            results,
            f"{label}: server memory each ({backend})",
            f"<= {KIB_GOAL:g} KiB",
            _fmt(kib, "KiB") + short,
            kib is not None and kib <= KIB_GOAL and not short,
        )
        _add(
            results,
            f"{label}: broadcast to all ({backend})",
            f"<= {BROADCAST_GOAL:g} s",
            _fmt(took, "s") + short,
            took is not None and took <= BROADCAST_GOAL,
        )


def _depth(results: Results, backend: str) -> None:
    ratio = results.get("depth", backend, "claim p50 ratio, HTTP")
    note = next(
        (
            f.note
            for f in results.figures
            if (f.workload, f.backend, f.name) == ("depth", backend, "claim p50 ratio, HTTP")
        ),
        "",
    )
    full = note.startswith(f"{DEPTH_HIGH:,} vs {DEPTH_LOW:,}")
    measured = _fmt(ratio, "x") + (f" ({note})" if note else "")
    _add(
        results,
        f"claim p50 at 1M queued vs 1k ({backend})",
        "<= 1.5x",
        measured,
        None if ratio is None or not full else ratio <= 1.5,
    )
