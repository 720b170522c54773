"""inorder's durable mode on one process: the runtime's side of the journal.

What happens when, for `Runtime(Bot, store="bot.db")` (or any `actors.Journal`):

* **construction**: `_store.py` checks `store=` and `codec=` (a bad argument fails
  there, G9).
* **start**: `_store.py` opens the journal (a path becomes an `SQLiteJournal`) and
  builds the runtime's `Durable` (`_journaling.py`), which replays the messages not
  acknowledged before the crash, per key in acceptance order, before any new one.
* **each loop pass**: the messages accepted, the handlers started and the outcomes
  of the pass go to the journal in one call each (`_journaling.py`); the journal
  group-commits them.
* **between incarnations**: actor snapshots are saved in the journal
  (`_snapshots.py`), so `restore(state)` gets them after a restart too.

The codec and the journal themselves live below, in `actors.journal`; users
import them from `actors` and pass `store=` to `supervisors.Runtime`.
"""

__all__: list[str] = []
