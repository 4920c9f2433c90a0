"""OIDC: an identity provider's JWTs verified against its published keys (a JWKS file, or a real
HTTP endpoint on loopback), and its groups mapped to mlsteward roles. Every refusal is an
AuthenticationError whose message says why and never repeats the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mlsteward.errors import AuthenticationError, ConfigError
from mlsteward.identity.oidc import (
    ENV,
    OidcIdentity,
    OidcSettings,
    looks_like_jwt,
    oidc_settings,
    verify_jwt,
)

ISSUER = "https://idp.example.com/realms/acme"
AUDIENCE = "mlsteward"
ROLE_MAP = {
    "ml-approvers": ["approver"],
    "ml-trainers": ["trainer", "viewer"],
    "ml-admins": ["admin"],
}


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    other_rsa: rsa.RSAPrivateKey  # never published: a forger's key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(self.rsa, "rsa-1", "RS256"), _jwk(self.ec, "ec-1", "ES256")]}


def _jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        other_rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture
def jwks_file(keys: Keys, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()), encoding="utf-8")
    return path


@pytest.fixture
def settings(jwks_file: Path) -> OidcSettings:
    return OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=jwks_file,
        role_map=ROLE_MAP,
        teams_claim="teams",
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "4f1c2a9e-alice",
        "preferred_username": "alice",
        "groups": ["staff", "ml-approvers"],
        "teams": ["cardiology"],
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any, kid: str = "rsa-1", alg: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def refused(token: str, settings: OidcSettings, match: str) -> str:
    """The refusal's message, checked to say ``match`` and to carry no part of the token."""
    with pytest.raises(AuthenticationError, match=match) as caught:
        verify_jwt(token, settings)
    message = str(caught.value)
    assert token not in message
    for part in token.split("."):
        if len(part) > 8:
            assert part not in message
    return message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: what an attacker sends when a library would refuse to make it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


# --- valid tokens ---------------------------------------------------------------------------


def test_a_valid_rsa_token_proves_its_user_with_mapped_roles_and_teams(
    keys: Keys, settings: OidcSettings
) -> None:
    payload = claims()
    identity = verify_jwt(sign(payload, keys.rsa), settings)
    assert identity == OidcIdentity(
        name="alice",
        roles=frozenset({"approver"}),
        teams=frozenset({"cardiology"}),
        subject="4f1c2a9e-alice",
        expires_at=payload["exp"],
    )


def test_a_valid_ec_token_with_several_groups_gets_the_union_of_their_roles(
    keys: Keys, settings: OidcSettings
) -> None:
    token = sign(claims(groups=["ml-trainers", "ml-approvers"]), keys.ec, kid="ec-1", alg="ES256")
    identity = verify_jwt(token, settings)
    assert identity.roles == {"trainer", "viewer", "approver"}


def test_the_username_falls_back_to_the_subject_and_teams_are_optional(
    keys: Keys, jwks_file: Path
) -> None:
    no_teams = OidcSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file, role_map=ROLE_MAP
    )
    token = sign(claims(preferred_username=None), keys.rsa)
    identity = verify_jwt(token, no_teams)
    assert identity.name == "4f1c2a9e-alice" and identity.teams == frozenset()


def test_an_audience_list_containing_ours_is_accepted(keys: Keys, settings: OidcSettings) -> None:
    token = sign(claims(aud=["account", AUDIENCE]), keys.rsa)
    assert verify_jwt(token, settings).name == "alice"


def test_clock_skew_within_the_leeway_is_accepted(keys: Keys, settings: OidcSettings) -> None:
    now = int(time.time())
    just_expired = sign(claims(exp=now - 5), keys.rsa)
    almost_valid = sign(claims(nbf=now + 5, iat=now + 5), keys.rsa)
    assert verify_jwt(just_expired, settings).name == "alice"
    assert verify_jwt(almost_valid, settings).name == "alice"
    strict = settings.model_copy(update={"leeway_seconds": 0})
    refused(just_expired, strict, "has expired")
    refused(almost_valid, strict, "not valid yet")


# --- refusals -------------------------------------------------------------------------------


def test_a_token_from_another_issuer_is_refused(keys: Keys, settings: OidcSettings) -> None:
    token = sign(claims(iss="https://evil.example.com"), keys.rsa)
    message = refused(token, settings, "issued by 'https://evil.example.com'")
    assert ISSUER in message


