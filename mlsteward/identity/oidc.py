"""Signing in with the organisation's identity provider: verify its JWTs, map a claim to roles.

People keep the accounts, groups and passwords they already have; mlsteward only checks that a
token was signed by the provider's published keys, for this audience, and is current, then
turns the groups (or roles) it lists into mlsteward roles through a role map the operator
writes. A token whose groups map to no role is refused rather than given a default: nobody
gets in by accident of being in the directory.

| variable | meaning |
| --- | --- |
| ``MLSTEWARD_OIDC_ISSUER`` | the provider's issuer (``iss``); unset: OIDC is off |
| ``MLSTEWARD_OIDC_AUDIENCE`` | the audience (``aud``) tokens must be issued for |
| ``MLSTEWARD_OIDC_JWKS_URL`` | the provider's JWKS endpoint (https; http only on loopback) |
| ``MLSTEWARD_OIDC_JWKS_FILE`` | or: a JWKS file (air-gapped installs) |
| ``MLSTEWARD_OIDC_ROLE_MAP`` | JSON: claim value -> list of mlsteward roles |
| ``MLSTEWARD_OIDC_ROLES_CLAIM`` | the claim listing groups or roles (``groups``; dotted path) |
| ``MLSTEWARD_OIDC_TEAMS_CLAIM`` | the claim listing teams, for per-model grants (none) |
| ``MLSTEWARD_OIDC_USERNAME_CLAIM`` | the claim naming the person (``preferred_username``) |
| ``MLSTEWARD_OIDC_ALGORITHMS`` | comma list of accepted signature algorithms (RS256,ES256) |
| ``MLSTEWARD_OIDC_LEEWAY_SECONDS`` | clock skew allowed on ``exp``, ``nbf``, ``iat`` (30) |

Messages never contain the token: they end up in logs and HTTP answers.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlsteward.errors import AuthenticationError, ConfigError

ROLES = ("viewer", "trainer", "approver", "admin", "ci")
"""The mlsteward role names a role map may grant (the values of ``identity.roles.Role``)."""

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Algorithms verified with a public key. HS* is never accepted: its key is a shared secret, and
a verifier that takes the provider's public key as an HMAC secret accepts tokens anyone forges."""

ENV = {
    "issuer": "MLSTEWARD_OIDC_ISSUER",
    "audience": "MLSTEWARD_OIDC_AUDIENCE",
    "jwks_url": "MLSTEWARD_OIDC_JWKS_URL",
    "jwks_file": "MLSTEWARD_OIDC_JWKS_FILE",
    "roles_claim": "MLSTEWARD_OIDC_ROLES_CLAIM",
    "role_map": "MLSTEWARD_OIDC_ROLE_MAP",
    "teams_claim": "MLSTEWARD_OIDC_TEAMS_CLAIM",
    "username_claim": "MLSTEWARD_OIDC_USERNAME_CLAIM",
    "algorithms": "MLSTEWARD_OIDC_ALGORITHMS",
    "leeway_seconds": "MLSTEWARD_OIDC_LEEWAY_SECONDS",
}
"""Each setting's environment variable, so an error names the variable the operator set."""

