"""Load benchmark: Parley under gunicorn and Celery, signed webhooks at a steady rate.

    .venv/bin/python bench/load.py                 # 100 msg/s for 20 s, 800 ms LLM
    .venv/bin/python bench/load.py --rate 50 --seconds 10 --llm-ms 300

Starts, all on 127.0.0.1: an OpenAI-compatible fake server with a fixed
latency and a fake Twilio REST API (tests/fakes/, in a child process), a fresh
PostgreSQL database (``PARLEY_BENCH_POSTGRES_URL``, default the local
server), a flushed Redis database (``PARLEY_BENCH_REDIS_URL``, default db 11),
gunicorn web processes and Celery worker processes (at a lower CPU priority, as
in the Procfile). Each process's database pool (``DATABASE_POOL_SIZE``, a hard
cap: no overflow) is its thread count, except that ``--worker-connections N``
makes it N in each worker process (web processes keep their thread count);
with fewer connections than threads, a turn waits for a free connection
(SQLAlchemy's pool timeout, 30 s by default). After a warm-up at the same rate
(other contacts: every thread imported and every pool connected, as in a
running deployment) it posts signed Messaging webhooks from N contacts at a
fixed rate (open loop), waits for the replies and reports webhook latency,
end-to-end reply latency, throughput, CPU per message and peak memory per
process, and how many messages did not get exactly one reply in order.
Then it runs the same load against `bench/bare.py` (store one row, answer
TwiML) and reports Parley's webhook cost as a ratio to it. Bounded: at most
500 messages per second, 120 seconds, 20,000 messages. The database is
dropped at the end.

A webhook without a 2xx answer (connection refused, reset or closed, no
answer within 30 s, an HTTP error) is counted by kind (rows ``webhook
errors`` and ``bare endpoint errors``) and the run goes on. Latencies are
those of the webhooks that got an answer; replies are awaited and checked
only for the accepted (2xx) ones.

CPU is utime + stime (/proc/<pid>/stat) over the measured window (Parley:
from the first webhook to the last reply; bare: while posting), sampled every
0.25 s and kept per process at its first and last sight (`CpuMeter`). Rows:
``CPU per message: web / worker / PostgreSQL`` (and ``cores busy``) count
every process of the local PostgreSQL server, other databases' backends
included; ``CPU per message, all processes: Parley / bare`` counts Parley's
web and worker processes and the PostgreSQL backends of the benchmark's
database, against the bare app's web processes and backends. A backend is a
process whose title (/proc/<pid>/cmdline, ``postgres: ... <database> ...``)
names the database, or that ``pg_stat_activity`` lists for it at the start or
end of the window. Not counted: what a process uses between its last sample
and its exit, a process born and gone between two samples (the bare app's
pool, SQLAlchemy's default of 5 plus 10 overflow, closes overflow connections
after a burst), PostgreSQL's background processes (WAL writer, checkpointer),
Redis, the fake servers and the load generator. When PostgreSQL's processes
cannot be read here (another machine or container), its figures are n/a.

Last, with the fake LLM answering at once, `bench.floor` times the three client
calls every queued reply makes (a chat completion, a Twilio send, a Celery
publish) in this process: the least a reply costs before any of Parley's own
work, against which the ratio above can be read.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from bench.floor import Floor  # noqa: E402
from bench.floor import measure as measure_floor  # noqa: E402

BIN = Path(sys.executable).parent
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
PUBLIC_BASE_URL = "https://parley.bench.example"
OUR_NUMBER = "whatsapp:+14155238886"
POSTGRES_ADMIN_URL = os.environ.get(
    "PARLEY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REDIS_URL = os.environ.get("PARLEY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
FLOWS = ROOT / "tests" / "data" / "flows_delivery"


# -- the fake servers, in a child process so they do not share our GIL -------


def _fakes(connection: Any, llm_seconds: float) -> None:
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.twilio_server import FakeTwilio

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log
    with (
        FakeOpenAI(delay_seconds=llm_seconds) as openai,
        FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio,
    ):
        arrivals = twilio.requests = _Arrivals()
        connection.send((openai.base_url, twilio.base_url))
        while True:
            command = connection.recv()
            if command == "count":
                connection.send(len(arrivals))
            elif command == "collect":
                connection.send(list(arrivals))
            elif command == "reset":
                arrivals.clear()
                connection.send(True)
            elif command == "no delay":  # for `bench.floor`
                openai.delay_seconds = 0.0
                connection.send(True)
            else:
                break


class _Arrivals(list):
    """FakeTwilio's request log, kept as ``(arrival time, To, Body)``."""

    def append(self, item: Any) -> None:
        form = item["form"]
        super().append((time.time(), form.get("To", ""), form.get("Body", "")))


