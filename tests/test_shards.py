"""Shard assignment (supervisors.cluster._shards): stable, balanced, and minimal movement."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from supervisors.cluster._shards import owner_of, plan, shard_of

members = st.lists(
    st.text("abcdef0123456789", min_size=1, max_size=8), min_size=1, max_size=8, unique=True
)


def test_shard_of_is_stable_across_processes_and_versions() -> None:
    """Pinned values: a change here would move every key of a running cluster."""
    assert {k: shard_of(k, 256) for k in ("telegram:42", 42, "42")} == {
        "telegram:42": 130,
        42: 150,
        "42": 123,
    }


def test_str_and_int_keys_differ_and_spread_evenly() -> None:
    counts = Counter(shard_of(f"user:{n}", 16) for n in range(16_000))
    assert len(counts) == 16
    assert max(counts.values()) < 1.15 * 1000
    assert sum(shard_of(n, 64) == shard_of(str(n), 64) for n in range(1000)) < 60


@given(members, st.integers(0, 255))
def test_every_node_computes_the_same_owner(live: list[str], shard: int) -> None:
    assert owner_of(shard, live) == owner_of(shard, list(reversed(live)))
    assert owner_of(shard, live) in live


@given(members, st.text("xyz", min_size=1, max_size=4))
def test_a_join_moves_only_shards_to_the_joiner(live: list[str], joiner: str) -> None:
    before = {s: owner_of(s, live) for s in range(128)}
    after = {s: owner_of(s, [*live, joiner]) for s in range(128)}
    assert all(after[s] in (before[s], joiner) for s in range(128))


@given(members)
def test_a_leave_moves_only_the_leavers_shards(live: list[str]) -> None:
    leaver, rest = live[0], live[1:]
    if not rest:
        return
    before = {s: owner_of(s, live) for s in range(128)}
    after = {s: owner_of(s, rest) for s in range(128)}
    assert all(after[s] == before[s] for s in range(128) if before[s] != leaver)


def test_plan_acquires_its_shards_hands_off_others_and_damps() -> None:
    live = ["a", "b"]
    mine = {s for s in range(32) if owner_of(s, live) == "a"}
    first = plan("a", live, set(), 32)
    assert set(first.acquire) == mine
    assert first.hand_off == ()
    assert plan("a", live, set(), 32, joining=True).acquire == ()
    # "a" owned everything while alone; "b" joined: hand off b's shards, 3 at a time.
    moving = plan("a", live, set(range(32)), 32, max_handoffs=3, handing_off=1)
    assert len(moving.hand_off) == 2
    assert set(moving.hand_off) <= set(range(32)) - mine