JWKS_TIMEOUT_SECONDS = 10
JWKS_CACHE_SECONDS = 300
_JWT_SHAPE = re.compile(r"^ey[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 256
REFUSED = "OIDC token refused"


class OidcSettings(BaseModel):
    """How to trust one identity provider; ``oidc_settings()`` reads it from the environment,
    tests and embedding code pass values directly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: Path | None = None
    roles_claim: str = Field(default="groups", min_length=1)
    role_map: dict[str, list[str]] = Field(min_length=1)
    teams_claim: str | None = None
    username_claim: str = Field(default="preferred_username", min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    leeway_seconds: int = Field(default=30, ge=0, le=600)

    @field_validator("role_map")
    @classmethod
    def _known_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for group, roles in value.items():
            unknown = sorted(set(roles) - set(ROLES))
            if unknown:
                raise ValueError(
                    f"{group!r} maps to {', '.join(map(repr, unknown))}, which is not an "
                    f"mlsteward role (roles: {', '.join(ROLES)})"
                )
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(
                f"{', '.join(map(repr, refused))} cannot be accepted: only public-key algorithms "
                f"verify a provider's tokens ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        return value

    @field_validator("jwks_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlparse(value)
        if url.scheme == "https" and url.hostname:
            return value
        if url.scheme == "http" and url.hostname and _loopback(url.hostname):
            return value
        raise ValueError(
            f"{value!r} is not an https URL (plain http only on localhost: anyone on the path "
            "could swap the keys)"
        )

    @field_validator("jwks_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> OidcSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("set exactly one of jwks_url and jwks_file")
        return self


@dataclass(frozen=True)
class OidcIdentity:
    """Who a verified token says the bearer is; the identity room turns it into a principal."""

    name: str
    roles: frozenset[str]
    teams: frozenset[str]
    subject: str
    expires_at: int


def oidc_settings() -> OidcSettings | None:
    """The identity provider configured in the environment, or None when
    ``MLSTEWARD_OIDC_ISSUER`` is unset (then only mlsteward's own tokens sign in).

    Raises:
        ConfigError: a setting is missing or does not parse; the message names its variable.
    """
    issuer = os.environ.get(ENV["issuer"], "").strip()
    if not issuer:
        return None
    values: dict[str, Any] = {"issuer": issuer}
    for field in (
        "audience",
        "jwks_url",
        "jwks_file",
        "roles_claim",
        "teams_claim",
        "username_claim",
        "leeway_seconds",
    ):
        text = os.environ.get(ENV[field], "").strip()
        if text:
            values[field] = text
    algorithms = os.environ.get(ENV["algorithms"], "").strip()
    if algorithms:
        values["algorithms"] = [a.strip() for a in algorithms.split(",") if a.strip()]
    values["role_map"] = _role_map_from_env()
    try:
        return OidcSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_name_variables(exc)) from None


def _role_map_from_env() -> dict[str, Any]:
    name = ENV["role_map"]
    text = os.environ.get(name, "").strip()
    if not text:
        raise ConfigError(
            f"{name} is not set: with {ENV['issuer']} set, a role map from claim values to "
            f'mlsteward roles is needed, e.g. {{"ml-approvers": ["approver"]}}'
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict) or not all(
        isinstance(roles, list) and all(isinstance(r, str) for r in roles)
        for roles in value.values()
    ):
        raise ConfigError(
            f"{name} must be a JSON object from claim values to lists of roles, "
            f'e.g. {{"ml-approvers": ["approver"]}}'
        )
    return value


def _name_variables(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = ENV.get(field, "MLSTEWARD_OIDC_JWKS_URL / MLSTEWARD_OIDC_JWKS_FILE")
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "invalid OIDC setting: " + "; ".join(problems)


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer token is shaped like a JWT (three base64url parts, a JSON header) rather
    than one of mlsteward's own ``msw_`` tokens: it decides which check a token gets."""
    return not token.startswith("msw_") and _JWT_SHAPE.match(token) is not None


def verify_jwt(token: str, settings: OidcSettings) -> OidcIdentity:
    """The identity a provider's token proves: signed by a key of the provider's JWKS (chosen by
    ``kid``, with an algorithm the settings accept), issued by ``issuer`` for ``audience``, not
    expired and already valid, and naming at least one mapped role.

    Raises:
        AuthenticationError: the token proves nobody; the message says why, never the token.
    """
    header = _header(token)
    algorithm = header.get("alg")
    if algorithm not in settings.algorithms:
        raise AuthenticationError(
            f"{REFUSED}: algorithm {_short(algorithm)} is not accepted "
            f"(accepted: {', '.join(settings.algorithms)})"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationError(f"{REFUSED}: its header names no signing key (kid)")
    key = _signing_key(kid, settings)
    claims = _verified_claims(token, key, algorithm, settings)
    return _identity(claims, settings)


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError(f"{REFUSED}: it is not a well-formed JWT") from None
    return header


def _signing_key(kid: str, settings: OidcSettings) -> jwt.PyJWK:
    """The provider's public key named ``kid``. A URL's key set is fetched once and cached (and
    fetched again for an unknown ``kid``, at most every 30 s: keys rotate); a file is read again
    only when it changes."""
    if settings.jwks_url is not None:
        source = settings.jwks_url
        try:
            return _jwks_client(settings.jwks_url).get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthenticationError(
                f"{REFUSED}: the identity provider's keys at {source} could not be fetched "
                f"({_reason(exc)})"
            ) from None
        except jwt.PyJWKClientError:
            raise AuthenticationError(
                f"{REFUSED}: the identity provider's keys at {source} have no signing key "
                f"{_short(kid)}"
            ) from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(
                f"{REFUSED}: the identity provider's keys at {source} are not a usable JWKS "
                f"({_reason(exc)})"
            ) from None
    assert settings.jwks_file is not None  # the settings hold exactly one source
    path = settings.jwks_file
    try:
        stat = path.stat()
        keys = _jwks_file(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise AuthenticationError(
            f"{REFUSED}: the identity provider's keys in {path} cannot be read ({_reason(exc)})"
        ) from None
    for key in keys:
        if key.key_id == kid and key.public_key_use in ("sig", None):
            return key
    raise AuthenticationError(f"{REFUSED}: the keys in {path} have no signing key {_short(kid)}")


@functools.lru_cache(maxsize=8)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    """One client per URL for the life of the process, so its key-set cache is shared."""
    return jwt.PyJWKClient(url, lifespan=JWKS_CACHE_SECONDS, timeout=JWKS_TIMEOUT_SECONDS)


@functools.lru_cache(maxsize=8)
def _jwks_file(path: str, inode: int, mtime_ns: int, size: int) -> jwt.PyJWKSet:
    """A JWKS file's keys, cached by its inode, modification time and size (a rotated file is
    read again on the next token)."""
    return jwt.PyJWKSet.from_json(Path(path).read_text(encoding="utf-8"))


def _verified_claims(
    token: str, key: jwt.PyJWK, algorithm: str, settings: OidcSettings
) -> dict[str, Any]:
    """The claims, once the signature, issuer, audience and times check out. The key's own
    algorithm must be the token's (PyJWT refuses a PyJWK used with another), so a key published
    for RS256 never verifies anything else."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=settings.algorithms,
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud", "sub"], "enforce_minimum_key_length": True},
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError(f"{REFUSED}: it has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthenticationError(
            f"{REFUSED}: it is not valid yet (its nbf or iat is in the future)"
        ) from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError(
            f"{REFUSED}: it was issued by {_claim(token, 'iss')}, not {settings.issuer!r}"
        ) from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError(
            f"{REFUSED}: it is for audience {_claim(token, 'aud')}, not {settings.audience!r}"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthenticationError(f"{REFUSED}: it has no {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError(
            f"{REFUSED}: its signature does not match the provider's key {_short(key.key_id)}"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise AuthenticationError(
            f"{REFUSED}: algorithm {algorithm!r} is not the one the provider's key "
            f"{_short(key.key_id)} is for ({key.algorithm_name})"
        ) from None
    except jwt.InvalidKeyError as exc:
        raise AuthenticationError(
            f"{REFUSED}: the provider's key {_short(key.key_id)} cannot verify it ({_reason(exc)})"
        ) from None
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"{REFUSED}: {_reason(exc)}") from None


def _identity(claims: dict[str, Any], settings: OidcSettings) -> OidcIdentity:
    subject = claims["sub"]
    name = _claim_value(claims, settings.username_claim)
    if name is None:
        name = subject
    if not isinstance(name, str) or not name.strip():
        raise AuthenticationError(f"{REFUSED}: its {settings.username_claim!r} claim is no name")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise AuthenticationError(
            f"{REFUSED}: its {settings.username_claim!r} claim is not a usable name "
            f"(control characters or over {MAX_NAME_LENGTH} characters)"
        )
    values = _claim_strings(claims, settings.roles_claim)
    roles = frozenset(role for value in values for role in settings.role_map.get(value, ()))
    if not roles:
        raise AuthenticationError(
            f"{REFUSED}: no mlsteward role for {settings.roles_claim} {sorted(values)}"
        )
    teams = _claim_strings(claims, settings.teams_claim) if settings.teams_claim else set()
    return OidcIdentity(
        name=name,
        roles=roles,
        teams=frozenset(teams),
        subject=subject,
        expires_at=int(claims["exp"]),
    )


def _claim_value(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (``realm_access.roles``). A name
    that is itself a claim wins: namespaced claims such as ``https://example.com/roles`` hold
    dots."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _claim_strings(claims: dict[str, Any], path: str) -> set[str]:
    """A claim listing names: a list of strings, or one string; absent is empty."""
    value = _claim_value(claims, path)
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return set(value)
    raise AuthenticationError(f"{REFUSED}: its {path!r} claim is not a list of names")


def _claim(token: str, name: str) -> str:
    """A claim of a token whose signature already checked out, shortened, for a message."""
    try:
        value = jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.PyJWTError:
        return "?"
    return _short(value)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    return _short(str(exc), 200).strip("'\"")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
