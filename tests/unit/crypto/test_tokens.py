"""Access tokens: HS256 pinned, claims required, expiry on the injected clock."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from relay.crypto import InvalidToken, TokenService, hash_refresh_token, new_refresh_token

SECRET = "k" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock: Clock) -> TokenService:
    return TokenService(SECRET, 900, clock)


def test_issued_token_decodes_to_its_claims(tokens: TokenService, clock: Clock) -> None:
    """A token round-trips user, device and session ids, with exp = iat + ttl."""
    token, issued = tokens.issue("u1", "d1", "s1")
    claims = tokens.decode(token)
    assert (claims.user_id, claims.device_id, claims.session_id) == ("u1", "d1", "s1")
    assert claims.expires_at == clock.now + 900 == issued.expires_at


def test_token_carries_every_design_claim(tokens: TokenService) -> None:
    """sub, did, sid, jti, iat, exp, iss and aud are all present."""
    token, _ = tokens.issue("u1", "d1", "s1")
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) == {"sub", "did", "sid", "jti", "iat", "exp", "iss", "aud"}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_its_own_jti(tokens: TokenService) -> None:
    """Two tokens for the same session differ in jti."""
    first, _ = tokens.issue("u1", "d1", "s1")
    second, _ = tokens.issue("u1", "d1", "s1")
    assert tokens.decode(first).token_id != tokens.decode(second).token_id


def test_expired_token_is_refused(tokens: TokenService, clock: Clock) -> None:
    """At exp the token is no longer accepted (reason: expired)."""
    token, _ = tokens.issue("u1", "d1", "s1")
    clock.now += 900
    with pytest.raises(InvalidToken) as caught:
        tokens.decode(token)
    assert caught.value.reason == "expired"


def test_token_signed_with_another_secret_is_refused(tokens: TokenService, clock: Clock) -> None:
    """A forged signature is refused."""
    forged, _ = TokenService("x" * 40, 900, clock).issue("u1", "d1", "s1")
    with pytest.raises(InvalidToken):
        tokens.decode(forged)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(clock: Clock) -> dict[str, object]:
    now = int(clock.now)
    return {"sub": "u1", "did": "d1", "sid": "s1", "jti": "j", "iat": now, "exp": now + 60,
            "iss": "relay", "aud": "relay"}


def test_alg_none_is_refused(tokens: TokenService, clock: Clock) -> None:
    """An unsigned token (alg=none) is refused even with valid claims."""
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(clock))}."
    with pytest.raises(InvalidToken):
        tokens.decode(unsigned)


def test_other_hmac_algorithm_is_refused(tokens: TokenService, clock: Clock) -> None:
    """HS512 with the right secret is still refused: the algorithm is pinned."""
    token = jwt.encode(_claims(clock), SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken):
        tokens.decode(token)


@pytest.mark.parametrize("missing", ["sub", "did", "sid", "jti", "exp", "iss", "aud"])
def test_token_missing_a_claim_is_refused(
    tokens: TokenService, clock: Clock, missing: str
) -> None:
    """Every design claim is required."""
    claims = _claims(clock)
    del claims[missing]
    with pytest.raises(InvalidToken):
        tokens.decode(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize(("claim", "value"), [("iss", "other"), ("aud", "other"), ("sub", 5)])
def test_token_with_a_wrong_claim_is_refused(
    tokens: TokenService, clock: Clock, claim: str, value: object
) -> None:
    """Wrong issuer, audience or a non-string id is refused."""
    claims = {**_claims(clock), claim: value}
    with pytest.raises(InvalidToken):
        tokens.decode(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "😀"])
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    """Anything that is not a JWT raises InvalidToken, nothing else."""
    with pytest.raises(InvalidToken):
        tokens.decode(garbage)


def test_refresh_tokens_are_random_and_stored_hashed() -> None:
    """Refresh tokens differ each time; the stored form is their SHA-256."""
    (a, a_hash), (b, _) = new_refresh_token(), new_refresh_token()
    assert a != b and len(a) >= 40
    assert a_hash == hash_refresh_token(a) and a.encode() not in a_hash


def test_wall_clock_default_works() -> None:
    """With time.time the token is valid now."""
    service = TokenService(SECRET, 60, time.time)
    token, _ = service.issue("u", "d", "s")
    assert service.decode(token).user_id == "u"


def test_token_living_longer_than_the_ttl_is_refused(tokens: TokenService, clock: Clock) -> None:
    """exp - iat above the configured TTL is refused, even with the right secret."""
    claims = {**_claims(clock), "exp": int(clock.now) + 901}
    with pytest.raises(InvalidToken) as caught:
        tokens.decode(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert caught.value.reason == "lifetime"


def test_token_issued_in_the_future_is_refused(tokens: TokenService, clock: Clock) -> None:
    """An iat more than a minute ahead of our clock was not issued by us."""
    now = int(clock.now)
    claims = {**_claims(clock), "iat": now + 120, "exp": now + 600}
    with pytest.raises(InvalidToken) as caught:
        tokens.decode(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert caught.value.reason == "lifetime"


def test_token_lifetime_at_exactly_the_ttl_is_accepted(tokens: TokenService, clock: Clock) -> None:
    """exp - iat equal to the TTL is what issue() makes; it is accepted."""
    claims = {**_claims(clock), "exp": int(clock.now) + 900}
    assert tokens.decode(jwt.encode(claims, SECRET, algorithm="HS256")).user_id == "u1"


def test_not_after_caps_the_expiry(tokens: TokenService, clock: Clock) -> None:
    """A token issued near its session's end expires with the session."""
    _, claims = tokens.issue("u1", "d1", "s1", not_after=clock.now + 100)
    assert claims.expires_at == clock.now + 100
