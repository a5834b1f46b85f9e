"""How long the metrics dashboard takes to render for 10,000 messages (server time).

    .venv/bin/python bench/dashboard.py                       # a fresh SQLite file
    .venv/bin/python bench/dashboard.py --database postgresql://postgres@127.0.0.1/bench
    .venv/bin/python bench/dashboard.py --messages 50000 --runs 20

Seeds a migrated database (SQLite in a temporary folder by default; a
PostgreSQL database you name is emptied first) with contacts, conversations on
both channels, executions and messages spread over 30 days, a third of the bot
replies with LLM usage, a few failed deliveries; then logs in and renders
``GET /admin/metrics`` through the WSGI app in process, which is the server's
time without the network, and prints the median and the slowest of the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from flask_migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from curation.users import create_user  # noqa: E402
from models import Base, Contact, Conversation, Execution, Message, db  # noqa: E402

STEPS = ["welcome", "area", "coach", "confirm", "done"]


def seed(messages: int, rng: random.Random) -> None:
    """Insert `messages` messages (half inbound) for messages // 20 contacts."""
    now = dt.datetime.now(dt.UTC)
    contacts = max(1, messages // 20)
    db.session.execute(
        sa.insert(Contact),
        [
            {"id": i, "phone": f"+1555{i:07d}", "created_at": now, "updated_at": now}
            for i in range(1, contacts + 1)
        ],
    )
    db.session.execute(
        sa.insert(Conversation),
        [
            {
                "id": i,
                "contact_id": i,
                "channel": "whatsapp" if i % 3 else "sms",
                "address": "whatsapp:+14155238886",
                "controlled_by": "bot",
                "created_at": now,
                "last_message_at": now,
            }
            for i in range(1, contacts + 1)
        ],
    )
    db.session.execute(
        sa.insert(Execution),
        [
            {
                "id": i,
                "contact_id": i,
                "flow_id": "goal_setting",
                "flow_version": "bench",
                "current_step": rng.choice(STEPS),
                "status": rng.choice(["waiting", "ended"]),
                "variables": {},
                "step_results": {},
                "step_state": {},
                "started_at": now,
                "updated_at": now,
            }
            for i in range(1, contacts + 1)
        ],
    )
    rows = []
    for n in range(messages):
        contact = n % contacts + 1
        inbound = n % 2 == 0
        llm = not inbound and n % 3 == 1
        rows.append(
            {
                "conversation_id": contact,
                "contact_id": contact,
                "direction": "inbound" if inbound else "outbound",
                "author": "contact" if inbound else "bot",
                "body": f"message {n}",
                "status": "received" if inbound else rng.choice(["delivered"] * 30 + ["failed"]),
                "execution_id": contact,
                "flow_id": "goal_setting",
                "step_id": None if inbound else STEPS[(n // 2) % len(STEPS)],
                "model": "gpt-4o-mini" if llm else None,
                "prompt_tokens": rng.randint(200, 900) if llm else None,
                "completion_tokens": rng.randint(20, 200) if llm else None,
                "latency_ms": rng.randint(300, 3000) if llm else None,
                "created_at": now - dt.timedelta(minutes=rng.randint(0, 30 * 24 * 60)),
            }
        )
    db.session.execute(sa.insert(Message), rows)
    create_user(db.session, "bench@example.com", "bench-password", "admin")
    db.session.commit()


def main() -> None:
    """Seed, then time the dashboard."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="parley-bench-")
    url = options.database or f"sqlite:///{folder}/bench.sqlite3"
    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "bench"})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="heads")
        for table in reversed(Base.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
        started = time.perf_counter()
        seed(options.messages, random.Random(7))
        print(f"seeded {options.messages} messages in {time.perf_counter() - started:.1f} s")
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    client.post(
        "/admin/login",
        data={"email": "bench@example.com", "password": "bench-password", "csrf_token": token},
    )
    timings = []
    for _ in range(options.runs):
        started = time.perf_counter()
        response = client.get("/admin/metrics")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    backend = url.split(":", 1)[0]
    print(
        f"GET /admin/metrics, {options.messages} messages on {backend}: "
        f"median {statistics.median(timings) * 1000:.0f} ms, "
        f"slowest {max(timings) * 1000:.0f} ms over {options.runs} runs"
    )


if __name__ == "__main__":
    main()
