"""Where batches go over the network, and a stand-in for tests.

A sink knows nothing of a worker's state: ``HttpSink.post(batch_id, body)`` sends bytes and says
what came back (``sinks.http.classify``); the sender (``sync_workers.sender``) decides what that
means for the outbox. The local archive is not a sink but a committer (``sync_workers.commit``):
it stores a batch in the transaction that moves the cursors. ``MemorySink`` collects batch bodies
for tests.
"""

from sync_workers.sinks.http import HttpSink
from sync_workers.sinks.memory import MemorySink

__all__ = ["HttpSink", "MemorySink"]