def test_a_token_for_another_audience_is_refused(keys: Keys, settings: OidcSettings) -> None:
    refused(sign(claims(aud="grafana"), keys.rsa), settings, "for audience 'grafana'")


def test_an_expired_token_is_refused(keys: Keys, settings: OidcSettings) -> None:
    now = int(time.time())
    refused(sign(claims(iat=now - 3600, exp=now - 120), keys.rsa), settings, "has expired")


def test_a_token_not_valid_yet_is_refused(keys: Keys, settings: OidcSettings) -> None:
    now = int(time.time())
    refused(sign(claims(nbf=now + 600), keys.rsa), settings, "not valid yet")
    refused(sign(claims(iat=now + 600), keys.rsa), settings, "not valid yet")


@pytest.mark.parametrize("claim", ["exp", "sub", "iss", "aud"])
def test_a_token_without_a_required_claim_is_refused(
    keys: Keys, settings: OidcSettings, claim: str
) -> None:
    refused(sign(claims(**{claim: None}), keys.rsa), settings, f"no '{claim}' claim")


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(
    keys: Keys, settings: OidcSettings
) -> None:
    token = sign(claims(groups=["ml-admins"]), keys.other_rsa, kid="rsa-1")
    refused(token, settings, "signature does not match the provider's key 'rsa-1'")


def test_a_token_naming_an_unknown_kid_is_refused(keys: Keys, settings: OidcSettings) -> None:
    refused(sign(claims(), keys.other_rsa, kid="rsa-9"), settings, "no signing key 'rsa-9'")
    no_kid = jwt.encode(claims(), keys.rsa, algorithm="RS256")
    refused(no_kid, settings, r"names no signing key \(kid\)")


def test_alg_none_is_refused(settings: OidcSettings) -> None:
    token = handmade({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(), secret=None)
    assert looks_like_jwt(token)
    refused(token, settings, "algorithm 'none' is not accepted")


def test_hs256_signed_with_the_public_key_as_secret_is_refused(
    keys: Keys, settings: OidcSettings
) -> None:
    """Key confusion: a verifier that lets the token pick HS256 would take the provider's public
    key (which anyone can download) as the HMAC secret, so anyone could mint admin tokens."""
    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    token = handmade(header, claims(groups=["ml-admins"]), secret=pem)
    refused(token, settings, "algorithm 'HS256' is not accepted")
    # Even configured to accept a family the key is not for, the published key binds its alg.
    both = settings.model_copy(update={"algorithms": ["RS256", "ES256", "PS256"]})
    token = sign(claims(groups=["ml-admins"]), keys.rsa, kid="rsa-1", alg="PS256")
    refused(token, both, "not the one the provider's key 'rsa-1' is for")


def test_a_token_signed_with_an_ec_key_under_the_rsa_kid_is_refused(
    keys: Keys, settings: OidcSettings
) -> None:
    token = sign(claims(), keys.ec, kid="rsa-1", alg="ES256")
    refused(token, settings, "not the one the provider's key 'rsa-1' is for")


def test_a_token_whose_groups_map_to_no_role_is_refused(keys: Keys, settings: OidcSettings) -> None:
    token = sign(claims(groups=["staff", "finance"]), keys.rsa)
    refused(token, settings, r"no mlsteward role for groups \['finance', 'staff'\]")
    refused(sign(claims(groups=None), keys.rsa), settings, r"no mlsteward role for groups \[\]")
    refused(sign(claims(groups={"a": 1}), keys.rsa), settings, "'groups' claim is not a list")


def test_a_username_with_control_characters_is_refused(keys: Keys, settings: OidcSettings) -> None:
    token = sign(claims(preferred_username="alice\nuser:admin"), keys.rsa)
    refused(token, settings, "not a usable name")


@pytest.mark.parametrize("token", ["", "msw_abc_def", "not.a.jwt!", "eyJhbGciOi.x"])
def test_garbage_is_refused_as_malformed(settings: OidcSettings, token: str) -> None:
    with pytest.raises(AuthenticationError, match="not a well-formed JWT"):
        verify_jwt(token, settings)


# --- claims ---------------------------------------------------------------------------------


def test_a_dotted_roles_claim_reads_nested_objects(keys: Keys, jwks_file: Path) -> None:
    """Keycloak lists realm roles under ``realm_access.roles``."""
    keycloak = OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=jwks_file,
        roles_claim="realm_access.roles",
        role_map={"mlsteward-trainer": ["trainer"]},
    )
    payload = claims(realm_access={"roles": ["offline_access", "mlsteward-trainer"]})
    assert verify_jwt(sign(payload, keys.rsa), keycloak).roles == {"trainer"}
    refused(sign(claims(), keys.rsa), keycloak, r"no mlsteward role for realm_access.roles \[\]")


