"""Celery on Redis: queued turns (``REDIS_URL`` set) and the sweeper.

`init_celery` builds one Celery app per Flask app, with the tasks bound to it
(Flask docs, "Background Tasks with Celery"). The web process only publishes
``parley.drain_contact(contact_id)``; workers run it::

    celery -A tasks.worker worker --pool threads --concurrency 32

A thread pool, since a turn mostly waits on the LLM. Tasks are acknowledged
after they ran (``acks_late``), so a task of a worker that dies is delivered
again once the broker's visibility timeout (``CELERY_VISIBILITY_TIMEOUT``)
passes; the message rows make a second run harmless (delivery/dispatcher.py).
That redelivery is a scan every worker makes (`restore_interval`).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from celery import Celery
from flask import Flask, current_app
from sqlalchemy.exc import OperationalError

from config import reveal
from delivery.dispatcher import Dispatcher, TurnNotFinished, stalled_contacts
from integrations.twilio import TwilioSender
from models import db

log = logging.getLogger("parley.tasks")

DRAIN_TASK = "parley.drain_contact"
#: How many times a task that found its contact busy looks again.
BUSY_RETRIES = 3
SWEEP_TASK = "parley.sweep"


def init_celery(app: Flask) -> Celery | None:
    """Register Celery with the app when ``REDIS_URL`` is set (else None: turns run inline).

    The app is kept as ``app.extensions["celery"]``; its settings come from the
    container (``app.extensions["parley"]``), which `create_app` builds first.
    """
    settings = app.extensions["parley"].settings
    url = reveal(settings.redis_url)
    if not url:
        return None
    celery = Celery("parley", broker=url, set_as_current=False)
    visibility_timeout = settings.celery_visibility_timeout
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue="parley",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # A dead worker's tasks go back to the queue only when a live worker
            # scans for tasks unacknowledged for longer than the timeout: at its
            # start, then by kombu's default on every 10th tick of a 10 s timer,
            # 100 s apart whatever the timeout. Scan on each tick instead.
            "unacked_restore_interval": restore_interval(visibility_timeout),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        # A webhook must not hang on a broker outage: one quick retry, then the
        # turn runs inline.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        broker_connection_timeout=2,
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_seconds,
            }
        },
        worker_hijack_root_logger=False,
    )

    @celery.task(name=DRAIN_TASK, bind=True, max_retries=None)
    def drain_contact(task: Any, contact_id: int) -> None:
        """Run a contact's pending turns in order and send the replies."""
        with app.app_context():
            worker = dispatcher(thread_sender())
            try:
                done = worker.drain(contact_id)
                busy_for = 0.0 if done else worker.busy_for(contact_id)
            except Exception as error:  # the rows are the record: try again later
                db.session.rollback()
                log.warning("task.drain.retry contact=%s reason=%r", contact_id, error)
                raise task.retry(countdown=1 + random.random() * 4, max_retries=30) from error
            finally:
                db.session.remove()
        if not done and task.request.retries < BUSY_RETRIES:
            # Another turn holds the contact's lease. A draining worker looks
            # for pending messages after each turn, so it answers ours; a look
            # a moment later covers a holder that does not drain (a timer, an
            # inline turn), and a look when its lease expires a holder that
            # died; the sweeper anything after that. Retrying at once instead
            # would flood the queue while a contact is busy.
            first = task.request.retries == 0
            countdown = 1 + random.random() * 2 if first else busy_for + random.random()
            raise task.retry(countdown=countdown)

    @celery.task(name=SWEEP_TASK)
    def sweep() -> int:
        """Re-enqueue contacts whose turns or sends stalled (see `sweep`)."""
        with app.app_context():
            try:
                return sweep_stalled(celery)
            finally:
                db.session.remove()

    # Import the broker transport and build the producer pool now (no
    # connection is made): done by the first webhook, it held that process's
    # other requests up for tens of milliseconds.
    celery.producer_pool  # noqa: B018
    app.extensions["celery"] = celery
    return celery


def restore_interval(visibility_timeout: int) -> int:
    """Seconds between a worker's scans for the tasks of dead workers.

    A third of the visibility timeout, from 1 to 10 s: a task of a worker that
    died runs again at most this long after the timeout passed.
    """
    return max(1, min(10, visibility_timeout // 3))


def dispatcher(sender: TwilioSender | None = None) -> Dispatcher:
    """A dispatcher for the current app context.

    Args:
        sender: The Twilio sender to use; None makes a new one from the
            configuration, which the caller closes (``dispatcher.sender``).
    """
    parley = current_app.extensions["parley"]
    if sender is None:
        sender = parley.sender()
    return Dispatcher(db.session, parley.turns(), sender, parley.delivery)


_threads = threading.local()


def thread_sender() -> TwilioSender | None:
    """This worker thread's Twilio sender, kept for the thread's life.

    One per thread (a ``requests.Session`` is not meant to be shared between
    threads), so each thread reuses its HTTPS connection to Twilio rather
    than open one per task. None when Twilio is not configured.
    """
    senders: dict[int, TwilioSender | None] = _threads.__dict__.setdefault("senders", {})
    key = id(current_app._get_current_object())  # type: ignore[attr-defined]
    if key not in senders:
        senders[key] = current_app.extensions["parley"].sender()
    return senders[key]


def enqueue_drain(celery: Celery, contact_id: int, countdown: float | None = None) -> None:
    """Publish a drain task for the contact.

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    celery.send_task(DRAIN_TASK, args=[contact_id], countdown=countdown)


def sweep_stalled(celery: Celery | None, grace_seconds: float | None = None) -> int:
    """Give every stalled contact another run: queued when Celery is up, else inline.

    Args:
        celery: The Celery app, or None to run the turns here.
        grace_seconds: Work younger than this is left alone (it is probably
            under way); default ``SWEEP_GRACE_SECONDS``.

    Returns:
        How many contacts were re-run or re-enqueued.
    """
    if grace_seconds is None:
        grace_seconds = current_app.extensions["parley"].settings.sweep_grace_seconds
    contacts = stalled_contacts(db.session, grace_seconds)
    for contact_id in contacts:
        log.warning("sweep.stalled contact=%s", contact_id)
        if celery is not None:
            try:
                enqueue_drain(celery, contact_id)
                continue
            except Exception:  # the broker is down: do it here
                log.exception("sweep.enqueue_failed contact=%s", contact_id)
        worker = dispatcher()
        try:
            worker.drain(contact_id)
        except (OperationalError, TurnNotFinished):
            db.session.rollback()
            log.exception("sweep.drain_failed contact=%s", contact_id)
        finally:
            if worker.sender is not None:
                worker.sender.close()
    return len(contacts)
