"""The database's clock in PostgreSQL SQL, apart from the asyncpg index itself: the
cluster's leases use it too, and importing it must not load asyncpg into a cache that
never talks to PostgreSQL (each worker's RSS)."""

from __future__ import annotations

# The database's clock, in Unix seconds: leases and heartbeats never compare two
# machines' clocks.
NOW = "extract(epoch from clock_timestamp())"