# -- processes ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def gunicorn(app: str, env: dict[str, str], workers: int, threads: int) -> tuple[Any, str]:
    port = free_port()
    process = start(
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "30",
            app,
        ],
        env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn {app} exited with {process.returncode}")
        try:
            if requests.get(base + "/healthz", timeout=5).ok:
                return process, base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn {app} did not answer within 60 s")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def process_tree(pid: int) -> list[int]:
    """The pid and its descendants (Linux /proc)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids.extend(process_tree(int(child)))
    return pids


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (``VmHWM``) of a process, in MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_cpu(pid: int) -> tuple[tuple[int, int], float] | None:
    """``((pid, start time), CPU seconds)`` of a process, all its threads; None when gone.

    The start time tells a reused pid from the process that had it before.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (pid, int(fields[19])), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_processes(database: str) -> tuple[list[int], list[int]]:
    """The local PostgreSQL server's processes, and those of them serving `database`.

    A backend's command line is its process title, e.g. ``postgres: 15/main:
    postgres parley_bench_1a2b3c4d 127.0.0.1(53718) idle``.
    """
    server, backends = [], []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        server.append(int(entry.name))
        if title.startswith("postgres:") and database in title.split():
            backends.append(int(entry.name))
    return server, backends


def listed_backends(database: str) -> list[int]:
    """The pids ``pg_stat_activity`` lists for `database` that are local PostgreSQL processes.

    Empty when the server is not on this machine (or not in this pid namespace).
    """
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchall()
    except psycopg.Error:
        return []
    pids = []
    for (pid,) in rows:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"postgres"):
                pids.append(pid)
        except OSError:
            pass
    return pids


class CpuMeter:
    """CPU seconds that groups of processes use over a window (Linux /proc).

    ``groups()`` names each group's pids; it is sampled at `start`, every
    `interval` seconds in a thread, and at `stop` (`extra` pids join a group at
    those two). Per process it keeps the CPU (utime + stime) at first and last
    sight: one running at the start counts from its CPU then, one first seen
    later was born in the window and counts whole. Lost: what a process uses
    between its last sample and its exit, and a process born and gone between
    two samples. A group none of whose processes could be read is None.
    """

    def __init__(self, groups: Callable[[], dict[str, list[int]]], interval: float = 0.25) -> None:
        self._groups = groups
        self._interval = interval
        self._first: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
        self._last: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, extra: dict[str, list[int]] | None = None) -> CpuMeter:
        self._sample(extra, starting=True)
        self._thread.start()
        return self

    def stop(self, extra: dict[str, list[int]] | None = None) -> dict[str, float | None]:
        """CPU seconds each group used since `start`."""
        self._done.set()
        self._thread.join()
        self._sample(extra)
        return {
            name: sum(seconds - self._first[name][key] for key, seconds in last.items())
            if last
            else None
            for name, last in self._last.items()
        }

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            self._sample()

    def _sample(self, extra: dict[str, list[int]] | None = None, starting: bool = False) -> None:
        groups = self._groups()
        for name, pids in (extra or {}).items():
            groups[name] = [*groups.get(name, []), *pids]
        for name, pids in groups.items():
            first, last = self._first[name], self._last[name]
            for pid in set(pids):
                seen = process_cpu(pid)
                if seen is not None:
                    key, seconds = seen
                    first.setdefault(key, seconds if starting else 0.0)
                    last[key] = seconds


# -- load --------------------------------------------------------------------


@dataclass
class Sent:
    contact: str
    number: int
    started: float
    latency: float = 0.0
    status: int = 0  # 0: no answer (see error)
    error: str = ""  # what went wrong: "HTTP 503", "connection refused", "timeout", ...

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True)
class Signed:
    """One webhook, signed before the clock starts (signing is the sender's work)."""

    contact: str
    number: int
    form: dict[str, str]
    signature: str


def signed_webhooks(count: int, contacts: int, prefix: str) -> list[Signed]:
    """`count` Messaging webhooks, round-robin over `contacts`, signed as Twilio signs them."""
    validator = RequestValidator(AUTH_TOKEN)
    webhooks = []
    for index in range(count):
        contact = f"whatsapp:+1555{prefix}{index % contacts:05d}"
        number = index // contacts
        sid = "SM" + uuid.uuid4().hex
        form = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "From": contact,
            "To": OUR_NUMBER,
            "Body": f"m{number}",
            "NumMedia": "0",
            "ProfileName": "Bench",
        }
        signature = validator.compute_signature(PUBLIC_BASE_URL + "/twilio/messages", form)
        webhooks.append(Signed(contact, number, form, signature))
    return webhooks


