"""The mailbox: priority lanes, FIFO within a lane, lazily allocated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pykka._envelope import Envelope as PykkaEnvelope

from actors._mailbox import Envelope, Mailbox


def env(message: object, priority: int = 0) -> Envelope:
    return Envelope(message, None, priority, 0.0)


class TestMailbox:
    def test_empty_mailbox_pops_none(self) -> None:
        """An empty mailbox has nothing to give and no lanes allocated."""
        box = Mailbox()

        assert box.pop() is None
        assert box.empty()
        assert (box._head, box._lanes, box._lane0, box._order) == (None, None, None, None)

    def test_highest_priority_first_then_fifo(self) -> None:
        """The oldest of the highest priority comes out first (G3), FIFO within a lane (G1)."""
        box = Mailbox()
        for message, priority in [("a", 0), ("b", 2), ("c", 1), ("d", 2), ("e", 0)]:
            box.put(env(message, priority))

        assert [box.pop().message for _ in range(5)] == ["b", "d", "c", "a", "e"]  # type: ignore[union-attr]
        assert (box._head, box._lanes, box._lane0, box._order) == (None, None, None, None)

    def test_put_front_keeps_the_place_of_a_retried_message(self) -> None:
        """A message put back goes to the head of its own lane only."""
        box = Mailbox()
        box.put(env("later", 0))
        box.put(env("urgent", 5))
        box.put_front(env("retry", 0))

        assert [box.pop().message for _ in range(3)] == ["urgent", "retry", "later"]  # type: ignore[union-attr]

    def test_take_below_drops_only_lower_priorities(self) -> None:
        """`clear` semantics: strictly lower priorities are removed, in order."""
        box = Mailbox()
        for message, priority in [("a", 0), ("b", 1), ("c", 2), ("d", 0)]:
            box.put(env(message, priority))

        taken = box.take_below(2)

        assert [e.message for e in taken] == ["b", "a", "d"]
        assert len(box) == 1
        assert box.pop().message == "c"  # type: ignore[union-attr]

    def test_take_all_returns_delivery_order(self) -> None:
        """Shutdown takes everything in the order it would have been handled."""
        box = Mailbox()
        for message, priority in [("a", 0), ("b", 1), ("c", 0)]:
            box.put(env(message, priority))

        assert [e.message for e in box.take_all()] == ["b", "a", "c"]
        assert box.empty()

    def test_plain_pykka_envelopes_are_carried_at_priority_zero(self) -> None:
        """pykka's ActorRef.tell puts plain envelopes: they become priority 0."""
        box = Mailbox()
        box.put(PykkaEnvelope("x"))

        assert box.get().priority == 0

    @given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=200))
    def test_order_matches_a_stable_sort(self, ops: list[tuple[int, bool]]) -> None:
        """Any interleaving of puts and pops matches the reference: stable sort by -priority."""
        box = Mailbox()
        model: list[tuple[int, int]] = []  # (priority, seq)
        for seq, (priority, pop) in enumerate(ops):
            if pop:
                expected = None
                if model:
                    best = max(model, key=lambda item: (item[0], -item[1]))
                    model.remove(best)
                    expected = best[1]
                got = box.pop()
                assert (got.message if got else None) == expected
            else:
                box.put(env(seq, priority))
                model.append((priority, seq))
            assert len(box) == len(model)
