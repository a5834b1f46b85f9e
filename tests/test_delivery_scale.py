"""At scale, with real processes: gunicorn web servers, Celery workers, Redis, PostgreSQL.

The fake OpenAI and Twilio servers run in the test process; Parley runs in
subprocesses that reach them over 127.0.0.1, as it would reach the real ones.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OUR_WHATSAPP,
    POSTGRES_ADMIN_URL,
    PUBLIC_BASE_URL,
    _migrate,
    _postgres_reason,
)
from tests.delivery_support import FLOWS, redis_or_skip
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_server import FakeTwilio

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_SCALE_URL", "redis://127.0.0.1:6379/12")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"parley_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        _migrate(url)
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stack:
    """Parley's processes for one test; every one is stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen] = []

    def log_tails(self) -> str:
        """The end of each process's output, for a failure message."""
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for path in sorted(self.logs.glob("*.log"))
        )

    def web(self) -> str:
        """Start a gunicorn web process; returns its base URL once it answers."""
        port = free_port()
        process = self._start(
            [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "8",
                "app:create_app()",
            ]
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "gunicorn exited"
            try:
                requests.get(base + "/healthz", timeout=5)
                return base
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError("gunicorn did not answer within 60 s")

    def worker(self, name: str, threads: int = 8) -> subprocess.Popen:
        """Start a Celery worker process (a thread pool)."""
        return self._start(
            [
                str(BIN / "celery"),
                "-A",
                "tasks.worker",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(threads),
                "--hostname",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "WARNING",
            ]
        )

    def _start(self, command: list[str]) -> subprocess.Popen:
        log = self.logs / f"{len(self.processes)}-{Path(command[0]).name}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture
def stack(
    postgres_url: str, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio, tmp_path: Path
) -> Iterator[Stack]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_or_skip(REDIS_URL),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_MAX_RETRIES": "0",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": fake_twilio.base_url,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "FLOWS_DIR": str(FLOWS),
        "SECRET_KEY": "test",
        "LOG_LEVEL": "WARNING",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        # A killed worker's leases expire this soon (the production default is 45 s).
        "TURN_LEASE_SECONDS": "5",
        "DATABASE_POOL_SIZE": "10",
    }
    stack = Stack(env, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def post(base: str, sender: str, body: str) -> requests.Response:
    """A signed Messaging webhook, as Twilio posts it."""
    sid = "SM" + uuid.uuid4().hex
    form = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": OUR_WHATSAPP,
        "Body": body,
        "NumMedia": "0",
    }
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        PUBLIC_BASE_URL + "/twilio/messages", form
    )
    return requests.post(
        base + "/twilio/messages",
        data=form,
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )


def replies_by_contact(fake_twilio: FakeTwilio) -> dict[str, list[str]]:
    replies: dict[str, list[str]] = defaultdict(list)
    for request in list(fake_twilio.requests):
        replies[request["form"]["To"]].append(request["form"].get("Body", ""))
    return dict(replies)


def wait_for(
    condition: Callable[[], bool], seconds: float, what: Callable[[], str], stack: Stack
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {seconds} s waiting for {what()}\n{stack.log_tails()}"
            )
        time.sleep(0.1)


def test_20_contacts_x_10_messages_through_two_webs_and_two_workers(
    stack: Stack, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
):
    fake_openai.delay_seconds = 0.2  # turns overlap the contacts' next messages
    webs = [stack.web(), stack.web()]
    stack.worker("one")
    stack.worker("two")
    contacts = [f"whatsapp:+1555200{index:04d}" for index in range(20)]

    def converse(index: int) -> list[int]:
        return [
            post(webs[(index + turn) % 2], contacts[index], f"m{turn}").status_code
            for turn in range(10)
        ]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = [code for codes in pool.map(converse, range(20)) for code in codes]
    assert statuses == [200] * 200

    wait_for(
        lambda: len(fake_twilio.requests) >= 200,
        120,
        lambda: f"200 replies (replies so far: {len(fake_twilio.requests)})",
        stack,
    )
    time.sleep(1)  # a duplicate would arrive now
    expected = [f"got m{turn}" for turn in range(10)]
    assert replies_by_contact(fake_twilio) == dict.fromkeys(contacts, expected)


def test_a_worker_killed_mid_turn_loses_nothing_and_duplicates_nothing(
    stack: Stack, fake_openai: FakeOpenAI, fake_twilio: FakeTwilio
):
    fake_openai.delay_seconds = 30  # the first turns hang in the LLM call
    web = stack.web()
    doomed = stack.worker("doomed", threads=4)
    contacts = [f"whatsapp:+1555300{index:04d}" for index in range(3)]
    for contact in contacts:
        assert post(web, contact, "m0").status_code == 200
    wait_for(
        lambda: len(fake_openai.requests) >= 3,
        60,
        lambda: f"the turns to reach the LLM (replies so far: {len(fake_twilio.requests)})",
        stack,
    )
    for contact in contacts:
        assert post(web, contact, "m1").status_code == 200

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=10)
    assert fake_twilio.requests == []
    fake_openai.delay_seconds = 0.05
    stack.worker("survivor")

    wait_for(
        lambda: len(fake_twilio.requests) >= 6,
        90,
        lambda: f"the redelivered turns (replies so far: {len(fake_twilio.requests)})",
        stack,
    )
    time.sleep(1)
    assert replies_by_contact(fake_twilio) == {
        contact: ["got m0", "got m1"] for contact in contacts
    }