def load(base: str, rate: float, seconds: float, contacts: int, prefix: str) -> Run:
    """Post `rate` messages a second for `seconds`, round-robin over `contacts` (open loop)."""
    webhooks = signed_webhooks(int(rate * seconds), contacts, prefix)
    local = threading.local()
    run = Run()

    def one(webhook: Signed) -> Sent:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        item = Sent(contact=webhook.contact, number=webhook.number, started=time.time())
        clock = time.perf_counter()
        try:
            response = session.post(
                base + "/twilio/messages",
                data=webhook.form,
                headers={"X-Twilio-Signature": webhook.signature},
                timeout=30,
            )
        except Exception as error:  # counted and reported, the run goes on
            item.latency = time.perf_counter() - clock
            item.error = error_kind(error)
            return item
        item.latency = time.perf_counter() - clock
        item.status = response.status_code
        if not item.accepted:
            item.error = f"HTTP {response.status_code}"
        return item

    futures = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        run.started = time.time()
        origin = time.perf_counter()
        for index, webhook in enumerate(webhooks):
            delay = origin + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, webhook))
        run.sent = [future.result() for future in futures]
    run.finished = time.time()
    return run


def error_kind(error: BaseException) -> str:
    """A short name for why a webhook got no answer: the first known cause in its chain."""
    pending, seen = [error], set()
    while pending:
        cause = pending.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, requests.Timeout | TimeoutError):
            return "timeout"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, http.client.RemoteDisconnected):
            return "connection closed"  # without an answer
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return "connection reset"
        reason = getattr(cause, "reason", None)
        pending.extend(
            c
            for c in (cause.__cause__, cause.__context__, reason, *cause.args)
            if isinstance(c, BaseException)
        )
    return type(error).__name__


