"""The buffer's occupancy as known in memory: row ids, row count, pages, limits."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gatewayd.buffer.sizing import SizeBudget

# Pages of a database with no rows: header, three table roots, pointer map.
EMPTY_DB_PAGES = 5


@dataclass
class BufferState:
    budget: SizeBudget
    last_id: int = 0  # highest committed row id; ids are never reused
    rows: int = 0  # rows in the readings table
    page_count: int = 0  # at the last measure
    freelist: int = 0
    committed_total: int = 0  # readings committed since open
    commits: int = 0  # insert transactions committed since open

    @property
    def used_pages(self) -> int:
        return self.page_count - self.freelist

    def rows_per_page(self) -> float:
        """Average rows per page in use (at least 1), for sizing deletes."""
        data_pages = max(1, self.used_pages - EMPTY_DB_PAGES)
        return max(1.0, self.rows / data_pages)

    def delete_span(self) -> int:
        """Row ids one delete transaction may cover and stay within the WAL budget."""
        return max(1, math.floor(self.budget.txn_row_pages * self.rows_per_page()))
