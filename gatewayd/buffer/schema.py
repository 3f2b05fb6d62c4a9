"""The buffer's SQL: schema, its version, and every statement the buffer runs.

Schema version 1 (``PRAGMA user_version``):

- ``series``: one row per (device, point, unit, kind), interned in memory;
- ``readings``: ``(id, series, t, v)``; ``id`` is assigned by the buffer,
  strictly increasing and never reused (uplink cursors are row ids); ``t``
  is UTC nanoseconds; ``v`` is ``ANY`` in a STRICT table so SQLite keeps the
  stored type exactly (see codec.py);
- ``cursors``: the acknowledged position of each uplink.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

CREATE_TABLES = (
    "CREATE TABLE series (id INTEGER PRIMARY KEY, device TEXT NOT NULL, point TEXT NOT NULL,"
    " unit TEXT, kind INTEGER NOT NULL) STRICT",
    "CREATE TABLE readings (id INTEGER PRIMARY KEY, series INTEGER NOT NULL,"
    " t INTEGER NOT NULL, v ANY) STRICT",
    "CREATE TABLE cursors (uplink TEXT PRIMARY KEY, acked INTEGER NOT NULL) STRICT",
)
TABLES = frozenset({"series", "readings", "cursors"})

# Upgrades: MIGRATIONS[n] takes a database from version n to n + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {}

# One process owns the file: no -shm file, and a second daemon is refused.
LOCKING = "PRAGMA locking_mode = EXCLUSIVE"
# Only for a new, empty file (on an existing one they would try to write).
# Incremental auto-vacuum lets a lowered max_size shrink the file without a
# full VACUUM.
NEW_FILE_PRAGMAS = (
    "PRAGMA page_size = 4096",
    "PRAGMA auto_vacuum = INCREMENTAL",
)

USER_VERSION = "PRAGMA user_version"
LIST_TABLES = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
PAGE_USAGE = "SELECT * FROM pragma_page_count(), pragma_freelist_count()"

# Series
DELETE_UNUSED_SERIES = "DELETE FROM series WHERE id NOT IN (SELECT DISTINCT series FROM readings)"
SELECT_SERIES = "SELECT id, device, point, unit, kind FROM series ORDER BY id"
INSERT_SERIES = ("INSERT OR IGNORE INTO series (id, device, point, unit, kind)"
                 " VALUES (?, ?, ?, ?, ?)")

# Readings
INSERT_READING = "INSERT INTO readings (id, series, t, v) VALUES (?, ?, ?, ?)"
READING_EXISTS = "SELECT EXISTS (SELECT 1 FROM readings WHERE id = ?)"
READING_GONE = "SELECT NOT EXISTS (SELECT 1 FROM readings WHERE id = ?)"
COUNT_READINGS = "SELECT count(*) FROM readings"
MAX_READING_ID = "SELECT max(id) FROM readings"
FIRST_ID_AFTER = "SELECT min(id) FROM readings WHERE id > ?"
# A selection (series ids) is bound as one JSON array and read with json_each.
READ_ALL = "SELECT id, series, t, v FROM readings WHERE id > ? ORDER BY id LIMIT ?"
READ_SELECTED = ("SELECT id, series, t, v FROM readings WHERE id > ? AND id <= ?"
                 " AND series IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?")
COUNT_RANGE = "SELECT count(*) FROM readings WHERE id > ? AND id <= ?"
COUNT_RANGE_SELECTED = ("SELECT count(*) FROM readings WHERE id > ? AND id <= ?"
                        " AND series IN (SELECT value FROM json_each(?))")
OLDEST_TIME_AFTER = "SELECT t FROM readings WHERE id > ? ORDER BY id LIMIT 1"
OLDEST_TIME_SELECTED = ("SELECT t FROM readings WHERE id > ?"
                        " AND series IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT 1")
DELETE_RANGE = "DELETE FROM readings WHERE id > ? AND id <= ?"
DELETE_RANGE_EXCEPT = ("DELETE FROM readings WHERE id > ? AND id <= ? AND series NOT IN"
                       " (SELECT value FROM json_each(?))")
DELETE_ID = "DELETE FROM readings WHERE id = ?"
OLDEST_ROWS = "SELECT id, series FROM readings ORDER BY id LIMIT ?"
OLDEST_ROWS_SELECTED = ("SELECT id, series FROM readings WHERE id > ?"
                        " AND series IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?")

# Cursors
SELECT_CURSORS = "SELECT uplink, acked FROM cursors"
MAX_CURSOR = "SELECT max(acked) FROM cursors"
INSERT_CURSOR = "INSERT OR IGNORE INTO cursors (uplink, acked) VALUES (?, ?)"
DELETE_CURSOR = "DELETE FROM cursors WHERE uplink = ?"
ADVANCE_CURSOR = ("INSERT INTO cursors (uplink, acked) VALUES (?, ?) ON CONFLICT (uplink)"
                  " DO UPDATE SET acked = max(acked, excluded.acked)")
CURSOR_AT_LEAST = "SELECT EXISTS (SELECT 1 FROM cursors WHERE uplink = ? AND acked >= ?)"
