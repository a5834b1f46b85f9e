"""What every queued reply costs in the libraries Parley must call, whatever Parley does.

A queued reply makes one chat completion with the ``openai`` client, one REST
send with the ``twilio`` client, and one Celery publish to Redis (the webhook's
``parley.drain_contact``); the bare endpoint of `bench/load.py` makes none of
them. `measure` times each call here, in one thread, against the same fake
servers and Redis as the load run, as CPU time of the calling thread
(``time.thread_time``): what these calls cost Parley's processes before any
of Parley's own code runs. Run alone::

    .venv/bin/python bench/floor.py

Parley's calls go through its own wrappers (`integrations.openai.OpenAILLM`,
`integrations.twilio.TwilioSender`), configured as in a worker, so the figures
include their small additions.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Calls made before timing (connections opened, caches warm).
WARMUP = 30


@dataclass(frozen=True)
class Floor:
    """CPU per call, in milliseconds, of the client calls one queued reply makes.

    Attributes:
        openai_ms: One chat completion (``OpenAILLM.complete``), answer parsed.
        twilio_ms: One Messages REST send (``TwilioSender.send``) with a status callback.
        publish_ms: One Celery ``send_task`` of the drain task to Redis.
    """

    openai_ms: float
    twilio_ms: float
    publish_ms: float

    @property
    def total_ms(self) -> float:
        """The three together: the least a queued reply costs beyond the webhook."""
        return self.openai_ms + self.twilio_ms + self.publish_ms


def per_call_ms(call: Callable[[int], Any], count: int) -> float:
    """CPU milliseconds of this thread per `call(i)`, after `WARMUP` untimed calls."""
    for index in range(WARMUP):
        call(index)
    started = time.thread_time()
    for index in range(count):
        call(index)
    return 1000 * (time.thread_time() - started) / count


def measure(
    openai_url: str,
    twilio_url: str,
    redis_url: str,
    account_sid: str,
    auth_token: str,
    count: int = 300,
) -> Floor:
    """Time the three calls against the fakes at `openai_url` and `twilio_url`.

    Args:
        openai_url: An OpenAI-compatible server (``tests/fakes/openai_server.py``),
            answering at once for a fair figure.
        twilio_url: A Twilio REST fake (``tests/fakes/twilio_server.py``).
        redis_url: A Redis database to publish to; its ``parley-floor`` queue is
            deleted afterwards.
        account_sid: The fake's account SID.
        auth_token: Its auth token.
        count: Timed calls of each kind.
    """
    from celery import Celery

    from engine.ports import LLMRequest
    from integrations.openai import OpenAILLM
    from integrations.twilio import TwilioSender

    llm = OpenAILLM("sk-floor", openai_url)
    messages = [
        {"role": "system", "content": "You are a friendly coach. Answer in one sentence."},
        {"role": "user", "content": "hello there"},
    ]
    openai_ms = per_call_ms(
        lambda index: llm.complete(LLMRequest(model="gpt-4o-mini", messages=messages)), count
    )
    sender = TwilioSender(account_sid, auth_token, api_base_url=twilio_url)
    try:
        twilio_ms = per_call_ms(
            lambda index: sender.send(
                "whatsapp:+14155238886",
                "whatsapp:+15550000000",
                f"floor {index}",
                "https://parley.bench.example/twilio/status?delivery=0123456789abcdef",
            ),
            count,
        )
    finally:
        sender.close()
    celery = Celery("floor", broker=redis_url, set_as_current=False)
    celery.conf.update(task_ignore_result=True, task_default_queue="parley-floor")
    try:
        publish_ms = per_call_ms(
            lambda index: celery.send_task("parley.drain_contact", args=[index]), count
        )
    finally:
        with celery.connection_for_write() as connection:
            connection.default_channel.client.delete("parley-floor")
        celery.close()
    return Floor(openai_ms, twilio_ms, publish_ms)


def _fakes(connection: Any, account_sid: str, auth_token: str) -> None:
    import logging

    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.twilio_server import FakeTwilio

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log
    with FakeOpenAI() as openai, FakeTwilio(account_sid, auth_token) as twilio:
        connection.send((openai.base_url, twilio.base_url))
        connection.recv()


def main() -> None:
    """Print the three figures, with the fakes in a child process (not timed)."""
    import os

    account_sid, auth_token = "AC" + "0" * 32, "floor-auth-token"
    redis_url = os.environ.get("PARLEY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    parent, child = multiprocessing.Pipe()
    fakes = multiprocessing.Process(
        target=_fakes, args=(child, account_sid, auth_token), daemon=True
    )
    fakes.start()
    openai_url, twilio_url = parent.recv()
    try:
        floor = measure(openai_url, twilio_url, redis_url, account_sid, auth_token)
    finally:
        parent.send("stop")
        fakes.join(timeout=10)
    print(
        f"CPU per call: OpenAI {floor.openai_ms:.2f} ms, Twilio {floor.twilio_ms:.2f} ms, "
        f"Celery publish {floor.publish_ms:.2f} ms; together {floor.total_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
