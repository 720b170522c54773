"""inorder's storage: the codec (messages and state as msgpack bytes) and the journal.

What happens when a runtime is durable (`Runtime(store=...)`):

1. A message is accepted: the `Codec` encodes it at the call site (`_codec.py`, its
   value walking and bounded decoding in `_codec_format.py`); a value it cannot
   encode is refused there with `CodecError`.
2. The encoded envelope goes to a `Journal` (the seam, `_seam.py`): `append` numbers
   it at once and returns a receipt that resolves when it is durable.
3. The embedded journal, `SQLiteJournal` (`_sqlite.py`), has a writer thread
   (`_writer.py`) that group-commits everything queued in one transaction;
   `_file.py` opens and checks the file (a foreign or newer file is refused with
   `JournalError`, naming the recovery path).
4. Outcomes acknowledge messages, dead letters and actor snapshots are saved in the
   same commits; after a crash, `pending` gives back the unacknowledged messages in
   acceptance order for replay.

This package is below the runtime: it imports the kernel's errors and envelope
types from `actors`, never anything from `supervisors`. Users import these names
from `actors`; they are listed here for a reader of the storage room.
"""

from actors.journal._codec import Codec, EnvelopeRecord
from actors.journal._seam import DeadLetterRecord, Journal, PendingRecord
from actors.journal._sqlite import SQLiteJournal

__all__ = [
    "Codec",
    "DeadLetterRecord",
    "EnvelopeRecord",
    "Journal",
    "PendingRecord",
    "SQLiteJournal",
]
