"""id_token validation (OIDC Core §3.1.3.7; checklist A7) with joserfc.

``alg`` is pinned to RS256 (what Xero signs with, xero-reference §1.1); ``iss`` must equal the
issuer exactly; ``aud`` must contain our client id (and ``azp`` must name us when there are
several audiences); ``exp`` and ``iat`` are checked with a 60 s skew; ``nonce`` must equal the
one stored with the transaction. An unknown ``kid`` triggers one JWKS refetch.
"""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from chalicelib.oauth.discovery import IdentityProvider
from chalicelib.oauth.errors import IdTokenInvalid

ALGORITHMS = ["RS256"]
LEEWAY = 60
MAX_AGE = 600


def validate_id_token(
    raw: str, *, provider: IdentityProvider, client_id: str, nonce: str, now: float | None = None
) -> dict[str, Any]:
    claims = _verified_claims(raw, provider)
    current = time.time() if now is None else now
    if claims.get("iss") != provider.issuer:
        raise IdTokenInvalid("iss mismatch")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise IdTokenInvalid("aud does not contain our client id")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenInvalid("azp missing or not our client id")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + LEEWAY <= current:
        raise IdTokenInvalid("expired or no exp")
    if not isinstance(iat, int | float) or iat > current + LEEWAY or iat < current - MAX_AGE:
        raise IdTokenInvalid("iat out of range")
    if not nonce or claims.get("nonce") != nonce:
        raise IdTokenInvalid("nonce mismatch")
    return claims


def _verified_claims(raw: str, provider: IdentityProvider) -> dict[str, Any]:
    for attempt in (0, 1):
        try:
            token = jwt.decode(raw, provider.key_set(refresh=attempt == 1), algorithms=ALGORITHMS)
            return dict(token.claims)
        except JoseError as exc:
            unknown_kid = "kid" in str(exc).lower() or type(exc).__name__ in {"InvalidKeyIdError"}
            if attempt == 0 and unknown_kid:
                continue  # key rotation at Xero: refetch the JWKS once
            raise IdTokenInvalid(f"signature: {type(exc).__name__}") from exc
        except (ValueError, TypeError) as exc:
            raise IdTokenInvalid("malformed token") from exc
    raise IdTokenInvalid("unknown kid")


def unverified_claims(raw: str) -> dict[str, Any]:
    """Claims of a JWT received directly from Xero's token endpoint over TLS (the access token),
    read for ``authentication_event_id`` and ``xero_userid`` (xero-reference §1.8, §1.9)."""
    import base64
    import json

    try:
        payload = raw.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise IdTokenInvalid("access token is not a JWT") from exc
    if not isinstance(decoded, dict):
        raise IdTokenInvalid("access token claims are not an object")
    return decoded
