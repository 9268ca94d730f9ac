"""Which devices a send goes to: the rule every store adapter applies. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from ._port import Enqueued, NewMessage, Outgoing, QueueFull, SendResult, Unroutable


def route(out: Outgoing, devices: Sequence[str]) -> list[str] | Unroutable:
    """The target devices of *out*, given the recipient's devices (oldest first).

    A send to one device goes to it if the recipient has it. A send to a user
    goes to all of its devices — and when the user is the sender, to the
    sender's *other* devices (multi-device sync), never to the sending one.
    """
    if out.to_device is not None:
        return [out.to_device] if out.to_device in devices else Unroutable.UNKNOWN_DEVICE
    targets = [d for d in devices if d != out.sender_device_id]
    return targets or Unroutable.NO_DEVICES


def to_message(out: Outgoing, recipient_user_id: str, targets: Sequence[str]) -> NewMessage:
    return NewMessage(
        sender_user_id=out.sender_user_id,
        sender_device_id=out.sender_device_id,
        sender_username=out.sender_username,
        client_id=out.client_id,
        recipient_user_id=recipient_user_id,
        target_device_ids=list(targets),
        body=out.body,
        sent_at=out.sent_at,
        expires_at=out.expires_at,
    )


def route_all(
    sends: Sequence[Outgoing], directory: dict[str, tuple[str, list[str]]]
) -> tuple[list[Unroutable | None], list[NewMessage]]:
    """Each send's refusal (None if routable), and the messages to store, in order.

    *directory* maps usernames to (user id, device ids, oldest first), as
    :meth:`Store.resolve_users` gives it.
    """
    refusals: list[Unroutable | None] = []
    messages: list[NewMessage] = []
    for out in sends:
        entry = directory.get(out.to_username)
        if entry is None:
            refusals.append(Unroutable.UNKNOWN_RECIPIENT)
            continue
        user_id, devices = entry
        targets = route(out, devices)
        if isinstance(targets, Unroutable):
            refusals.append(targets)
            continue
        refusals.append(None)
        messages.append(to_message(out, user_id, targets))
    return refusals, messages


def merge(
    refusals: Sequence[Unroutable | None], stored: Sequence[Enqueued | QueueFull]
) -> list[SendResult]:
    """The results in the order of the sends: refusals, and stored results in their places."""
    results = iter(stored)
    return [refusal if refusal is not None else next(results) for refusal in refusals]
