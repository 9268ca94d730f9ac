"""Key distribution rules: pure, no I/O.

The bucket key of a fetch target (the limits themselves are
``relay.limits.names.KEYS_FETCH`` and ``KEYS_TARGET``), and the low-water
rule that decides when a device is told to upload more one-time prekeys.
"""

from __future__ import annotations

from ..store import Bundle


def target_key(username: str, device_id: str | None) -> str:
    """The ``keys_target`` bucket of a fetch: ``user`` or ``user/device``.

    *username* is case-folded by the caller. Neither a username nor a path
    segment can contain ``/``, so the two forms never collide.
    """
    return username if device_id is None else f"{username}/{device_id}"


def low_on_prekeys(bundle: Bundle, low_water: int) -> bool:
    """True if this fetch took a one-time prekey and left fewer than *low_water*.

    A fetch that found the pool empty took nothing, so it sends no new notice:
    the owner was already told when the last key went.
    """
    return bundle.one_time_prekey is not None and bundle.remaining < low_water
