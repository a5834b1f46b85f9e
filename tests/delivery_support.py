"""Helpers for the delivery tests: a Redis database of their own, the echo flows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "tests" / "data" / "flows_delivery"

#: A Redis database number the tests own and flush (not the default 0).
REDIS_TEST_URL = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def redis_or_skip(url: str = REDIS_TEST_URL) -> str:
    """Flush the tests' Redis database and return its URL; skip when Redis does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as error:
        pytest.skip(f"Redis does not answer at {url}: {error}")
    finally:
        client.close()
    return url
