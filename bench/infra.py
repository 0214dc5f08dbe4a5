"""Processes the benchmarks start, and how they are all stopped again.

Every process and temporary directory is registered with one `Cleanup`, which stops them
in reverse order when the run ends, fails or is interrupted (Ctrl-C, SIGTERM). Children
run in sessions of their own, so that a Ctrl-C in the terminal reaches only the bench,
which then stops them itself; they also get SIGKILL if the bench dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
API_KEY = "bench-api-key-0123456789"
SECRET = "pw"  #: every agent account's secret
PG_USER = "postgres"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the bench process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Cleanup:
    """Stops what the run started, newest first, exactly once."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if log is not None:
            out.close()  # type: ignore[union-attr]
        self.push(f"process {proc.pid} ({Path(argv[0]).name})", lambda: stop(proc))
        return proc

    def tempdir(self, prefix: str, parent: str | None = None) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.push(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def run_now(self, upto: int = 0) -> None:
        """Runs the actions pushed after the first `upto`, newest first."""
        while len(self._actions) > upto:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:
                print(f"cleanup: {what} failed: {exc}", file=sys.stderr)

    def mark(self) -> int:
        return len(self._actions)


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM to the child's process group, SIGKILL if it is still there after `timeout`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def raise_on_signals() -> None:
    """SIGINT and SIGTERM stop the bench through every `finally`, even when it was started
    with SIGINT ignored (in the background of a script)."""

    def handler(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


def raise_nofile(wanted: int) -> int:
    """Raises RLIMIT_NOFILE (children inherit it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return min(wanted, hard)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port}")


# -- /proc readings ------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def syscalls(pid: int) -> tuple[int, int]:
    """Read-like and write-like system calls the process made so far (socket and file I/O,
    from /proc/<pid>/io): on loopback each message costs a write and a read."""
    counts = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(counts["syscr"]), int(counts["syscw"])


def settle(pid: int, quiet: float = 0.05, timeout: float = 60.0) -> float:
    """Waits until the process uses less than `quiet` of a core over half a second;
    returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < quiet * 0.5:
            break
    return time.monotonic() - started


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# -- the taskfleet server ---------------------------------------------------------------------


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFLEET_")}
    env.update(
        TASKFLEET_API_KEYS=API_KEY,
        TASKFLEET_LOG_LEVEL="warning",
        TASKFLEET_DUT_POLL_SECONDS="55",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class Server:
    """`taskfleet server` in a subprocess, on a free loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.base = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_server(
    cleanup: Cleanup,
    db: str,
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
    port: int = 0,
) -> Server:
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    argv = [sys.executable, "-c", "from taskfleet.cli import main; main()", "server"]
    argv += ["--db", db, "--port", str(port)]
    proc = cleanup.popen(argv, env=server_env(extra_env), log=log, cwd=workdir)
    wait_port(port, proc, "taskfleet server", log)
    server = Server(proc, port, log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base}/metrics", timeout=5).status_code == 200:
                return server
        time.sleep(0.05)
    raise RuntimeError("the taskfleet server did not answer /metrics")


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.name.split(".") if p.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in found:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def _apt_install(package: str) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(f"{package} is missing; install it (apt-get install {package})")
    print(f"installing {package} with apt-get ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update"], check=False, **quiet)  # type: ignore[call-overload]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", package], check=True, env=env, **quiet)  # type: ignore[call-overload]


class Postgres:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"


def start_postgres(cleanup: Cleanup) -> Postgres:
    """A throwaway cluster with PostgreSQL's default durability (fsync and synchronous
    commit on), its data on disk under /tmp, listening on a free loopback port."""
    bindir = _pg_bindir()
    if bindir is None:
        _apt_install("postgresql")
        bindir = _pg_bindir()
        assert bindir is not None
    root = cleanup.tempdir("taskfleet-bench-pg-")
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
        shutil.chown(sockets, PG_USER)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER]
    subprocess.run(
        _as_postgres([*initdb, "-E", "UTF8", "--no-locale"]),
        cwd=root,
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c max_connections=300"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log")]
    subprocess.run(
        _as_postgres([*pg_ctl, "start", "-w", "-t", "60", "-o", options]),
        cwd=root,
        check=True,
        capture_output=True,
    )

    def stop_postgres() -> None:
        argv = _as_postgres([*pg_ctl, "stop", "-m", "immediate"])
        subprocess.run(argv, cwd=root, capture_output=True, check=False)

    cleanup.push("stop PostgreSQL", stop_postgres)
    return Postgres(port)


async def create_database(pg: Postgres, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(pg.url("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
        # Each workload starts on a quiet cluster: what an earlier one wrote (10,000
        # tasks and their results) is flushed now, not by a checkpoint while the next
        # one measures latency (submit-to-agent p50 was 3.7 ms after the throughput
        # workload, 2.0 ms on a fresh cluster).
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return pg.url(name)


# -- Redis -------------------------------------------------------------------------------------


def start_redis(cleanup: Cleanup, workdir: Path) -> int:
    """redis-server with its default persistence (RDB snapshots, no append-only file),
    on a free loopback port, its files in `workdir`."""
    if shutil.which("redis-server") is None:
        _apt_install("redis-server")
    port = free_port()
    log = workdir / "redis.log"
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    proc = cleanup.popen([*argv, "--daemonize", "no", "--logfile", str(log)], cwd=workdir)
    wait_port(port, proc, "redis-server", log)
    return port


# -- profiling (optional: --profile) -----------------------------------------------------------


class Profiler:
    """`py-spy record` on a process while a block runs: collapsed stacks in NAME.folded
    (flamegraph.pl or speedscope.app draw them) and the hottest frames in NAME.top.txt."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if out is not None and not Path(self.exe).exists():
            print("--profile: py-spy not found (pip install py-spy); not profiling")
            self.out = None

    @contextlib.contextmanager
    def record(self, name: str, pid: int) -> Iterator[None]:
        if self.out is None:
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        folded = self.out / f"{name}.folded"
        argv = [self.exe, "record", "--pid", str(pid), "--rate", "400", "--format", "raw"]
        proc = subprocess.Popen(
            [*argv, "--nonblocking", "-o", str(folded)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if folded.exists():
                (self.out / f"{name}.top.txt").write_text(top_frames(folded))


def top_frames(folded: Path, count: int = 40) -> str:
    """The frames with the most samples, inclusive, from a collapsed-stack file."""
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in folded.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(count)]
    lines += ["", "own:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(count // 2)]
    return "\n".join(lines) + "\n"
