"""The pure supervision policy: budget, backoff, directives, retries (no clock, no I/O)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisors import Directive, RestartPolicy, default_decider
from supervisors._policy import RestartState, backoff_delay, decide, plan_restart, should_retry

policies = st.builds(
    RestartPolicy,
    max_restarts=st.integers(0, 20),
    within=st.floats(0.1, 1000),
    backoff_min=st.floats(0, 5),
    backoff_max=st.floats(5, 100),
    backoff_factor=st.floats(1, 4),
    jitter=st.floats(0, 1),
    reset_after=st.floats(0, 100),
    max_retries=st.integers(0, 5),
)


class TestBackoff:
    @given(policies, st.integers(0, 10_000), st.floats(0, 1, exclude_max=True))
    def test_delay_is_bounded(self, policy: RestartPolicy, n: int, unit: float) -> None:
        """Whatever the attempt and the jitter draw, 0 <= delay <= backoff_max."""
        delay = backoff_delay(policy, n, unit)

        assert 0 <= delay <= policy.backoff_max
        assert math.isfinite(delay)

    @given(policies, st.integers(0, 60))
    def test_without_jitter_delay_grows_monotonically(self, policy: RestartPolicy, n: int) -> None:
        """With the jitter draw at its midpoint, delay(n) <= delay(n + 1)."""
        assert backoff_delay(policy, n, 0.5) <= backoff_delay(policy, n + 1, 0.5)

    def test_exact_schedule(self) -> None:
        """min * factor**n, capped at max."""
        policy = RestartPolicy(backoff_min=0.1, backoff_max=1.0, backoff_factor=2.0, jitter=0)

        assert [backoff_delay(policy, n, 0.0) for n in range(6)] == pytest.approx(
            [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        )


class TestBudget:
    @given(policies, st.lists(st.floats(0, 10), max_size=60))
    def test_never_more_than_max_restarts_within_the_window(
        self, policy: RestartPolicy, gaps: list[float]
    ) -> None:
        """The restarts granted inside any window of `within` seconds never exceed the budget."""
        state = RestartState()
        now = 0.0
        granted: list[float] = []
        for gap in gaps:
            now += gap
            plan = plan_restart(policy, state, now, 0.5)
            state = plan.state
            if not plan.gave_up:
                granted.append(now)
            recent = [t for t in granted if t > now - policy.within]
            assert len(recent) <= policy.max_restarts

    def test_gives_up_on_the_restart_past_the_budget(self) -> None:
        """max_restarts=2 within 10 s: the third failure within 10 s gives up."""
        policy = RestartPolicy(max_restarts=2, within=10, jitter=0)
        state = RestartState()
        outcomes = []
        for now in (0.0, 1.0, 2.0):
            plan = plan_restart(policy, state, now, 0.5)
            state = plan.state
            outcomes.append(plan.gave_up)

        assert outcomes == [False, False, True]

    def test_window_slides(self) -> None:
        """A restart exactly `within` seconds old no longer counts."""
        policy = RestartPolicy(max_restarts=1, within=10, jitter=0)
        first = plan_restart(policy, RestartState(), 0.0, 0.5)

        assert plan_restart(policy, first.state, 9.99, 0.5).gave_up
        assert not plan_restart(policy, first.state, 10.0, 0.5).gave_up

    def test_backoff_resets_after_a_quiet_period(self) -> None:
        """After `reset_after` seconds without failure, the next delay is backoff_min again."""
        policy = RestartPolicy(
            backoff_min=1, backoff_max=60, jitter=0, reset_after=30, max_restarts=100, within=1000
        )
        state = RestartState()
        delays = []
        for now in (0.0, 1.0, 2.0, 40.0):
            plan = plan_restart(policy, state, now, 0.5)
            state = plan.state
            delays.append(plan.delay)

        assert delays == [1, 2, 4, 1]


class TestDirectives:
    def test_default_decider_restarts_exceptions(self) -> None:
        """Exceptions restart; BaseExceptions that are not Exceptions escalate."""
        assert default_decider(ValueError()) is Directive.RESTART
        assert default_decider(KeyboardInterrupt()) is Directive.ESCALATE

    def test_broken_decider_escalates(self) -> None:
        """A decider that raises or returns nonsense escalates."""

        def raises(_: BaseException) -> Directive:
            raise RuntimeError

        assert decide(raises, ValueError()) is Directive.ESCALATE
        assert decide(lambda _: "restart", ValueError()) is Directive.ESCALATE  # type: ignore[arg-type,return-value]

    @given(st.integers(1, 10), st.integers(0, 10), st.sampled_from(list(Directive)))
    def test_retry_only_within_max_retries_and_when_the_actor_goes_on(
        self, attempt: int, max_retries: int, directive: Directive
    ) -> None:
        """A failed message is retried iff attempts remain and the directive keeps the key alive."""
        policy = RestartPolicy(max_retries=max_retries)
        expected = attempt <= max_retries and directive in (Directive.RESUME, Directive.RESTART)

        assert should_retry(policy, attempt, directive) is expected


class TestValidation:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("max_restarts", -1),
            ("max_restarts", 1.5),
            ("within", 0),
            ("backoff_min", -1),
            ("backoff_factor", 0.5),
            ("jitter", 2),
            ("handler_timeout", 0),
            ("park_for", float("inf")),
            ("max_retries", True),
        ],
    )
    def test_bad_values_are_rejected_at_construction(self, field: str, value: object) -> None:
        """A policy with a nonsensical field fails at once with the field's name."""
        with pytest.raises(ValueError, match=field):
            RestartPolicy(**{field: value})  # type: ignore[arg-type]

    def test_backoff_max_below_min_is_rejected(self) -> None:
        """backoff_max < backoff_min is a clear error."""
        with pytest.raises(ValueError, match="backoff_max"):
            RestartPolicy(backoff_min=5, backoff_max=1)
