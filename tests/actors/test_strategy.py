"""OTP restart rules, decided without any process."""

from __future__ import annotations

import pytest

from actors.spec import Restart, Strategy
from actors.strategy import Escalate, Ignore, RestartChildren, RestartPlan

P, T, TMP = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY


def plan(strategy: Strategy, *types: Restart, max_restarts: int = 3, **kw: float) -> RestartPlan:
    names = [(n, t) for n, t in zip("abcd", types)]
    return RestartPlan(names, strategy, max_restarts=max_restarts, period=10.0, **kw)


def test_one_for_one_restarts_only_the_child() -> None:
    assert plan(Strategy.ONE_FOR_ONE, P, P, P).child_exited("b", True, 0.0) == \
        RestartChildren(stop=(), start=("b",), delay=0.0)


def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() -> None:
    assert plan(Strategy.ONE_FOR_ALL, P, P, P).child_exited("b", True, 0.0) == \
        RestartChildren(stop=("c", "a"), start=("a", "b", "c"), delay=0.0)


def test_rest_for_one_restarts_the_child_and_those_started_after_it() -> None:
    assert plan(Strategy.REST_FOR_ONE, P, P, P, P).child_exited("b", True, 0.0) == \
        RestartChildren(stop=("d", "c"), start=("b", "c", "d"), delay=0.0)


def test_transient_is_restarted_only_after_an_abnormal_exit() -> None:
    p = plan(Strategy.ONE_FOR_ONE, T)
    assert isinstance(p.child_exited("a", False, 0.0), Ignore)
    p = plan(Strategy.ONE_FOR_ONE, T)
    assert isinstance(p.child_exited("a", True, 0.0), RestartChildren)


def test_temporary_is_never_restarted_nor_restarted_with_its_siblings() -> None:
    p = plan(Strategy.ONE_FOR_ALL, P, TMP, P)
    assert isinstance(p.child_exited("b", True, 0.0), Ignore)
    assert p.child_exited("a", True, 1.0) == RestartChildren(stop=("c",), start=("a", "c"),
                                                            delay=0.0)


def test_intensity_exceeded_escalates() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=2)
    assert isinstance(p.child_exited("a", True, 0.0), RestartChildren)
    assert isinstance(p.child_exited("a", True, 1.0), RestartChildren)
    decision = p.child_exited("a", True, 2.0)
    assert isinstance(decision, Escalate) and "max_restarts=2" in decision.reason


def test_the_escalation_counts_the_restarts_that_happened() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=2)
    p.child_exited("a", True, 0.0)
    p.child_exited("a", True, 1.0)
    decision = p.child_exited("a", True, 2.0)
    assert isinstance(decision, Escalate)
    assert decision.reason.startswith("2 restarts within 10 s, then another exit (a)")


def test_repeat_crashes_on_a_poison_message_are_free_and_its_first_is_refunded() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=2, backoff=0.1)
    for _ in range(5):  # five poison messages in a row, each crashing three times
        first = p.child_exited("a", True, 1.0)
        repeats = [p.child_exited("a", True, 1.0, charged=False) for _ in range(2)]
        assert isinstance(first, RestartChildren)
        assert all(isinstance(r, RestartChildren) and r.delay == 0.0 for r in repeats)
        p.refund()  # the message became a dead letter
    assert isinstance(p.child_exited("a", True, 1.0), RestartChildren)


def test_restarts_older_than_the_period_are_forgotten() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=2)
    for at in (0.0, 1.0, 11.5, 21.6):
        assert isinstance(p.child_exited("a", True, at), RestartChildren)


def test_repeated_restarts_back_off_exponentially_up_to_the_cap() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=10, backoff=0.1, backoff_max=0.3)
    delays = [p.child_exited("a", True, t * 0.01).delay for t in range(5)]  # type: ignore[union-attr]
    assert delays == [0.0, 0.1, 0.2, 0.3, 0.3]


# -- the supervisor's record of a child: one table of legal moves --------------------------------
def _every_illegal_move() -> list[tuple[object, str]]:
    from actors.supervisor import TRANSITIONS, State

    events = {event for _, event in TRANSITIONS}
    return [(state, event) for state in State for event in sorted(events)
            if (state, event) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), _every_illegal_move())
def test_a_child_state_refuses_every_move_outside_its_table(state: object, event: str) -> None:
    from actors.supervisor import Child
    from messages.errors import IllegalTransition

    child = Child("a", "t/a", None, None, None, state=state)  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition, match=event):
        child.transition(event)
    assert child.state is state


def test_a_child_goes_through_its_life_by_the_table() -> None:
    from actors.supervisor import Child, State

    child = Child("a", "t/a", None, None, None)  # type: ignore[arg-type]
    for event, after in (("start", State.STARTING), ("ready", State.RUNNING),
                         ("stop", State.STOPPING), ("stopped", State.STOPPED),
                         ("wait", State.WAITING), ("start", State.STARTING),
                         ("failed", State.STOPPED)):
        child.transition(event)
        assert child.state is after
