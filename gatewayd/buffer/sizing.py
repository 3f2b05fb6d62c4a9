"""How ``buffer.max_size`` splits between the database file and its write-ahead log.

Pure arithmetic, no I/O. The on-disk footprint of the buffer is the database
file plus its WAL (with ``locking_mode=EXCLUSIVE`` there is no ``-shm`` file):

- the database file is capped hard by ``PRAGMA max_page_count``;
- the WAL holds at most ``autocheckpoint_frames - 1`` frames from earlier
  transactions plus the frames of one transaction (a checkpoint runs at the
  commit that crosses the threshold and the next transaction restarts the
  log from its start), so every transaction is kept under ``txn_pages``
  pages and ``journal_size_limit`` trims a log that grew anyway;
- eviction starts above ``high_pages`` and frees down to ``low_pages``,
  so that inserting one full transaction never reaches the hard cap.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 4096
WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
# Pages a transaction writes besides the leaf pages of its rows: database
# header, interior b-tree pages, pointer-map and freelist-trunk pages, the
# series and cursors tables.
TXN_OVERHEAD_PAGES = 10
MIN_MAX_SIZE = 512 * 1024
_WAL_MIN_PAGES = 64
_WAL_MAX_PAGES = 1024


@dataclass(frozen=True)
class SizeBudget:
    """The limits derived from one ``max_size``; all sizes in bytes or pages."""

    max_size: int
    page_size: int
    wal_bytes: int  # reserved for the WAL
    max_page_count: int  # hard cap of the database file
    high_pages: int  # evict when pages in use would exceed this
    low_pages: int  # ... down to this
    autocheckpoint_frames: int
    txn_pages: int  # pages one transaction may write to the WAL

    @property
    def db_bytes(self) -> int:
        return self.max_page_count * self.page_size

    @property
    def txn_payload_bytes(self) -> int:
        """Estimated row bytes one insert transaction may carry."""
        return (self.txn_pages - TXN_OVERHEAD_PAGES) * self.page_size

    @property
    def txn_row_pages(self) -> int:
        """Row pages (leaf pages touched) one delete transaction may touch."""
        return self.txn_pages - TXN_OVERHEAD_PAGES

    @property
    def cache_kib(self) -> int:
        """Page cache size: large enough that no transaction spills mid-way."""
        return max(2048, 2 * self.txn_pages * self.page_size // 1024)


def wal_frame_bytes(page_size: int) -> int:
    return page_size + FRAME_HEADER_BYTES


def size_budget(max_size: int, page_size: int = PAGE_SIZE) -> SizeBudget:
    """Split ``max_size`` bytes into a WAL reserve and a page cap for the database.

    Raises ValueError when ``max_size`` is below ``MIN_MAX_SIZE``.
    """
    if max_size < MIN_MAX_SIZE:
        raise ValueError(f"buffer max_size {max_size} is below the minimum {MIN_MAX_SIZE} bytes")
    wal_bytes = min(max(max_size // 8, _WAL_MIN_PAGES * page_size),
                    _WAL_MAX_PAGES * page_size, max_size // 4)
    frames = (wal_bytes - WAL_HEADER_BYTES) // wal_frame_bytes(page_size)
    autocheckpoint = frames // 2
    txn_pages = frames - autocheckpoint
    max_page_count = (max_size - wal_bytes) // page_size
    high = max_page_count - txn_pages - 2
    low = high - max(max_page_count // 10, txn_pages)
    return SizeBudget(
        max_size=max_size,
        page_size=page_size,
        wal_bytes=wal_bytes,
        max_page_count=max_page_count,
        high_pages=high,
        low_pages=low,
        autocheckpoint_frames=autocheckpoint,
        txn_pages=txn_pages,
    )