def test_a_claim_name_holding_dots_is_read_whole(keys: Keys, jwks_file: Path) -> None:
    """Auth0 and others namespace custom claims with a URL, dots included."""
    namespaced = OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=jwks_file,
        roles_claim="https://mlsteward.example.com/roles",
        role_map={"approver": ["approver"]},
    )
    payload = claims(**{"https://mlsteward.example.com/roles": "approver"})
    assert verify_jwt(sign(payload, keys.rsa), namespaced).roles == {"approver"}


# --- the key sources ------------------------------------------------------------------------


def test_a_rewritten_jwks_file_is_read_again(
    keys: Keys, settings: OidcSettings, jwks_file: Path
) -> None:
    assert verify_jwt(sign(claims(), keys.rsa), settings).name == "alice"
    rotated = {"keys": [_jwk(keys.other_rsa, "rsa-2", "RS256")]}
    jwks_file.write_text(json.dumps(rotated), encoding="utf-8")
    later = jwks_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(jwks_file, ns=(later, later))
    assert verify_jwt(sign(claims(), keys.other_rsa, kid="rsa-2"), settings).name == "alice"
    refused(sign(claims(), keys.rsa), settings, "no signing key 'rsa-1'")


def test_an_unreadable_jwks_file_refuses_with_the_reason(
    keys: Keys, settings: OidcSettings, jwks_file: Path
) -> None:
    jwks_file.write_text("{not json", encoding="utf-8")
    refused(sign(claims(), keys.rsa), settings, f"keys in {jwks_file} cannot be read")


@dataclass
class JwksServer:
    """A real HTTP server on loopback publishing a key set, counting how often it is asked."""

    jwks: dict[str, Any]
    path: str = field(default_factory=lambda: f"/{uuid.uuid4().hex}/jwks.json")
    hits: int = 0
    url: str = ""


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    served = JwksServer(jwks=keys.jwks())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != served.path:
                self.send_error(404)
                return
            served.hits += 1
            body = json.dumps(served.jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}{served.path}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_keys_come_from_the_jwks_url_and_are_cached(keys: Keys, jwks_server: JwksServer) -> None:
    settings = OidcSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_server.url, role_map=ROLE_MAP
    )
    assert verify_jwt(sign(claims(), keys.rsa), settings).roles == {"approver"}
    token = sign(claims(groups=["ml-admins"]), keys.ec, kid="ec-1", alg="ES256")
    assert verify_jwt(token, settings).roles == {"admin"}
    assert jwks_server.hits == 1
    refused(sign(claims(), keys.other_rsa, kid="rsa-1"), settings, "signature does not match")
    refused(sign(claims(), keys.other_rsa, kid="rsa-9"), settings, "no signing key 'rsa-9'")


def test_an_unreachable_jwks_url_refuses_with_the_reason(
    keys: Keys, jwks_server: JwksServer
) -> None:
    missing = jwks_server.url.replace("jwks.json", "nothing.json")
    settings = OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=missing, role_map=ROLE_MAP)
    refused(sign(claims(), keys.rsa), settings, "could not be fetched.*404")


# --- settings -------------------------------------------------------------------------------


@pytest.fixture
def oidc_env(monkeypatch: pytest.MonkeyPatch, jwks_file: Path) -> pytest.MonkeyPatch:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLSTEWARD_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("MLSTEWARD_OIDC_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("MLSTEWARD_OIDC_JWKS_FILE", str(jwks_file))
    monkeypatch.setenv("MLSTEWARD_OIDC_ROLE_MAP", json.dumps(ROLE_MAP))
    return monkeypatch


def test_no_issuer_means_no_oidc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLSTEWARD_OIDC_AUDIENCE", AUDIENCE)
    assert oidc_settings() is None


def test_settings_come_from_the_environment(
    oidc_env: pytest.MonkeyPatch, jwks_file: Path, keys: Keys
) -> None:
    oidc_env.setenv("MLSTEWARD_OIDC_ROLES_CLAIM", "realm_access.roles")
    oidc_env.setenv("MLSTEWARD_OIDC_TEAMS_CLAIM", "teams")
    oidc_env.setenv("MLSTEWARD_OIDC_USERNAME_CLAIM", "email")
    oidc_env.setenv("MLSTEWARD_OIDC_ALGORITHMS", "RS256, PS256")
    oidc_env.setenv("MLSTEWARD_OIDC_LEEWAY_SECONDS", "5")
    settings = oidc_settings()
    assert settings == OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=jwks_file,
        roles_claim="realm_access.roles",
        role_map=ROLE_MAP,
        teams_claim="teams",
        username_claim="email",
        algorithms=["RS256", "PS256"],
        leeway_seconds=5,
    )
    payload = claims(email="alice@example.com", realm_access={"roles": ["ml-admins"]})
    identity = verify_jwt(sign(payload, keys.rsa), settings)
    assert identity.name == "alice@example.com" and identity.roles == {"admin"}


