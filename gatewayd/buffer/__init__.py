"""The durable store: SQLite in WAL mode, with one persisted cursor per uplink.

``Buffer`` is the whole API (store.py); ``Batch`` is what ``Buffer.read`` returns.
"""

from gatewayd.buffer.counters import DROP_REASONS
from gatewayd.buffer.cursors import Batch
from gatewayd.buffer.store import Buffer

__all__ = ["DROP_REASONS", "Batch", "Buffer"]
