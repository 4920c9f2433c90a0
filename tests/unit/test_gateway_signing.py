"""Webhook signatures: GitHub's X-Hub-Signature-256 scheme over the raw body."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from mlsteward.gateway import signing
from mlsteward.gateway.client import build_request
from mlsteward.gateway.signing import sign, verify

SECRET = "s3cret-for-tests"
BODY = b'{"action":"train","model":"heart_disease"}'


def test_sign_matches_githubs_documented_example() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(b"Hello, World!", "It's a Secret to Everybody") == expected


def test_a_signature_verifies_only_its_own_body_and_secret() -> None:
    signature = sign(BODY, SECRET)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(BODY, SECRET, signature)
    assert verify(BODY, SECRET.encode(), signature)  # bytes and text secrets agree
    assert not verify(BODY + b" ", SECRET, signature)  # tampered body
    assert not verify(BODY.replace(b"train", b"score"), SECRET, signature)
    assert not verify(BODY, SECRET + "x", signature)  # wrong secret
    assert not verify(BODY, "other", signature)


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=" + "0" * 40, "sha256=" + "0" * 64, "sha256=zz", "sha256=é"],
)
def test_missing_or_malformed_signatures_are_not_valid(header: str | None) -> None:
    assert not verify(BODY, SECRET, header)


def test_the_hex_digest_is_compared_case_insensitively() -> None:
    assert verify(BODY, SECRET, sign(BODY, SECRET).upper().replace("SHA256=", "sha256="))


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        sign(BODY, "")


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", recording)
    good = sign(BODY, SECRET)
    forged = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert verify(BODY, SECRET, good) is True
    assert verify(BODY, SECRET, forged) is False
    # Both outcomes came from compare_digest over the full header values, never from ==.
    assert calls == [(good.encode(), good.encode()), (good.encode(), forged.encode())]


def test_a_built_trigger_is_signed_over_its_exact_bytes() -> None:
    body, headers = build_request("train", "heart_disease", {"max_evals": 2}, SECRET)
    assert verify(body, SECRET, headers["X-Hub-Signature-256"])
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={digest}"
    assert headers["X-Mlsteward-Delivery"] in body.decode()
