"""OTP restart rules, decided without any process."""

from __future__ import annotations

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


def test_restarts_older_than_the_period_are_forgotten() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=2)
    for at in (0.0, 1.0, 11.5, 21.6):
        assert isinstance(p.child_exited("a", True, at), RestartChildren)


def test_repeated_restarts_back_off_exponentially_up_to_the_cap() -> None:
    p = plan(Strategy.ONE_FOR_ONE, P, max_restarts=10, backoff=0.1, backoff_max=0.3)
    delays = [p.child_exited("a", True, t * 0.01).delay for t in range(5)]  # type: ignore[union-attr]
    assert delays == [0.0, 0.1, 0.2, 0.3, 0.3]