def test_defaults_when_only_the_required_variables_are_set(oidc_env: pytest.MonkeyPatch) -> None:
    settings = oidc_settings()
    assert settings is not None
    assert settings.roles_claim == "groups" and settings.username_claim == "preferred_username"
    assert settings.teams_claim is None and settings.jwks_url is None
    assert settings.algorithms == ["RS256", "ES256"] and settings.leeway_seconds == 30


@pytest.mark.parametrize(
    ("variable", "value", "match"),
    [
        ("MLSTEWARD_OIDC_ROLE_MAP", "{ml-approvers: approver}", "ROLE_MAP is not valid JSON"),
        ("MLSTEWARD_OIDC_ROLE_MAP", '["approver"]', "ROLE_MAP must be a JSON object"),
        ("MLSTEWARD_OIDC_ROLE_MAP", '{"g": "approver"}', "ROLE_MAP must be a JSON object"),
        ("MLSTEWARD_OIDC_ROLE_MAP", "", "ROLE_MAP is not set"),
        ("MLSTEWARD_OIDC_ROLE_MAP", '{"g": ["root"]}', "ROLE_MAP: 'g' maps to 'root'"),
        ("MLSTEWARD_OIDC_ROLE_MAP", "{}", "ROLE_MAP: "),
        ("MLSTEWARD_OIDC_AUDIENCE", "", "MLSTEWARD_OIDC_AUDIENCE: Field required"),
        ("MLSTEWARD_OIDC_ALGORITHMS", "RS256,HS256", "ALGORITHMS: 'HS256' cannot be accepted"),
        ("MLSTEWARD_OIDC_ALGORITHMS", "none", "ALGORITHMS: 'none' cannot be accepted"),
        ("MLSTEWARD_OIDC_LEEWAY_SECONDS", "lots", "MLSTEWARD_OIDC_LEEWAY_SECONDS: "),
        ("MLSTEWARD_OIDC_JWKS_FILE", "/nowhere/jwks.json", "JWKS_FILE: '/nowhere/jwks.json' is"),
        ("MLSTEWARD_OIDC_JWKS_URL", "https://idp.example.com/certs", "exactly one of jwks_url"),
    ],
)
def test_invalid_settings_name_their_variable(
    oidc_env: pytest.MonkeyPatch, variable: str, value: str, match: str
) -> None:
    oidc_env.setenv(variable, value)
    with pytest.raises(ConfigError, match=match):
        oidc_settings()


def test_a_jwks_url_must_be_https_except_on_loopback(oidc_env: pytest.MonkeyPatch) -> None:
    oidc_env.delenv("MLSTEWARD_OIDC_JWKS_FILE")
    oidc_env.setenv("MLSTEWARD_OIDC_JWKS_URL", "http://idp.example.com/certs")
    with pytest.raises(ConfigError, match=r"MLSTEWARD_OIDC_JWKS_URL: .* is not an https URL"):
        oidc_settings()
    for url in ("https://idp.example.com/certs", "http://127.0.0.1:8080/certs"):
        oidc_env.setenv("MLSTEWARD_OIDC_JWKS_URL", url)
        settings = oidc_settings()
        assert settings is not None and settings.jwks_url == url


def test_looks_like_jwt_tells_provider_tokens_from_ours(keys: Keys) -> None:
    assert looks_like_jwt(sign(claims(), keys.rsa))
    assert not looks_like_jwt("msw_3f9a1c_" + "x" * 40)
    assert not looks_like_jwt("msw_ey.ab.cd")
    assert not looks_like_jwt("a.b.c")  # no JSON header
    assert not looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30")  # two parts
    assert not looks_like_jwt("")
