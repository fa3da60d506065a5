"""Store-suite fixtures: the session's real 3-master Redis Cluster (shared with tests/fleet)."""

from tests.fleet.cluster_support import redis_cluster3  # noqa: F401 (fixture)
