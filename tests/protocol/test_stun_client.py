"""StunTransaction driven by ``now`` against the responder's logic, in memory (no sockets)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from messages.errors import IllegalTransition, UsageError
from protocol.stun import (
    BINDING,
    StunClass,
    StunMessage,
    binding_response,
    parse_message,
    serialize_message,
)
from protocol.stun.client import (
    BindingFailed,
    BindingSucceeded,
    StunTransaction,
    TransactionState,
)

SERVER = ("1.2.3.4", 3478)  # never contacted: datagrams stay in memory
CLIENT = ("203.0.113.7", 40001)


def respond(request: bytes) -> bytes:
    answer = binding_response(request, CLIENT)
    assert answer is not None
    return answer


def transfer(transaction: StunTransaction, now: float) -> list[bool]:
    """Deliver the transaction's pending requests to the responder and its answers back."""
    answers = [binding_response(data, CLIENT) for data, _ in transaction.datagrams_to_send(now)]
    return [transaction.receive_datagram(answer, SERVER, now) for answer in answers if answer]


def run_timers(transaction: StunTransaction, limit: float) -> list[float]:
    """Fire every timer up to ``limit``; return the times at which requests went out."""
    sent = [0.0] * len(transaction.datagrams_to_send(0.0))
    while (timer := transaction.get_timer()) is not None and timer <= limit:
        transaction.handle_timer(timer)
        sent += [timer] * len(transaction.datagrams_to_send(timer))
    return sent


def events(transaction: StunTransaction) -> list[object]:
    return list(iter(transaction.next_event, None))


def test_retransmissions_double_then_give_up_after_rm_times_rto() -> None:
    transaction = StunTransaction(SERVER, 0.0)
    assert run_timers(transaction, 100.0) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert transaction.state is TransactionState.FAILED
    assert events(transaction) == [
        BindingFailed("no answer from STUN server 1.2.3.4:3478 after 7 tries")]
    assert transaction.get_timer() is None


def test_last_wait_is_rm_times_rto_after_the_last_request() -> None:
    transaction = StunTransaction(SERVER, 10.0, rto=0.1, max_transmits=2, last_wait_factor=4)
    transaction.handle_timer(10.1)
    assert transaction.get_timer() == pytest.approx(10.5)
    transaction.handle_timer(10.49)
    assert transaction.state is TransactionState.WAITING
    transaction.handle_timer(10.5)
    assert events(transaction) == [BindingFailed(
        "no answer from STUN server 1.2.3.4:3478 after 2 tries")]


def test_every_retransmission_repeats_the_same_request() -> None:
    transaction = StunTransaction(SERVER, 0.0)
    first = transaction.datagrams_to_send(0.0)
    transaction.handle_timer(0.2)  # early: nothing happens
    assert transaction.datagrams_to_send(0.2) == []
    transaction.handle_timer(0.5)
    assert transaction.datagrams_to_send(0.5) == first == [(first[0][0], SERVER)]
    assert parse_message(first[0][0]).transaction_id == transaction.transaction_id


def test_success_reports_mapping_server_and_rtt(caplog: pytest.LogCaptureFixture) -> None:
    transaction = StunTransaction(SERVER, 5.0)
    caplog.set_level(logging.INFO, logger="protocol.stun.client")
    assert transfer(transaction, 5.25) == [True]
    assert events(transaction) == [BindingSucceeded(CLIENT, SERVER, 0.25)]
    assert transaction.state is TransactionState.SUCCEEDED and transaction.get_timer() is None
    assert "waiting -> succeeded" in caplog.text


def test_rtt_counts_from_the_latest_retransmission() -> None:
    transaction = StunTransaction(SERVER, 0.0)
    lost = transaction.datagrams_to_send(0.0)
    transaction.handle_timer(0.5)
    assert transfer(transaction, 0.625) == [True]
    assert events(transaction) == [BindingSucceeded(CLIENT, SERVER, 0.125)]
    duplicate = respond(lost[0][0])  # the answer to the first copy, arriving late
    assert transaction.receive_datagram(duplicate, SERVER, 0.75) is False
    transaction.handle_timer(1.5)  # a shell's stale timer is harmless
    assert events(transaction) == []


def test_classic_mode_speaks_rfc3489_and_reads_mapped_address() -> None:
    transaction = StunTransaction(SERVER, 0.0, classic=True)
    ((request, _),) = transaction.datagrams_to_send(0.0)
    assert parse_message(request).magic_cookie is False and len(transaction.transaction_id) == 16
    assert transaction.receive_datagram(respond(request), SERVER, 0.125)
    assert events(transaction) == [BindingSucceeded(CLIENT, SERVER, 0.125)]


def answer_with(transaction: StunTransaction, message_class: StunClass,
                *attributes: tuple[str, object]) -> bytes:
    return serialize_message(StunMessage(BINDING, message_class, transaction.transaction_id,
                                         attributes))


def test_falls_back_to_mapped_address_from_an_rfc3489_server() -> None:
    transaction = StunTransaction(SERVER, 0.0)
    answer = answer_with(transaction, StunClass.SUCCESS, ("MAPPED-ADDRESS", CLIENT))
    assert transaction.receive_datagram(answer, SERVER, 0.25)
    assert events(transaction) == [BindingSucceeded(CLIENT, SERVER, 0.25)]


def test_error_response_and_missing_address_fail_with_a_reason() -> None:
    refused, empty = StunTransaction(SERVER, 0.0), StunTransaction(SERVER, 0.0)
    assert refused.receive_datagram(answer_with(
        refused, StunClass.ERROR, ("ERROR-CODE", (420, "Unknown Attribute"))), SERVER, 0.1)
    assert empty.receive_datagram(answer_with(empty, StunClass.SUCCESS), SERVER, 0.1)
    assert events(refused) == [BindingFailed(
        "STUN server 1.2.3.4:3478 refused the Binding request: 420 Unknown Attribute")]
    assert events(empty) == [BindingFailed(
        "STUN server 1.2.3.4:3478 answered without a mapped address")]


def test_answers_to_other_transactions_and_garbage_are_ignored() -> None:
    transaction, other = StunTransaction(SERVER, 0.0), StunTransaction(SERVER, 0.0)
    ((request, _),) = other.datagrams_to_send(0.0)
    assert transaction.receive_datagram(respond(request), SERVER, 0.1) is False
    assert transaction.receive_datagram(b"\x00\x01junk", SERVER, 0.1) is False
    assert transaction.receive_datagram(request, SERVER, 0.1) is False  # a request, not an answer
    assert transaction.state is TransactionState.WAITING and events(transaction) == []
    assert transfer(transaction, 0.2) == [True]


@pytest.mark.parametrize("settings", [
    {"rto": 0.0}, {"max_transmits": 0}, {"last_wait_factor": 0}])
def test_bad_settings_are_usage_errors(settings: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        StunTransaction(SERVER, 0.0, **settings)


ENDED = [TransactionState.SUCCEEDED, TransactionState.FAILED]


@pytest.mark.parametrize("old, new", list(itertools.product(ENDED, ENDED)) + [
    (TransactionState.WAITING, TransactionState.WAITING)])
def test_illegal_transitions_raise(old: TransactionState, new: TransactionState) -> None:
    transaction = StunTransaction(SERVER, 0.0)
    transaction.state = old
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        transaction._finish(new, BindingFailed("test"))