def by_kind(items: list[Sent]) -> str:
    """``N (kind: n, ...)`` for the webhooks that were not accepted."""
    kinds: dict[str, int] = defaultdict(int)
    for item in items:
        if not item.accepted:
            kinds[item.error] += 1
    total = sum(kinds.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) + ")"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- the benchmark -----------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long to post")
    parser.add_argument("--contacts", type=int, default=200, help="simulated contacts")
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of load before measuring (other contacts)"
    )
    parser.add_argument("--llm-ms", type=float, default=800, help="fake LLM latency")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--worker-threads", type=int, default=40)
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=None,
        help="database pool size of each worker process (default: --worker-threads)",
    )
    parser.add_argument(
        "--show-mismatches",
        action="store_true",
        help="print each contact whose replies were not exactly one per message, in order",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="niceness of the workers, as in the Procfile (0: same priority as web)",
    )
    args = parser.parse_args()
    if not (
        0 < args.rate <= 500
        and 0 < args.seconds <= 120
        and 0 <= args.warmup <= 30
        and args.rate * (args.seconds + args.warmup) <= 20000
    ):
        parser.error(
            "bounded: --rate <= 500, --seconds <= 120, --warmup <= 30, at most 20,000 messages"
        )
    if args.worker_connections is None:
        args.worker_connections = args.worker_threads
    if args.worker_connections < 1:
        parser.error("--worker-connections must be at least 1")

    parent, child = multiprocessing.Pipe()
    fakes = multiprocessing.Process(target=_fakes, args=(child, args.llm_ms / 1000), daemon=True)
    fakes.start()
    openai_url, twilio_url = parent.recv()

    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database,
        "REDIS_URL": REDIS_URL,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": openai_url,
        "OPENAI_TIMEOUT": "10",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": twilio_url,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "FLOWS_DIR": str(FLOWS),
        "SECRET_KEY": "bench",
        "LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen] = []
    try:
        subprocess.run(
            [str(BIN / "flask"), "--app", "app", "db", "upgrade", "heads"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        web_env = {**env, "DATABASE_POOL_SIZE": str(args.web_threads)}
        worker_env = {**env, "DATABASE_POOL_SIZE": str(args.worker_connections)}
        web, base = gunicorn("app:create_app()", web_env, args.web_workers, args.web_threads)
        processes.append(web)
        workers = [
            start(
                [
                    "nice",
                    "-n",
                    str(args.worker_nice),
                    str(BIN / "celery"),
                    "-A",
                    "tasks.worker",
                    "worker",
                    "--pool",
                    "threads",
                    "--concurrency",
                    str(args.worker_threads),
                    "--hostname",
                    f"bench{index}@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel",
                    "WARNING",
                ],
                worker_env,
            )
            for index in range(args.workers)
        ]
        processes.extend(workers)

        # Warm up at the measured rate, so that every thread has its imports
        # and every pool its connections (a deployment's steady state), then
        # let the replies drain, then measure.
        warm = load(base, args.rate, args.warmup, args.contacts, prefix="9")
        wait_replies(parent, accepted(warm), 60 + 2 * args.llm_ms / 1000)
        parent.send("reset")
        parent.recv()

        def groups() -> dict[str, list[int]]:
            server, backends = postgres_processes(name)
            return {
                "web": process_tree(web.pid),
                "worker": [worker.pid for worker in workers],
                "PostgreSQL": server,
                "backends": backends,
            }

        meter = CpuMeter(groups).start({"backends": listed_backends(name)})
        run = load(base, args.rate, args.seconds, args.contacts, prefix="0")
        wait_replies(parent, accepted(run), 60 + 2 * args.llm_ms / 1000)
        cpu = meter.stop({"backends": listed_backends(name)})
        time.sleep(1)  # duplicates would arrive now
        parent.send("collect")
        arrivals = parent.recv()
        memory = {
            "web (gunicorn, per process)": [peak_rss_mib(pid) for pid in process_tree(web.pid)],
            "worker (Celery, per process)": [peak_rss_mib(worker.pid) for worker in workers],
        }
        stop(processes)
        processes.clear()

        bare, bare_base = gunicorn(
            "bench.bare:create_app()", env, args.web_workers, args.web_threads
        )
        processes.append(bare)
        load(bare_base, args.rate, args.warmup, args.contacts, prefix="9")

        def bare_groups() -> dict[str, list[int]]:
            return {"web": process_tree(bare.pid), "backends": postgres_processes(name)[1]}

        meter = CpuMeter(bare_groups).start({"backends": listed_backends(name)})
        bare_run = load(bare_base, args.rate, args.seconds, args.contacts, prefix="0")
        bare_cpu = meter.stop({"backends": listed_backends(name)})
        stop(processes)
        processes.clear()

        # What the clients every reply needs cost, alone, on this machine now.
        parent.send("no delay")
        parent.recv()
        floor = measure_floor(openai_url, twilio_url, REDIS_URL, ACCOUNT_SID, AUTH_TOKEN)
    finally:
        stop(processes)
        parent.send("stop")
        fakes.join(timeout=10)
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    report(args, run, arrivals, memory, bare_run, cpu, bare_cpu, floor)


def accepted(run: Run) -> int:
    """How many webhooks of a run were answered 2xx (those are owed a reply)."""
    return sum(1 for item in run.sent if item.accepted)


def wait_replies(connection: Any, expected: int, seconds: float) -> None:
    """Wait until `expected` replies arrived, or `seconds` passed without one more."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < seconds:
        connection.send("count")
        count = connection.recv()
        if count >= expected:
            return
        if count != last:
            last, since = count, time.monotonic()
        time.sleep(0.2)


def report(
    args: Any,
    run: Run,
    arrivals: list,
    memory: dict,
    bare_run: Run,
    cpu: dict[str, float | None],
    bare_cpu: dict[str, float | None],
    floor: Floor,
) -> None:
    replies: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for moment, to, body in arrivals:
        replies[to].append((moment, body))
    end_to_end, bad = [], 0
    sent_by_contact: dict[str, list[Sent]] = defaultdict(list)
    failed: set[tuple[str, str]] = set()  # a webhook without a 2xx may or may not get a reply
    for item in run.sent:
        if item.accepted:
            sent_by_contact[item.contact].append(item)
        else:
            failed.add((item.contact, f"got m{item.number}"))
    for contact, items in sent_by_contact.items():
        got = [
            body for _, body in sorted(replies.get(contact, [])) if (contact, body) not in failed
        ]
        wanted = [f"got m{item.number}" for item in sorted(items, key=lambda i: i.number)]
        for item in items:
            times = [t for t, body in replies.get(contact, []) if body == f"got m{item.number}"]
            if len(times) == 1:
                end_to_end.append(times[0] - item.started)
        if got != wanted:
            # Count each message without exactly one reply, or answered out of order.
            bad += sum(1 for a, b in zip(got, wanted, strict=False) if a != b)
            bad += abs(len(got) - len(wanted))
            if args.show_mismatches:
                print(f"{contact}: got {got}, wanted {wanted}", file=sys.stderr)
    errors = sum(1 for item in run.sent if item.status and item.status != 200)
    # Latency of the webhooks that got an answer (a refused connection takes no time).
    webhook = [item.latency * 1000 for item in run.sent if item.status]
    bare = [item.latency * 1000 for item in bare_run.sent if item.status]
    last_reply = max((moment for moment, _, _ in arrivals), default=run.finished)
    rows = [
        (
            "messages posted",
            f"{len(run.sent)} ({args.rate:g}/s for {args.seconds:g} s, "
            f"{args.contacts} contacts); non-200 answers: {errors}",
        ),
        ("webhook errors", by_kind(run.sent)),
        ("LLM latency (fake)", f"{args.llm_ms:g} ms"),
        (
            "webhook latency p50 / p99",
            f"{percentile(webhook, 0.5):.1f} / {percentile(webhook, 0.99):.1f} ms",
        ),
        (
            "end-to-end reply p50 / p99",
            f"{percentile(end_to_end, 0.5) * 1000:.0f} / "
            f"{percentile(end_to_end, 0.99) * 1000:.0f} ms",
        ),
        ("replies per second", f"{len(arrivals) / max(1e-9, last_reply - run.started):.1f}"),
        ("not exactly one reply in order", str(bad)),
        (
            "bare endpoint p50 / p99",
            f"{percentile(bare, 0.5):.1f} / {percentile(bare, 0.99):.1f} ms",
        ),
        ("bare endpoint errors", by_kind(bare_run.sent)),
        (
            "webhook cost vs bare (p50 / p99)",
            f"{median(webhook) / median(bare):.2f}x / "
            f"{percentile(webhook, 0.99) / percentile(bare, 0.99):.2f}x",
        ),
    ]
    busy = max(1e-9, last_reply - run.started)
    groups = ("web", "worker", "PostgreSQL")

    def per_message(seconds: float | None, sent: list[Sent]) -> str:
        return "n/a" if seconds is None else f"{1000 * seconds / max(1, len(sent)):.1f} ms"

    rows.append(
        (
            "CPU per message: web / worker / PostgreSQL",
            " / ".join(per_message(cpu[name], run.sent) for name in groups),
        )
    )
    web_ms = 1000 * (cpu["web"] or 0.0) / max(1, len(run.sent))
    bare_ms = 1000 * (bare_cpu["web"] or 0.0) / max(1, len(bare_run.sent))
    rows.append(
        (
            "web CPU per message: Parley / bare (ratio)",
            f"{web_ms:.1f} ms / {bare_ms:.1f} ms ({web_ms / max(1e-9, bare_ms):.2f}x)",
        )
    )
    # All processes: Parley's web, worker and database backends; the bare app's web and backends.
    parley_all = [cpu["web"], cpu["worker"], cpu["backends"]]
    bare_all = [bare_cpu["web"], bare_cpu["backends"]]
    if None in parley_all or None in bare_all:
        all_processes = "n/a"
    else:
        parley_ms = 1000 * sum(parley_all) / max(1, len(run.sent))
        bare_all_ms = 1000 * sum(bare_all) / max(1, len(bare_run.sent))
        all_processes = (
            f"{parley_ms:.1f} / {bare_all_ms:.1f} ms ({parley_ms / max(1e-9, bare_all_ms):.1f}x)"
        )
    rows.append(("CPU per message, all processes: Parley / bare", all_processes))
    floor_ratio = ""
    if None not in bare_all:
        ratio = floor.total_ms / max(1e-9, bare_all_ms)
        floor_ratio = f"; {ratio:.1f}x the bare endpoint's message"
    rows.append(
        (
            "CPU per call of the clients every reply needs: OpenAI / Twilio / Celery publish",
            f"{floor.openai_ms:.1f} / {floor.twilio_ms:.1f} / {floor.publish_ms:.1f} ms "
            f"(together {floor.total_ms:.1f} ms{floor_ratio})",
        )
    )
    rows.append(
        (
            "cores busy: web / worker / PostgreSQL",
            " / ".join(
                "n/a" if cpu[name] is None else f"{cpu[name] / busy:.2f}" for name in groups
            ),
        )
    )
    for label, values in memory.items():
        rows.append((f"peak memory, {label}", ", ".join(f"{v:.0f} MiB" for v in values if v)))
    print(
        f"\nParley load benchmark ({os.cpu_count()} CPUs, web {args.web_workers}x"
        f"{args.web_threads} threads, {args.workers} workers x {args.worker_threads} threads"
        f" and {args.worker_connections} database connections, workers at nice"
        f" {args.worker_nice})\n"
    )
    print("| measure | value |\n| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
