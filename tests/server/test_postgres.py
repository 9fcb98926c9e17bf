"""The PostgreSQL the tests start for themselves: reachable, writable, and not run as root.

The PostgreSQL store (issue 23) is tested against this server; this checks the ground
it stands on."""

from __future__ import annotations

import psycopg


def test_the_throwaway_server_takes_a_committed_write(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        version = int(db.execute("SELECT current_setting('server_version_num')").fetchone()[0])
        db.execute("CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, note text)")
        db.execute("INSERT INTO probe VALUES (1, 'stored') ON CONFLICT (id) DO UPDATE SET note = 'stored'")
    with psycopg.connect(postgres_url) as again:  # a new session sees it: it was committed
        assert again.execute("SELECT note FROM probe WHERE id = 1").fetchone() == ("stored",)
    assert version >= 130000
