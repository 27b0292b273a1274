"""Shared fixtures: a throwaway PostgreSQL server (tests/pg_fixture.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pg_fixture import pg_server, pg_url  # noqa: F401
