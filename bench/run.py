"""taskfleet's benchmarks, in one run: `python bench/run.py [--quick]`.

Starts everything it measures or compares against on 127.0.0.1 (taskfleet servers and
agents, a throwaway PostgreSQL, redis-server and Celery workers), prints each figure as it
is measured, and writes results.json, results.md and PNG charts into
bench/results/<timestamp>/. Stops what it started and removes its temporary files when it
ends, fails or is interrupted. docs/benchmarks.md explains the workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script: the bench's modules sit beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import depth
import fleet
import infra
import latency
import report
import targets
import throughput
from common import POSTGRES, SQLITE, Context, Results

WORKLOADS = ("throughput", "latency", "fleet", "depth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}"
    )
    parser.add_argument(
        "--backends", default=f"{SQLITE},{POSTGRES}", help="sqlite, postgresql or both"
    )
    parser.add_argument("--tasks", type=int, help="throughput: tasks per run (M)")
    parser.add_argument("--agents", type=int, default=4, help="throughput: agents/workers (K)")
    parser.add_argument("--concurrency", type=int, default=4, help="throughput: slots each (C)")
    parser.add_argument("--samples", type=int, help="latency: tasks submitted one at a time")
    parser.add_argument("--fleet", help="fleet: comma-separated numbers of agents (N)")
    parser.add_argument("--depths", help="depth: comma-separated queue depths")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server while it is measured"
    )
    parser.add_argument("--out", type=Path, help="results folder [bench/results/<timestamp>]")
    return parser.parse_args(argv)


def _git_revision() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=infra.REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def _meta(args: argparse.Namespace) -> dict[str, object]:
    import taskfleet

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {cpu}, {_mem_gib():.0f} GiB, {platform.platform()}",
        "python": sys.version.split()[0],
        "taskfleet": f"{taskfleet.__version__} ({_git_revision()})",
        "quick": args.quick,
        "load_average_start": [round(x, 2) for x in infra.load_average()],
        "argv": sys.argv[1:],
    }


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


async def run_all(args: argparse.Namespace, ctx: Context) -> None:
    chosen = [w.strip() for w in args.only.split(",") if w.strip()]
    if POSTGRES in ctx.backends and set(chosen) & {"throughput", "latency", "fleet", "depth"}:
        ctx.pg = infra.start_postgres(ctx.cleanup)
    for workload in chosen:
        print(f"\n== {workload} ==", flush=True)
        started = time.monotonic()
        if workload == "throughput":
            sz = throughput.size(args.quick, args.agents, args.concurrency)
            if args.tasks:
                sz = throughput.Size(args.tasks, sz.agents, sz.concurrency, sz.batch)
            await throughput.run(ctx, sz)
        elif workload == "latency":
            samples = args.samples or (100 if args.quick else 500)
            ctx.results.meta["latency_samples"] = samples
            await latency.run(ctx, samples)
        elif workload == "fleet":
            sizes = [500] if args.quick else [1_000, 10_000]
            if args.fleet:
                sizes = [int(n) for n in args.fleet.split(",")]
            ctx.results.meta["fleet_agents"] = sizes
            await fleet.run(ctx, sizes)
        elif workload == "depth":
            depths = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
            if args.depths:
                depths = [int(d) for d in args.depths.split(",")]
            ctx.results.meta["depths"] = depths
            await depth.run(ctx, depths)
        else:
            raise SystemExit(f"unknown workload {workload!r}; choose from {WORKLOADS}")
        print(f"   ({workload} took {time.monotonic() - started:.0f} s)", flush=True)


def _keep_logs(workdir: Path, out: Path) -> None:
    """The servers', agents' and workers' logs, before the work directory goes."""
    logs = [p for p in workdir.glob("*.log") if p.stat().st_size > 0]
    if logs:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        for path in logs:
            shutil.copyfile(path, out / "logs" / path.name)


def _print_targets(results: Results) -> None:
    print("\n== targets (issue 9) ==")
    for t in results.targets:
        met = {True: "met", False: "MISSED", None: "not judged"}[t.met]
        print(f"  {met:<10} {t.name}: {t.measured} (goal {t.goal})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    infra.raise_on_signals()
    infra.raise_nofile(65_536)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or infra.BENCH_DIR / "results" / stamp
    results = Results(meta=_meta(args))
    cleanup = infra.Cleanup()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    # On disk, not a RAM disk: commits here cost what they cost for a real server.
    workdir = cleanup.tempdir("taskfleet-bench-", parent=tempfile.gettempdir())
    ctx = Context(cleanup, workdir, results, args.quick, backends)
    if args.profile:
        ctx.profiler = infra.Profiler(out / "profiles")
    print(f"taskfleet benchmarks; {results.meta['machine']}")
    print(f"load average at start: {results.meta['load_average_start']}")
    failed = False
    try:
        asyncio.run(run_all(args, ctx))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the bench started", file=sys.stderr)
        failed = True
    except Exception:
        failed = True
        raise
    finally:
        _keep_logs(workdir, out)
        cleanup.run_now()
        results.meta["load_average_end"] = [round(x, 2) for x in infra.load_average()]
        if results.figures:
            targets.judge(results, backends)
            _print_targets(results)
            report.write(results, out)
            print(f"\nresults: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
