"""Store-suite fixtures: the session's real 3-master Redis Cluster (shared with tests/fleet)
and a real Sentinel deployment (a master, one replica, one Sentinel)."""

from collections.abc import Iterator

import pytest

from tests.fleet.cluster_support import redis_cluster3  # noqa: F401 (fixture)
from tests.support.sentinel import SentinelSet, sentinel_set


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelSet]:
    with sentinel_set(replicas=1, sentinels=1) as s:
        yield s
