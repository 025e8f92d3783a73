from __future__ import annotations

import pytest

from chalicelib.config import DEFAULT_SCOPES, build_settings
from chalicelib.errors import BrokerError, ConfigurationError


def test_local_stage_is_implied_by_a_local_aws_endpoint() -> None:
    settings = build_settings({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
    assert settings.stage == "local"
    assert settings.table_name("grants") == "xpmb-local-grants"
    assert settings.kms_key_id == "alias/xpmb-local"
    assert settings.redirect_uri == "http://127.0.0.1:8000/oauth/callback"
    assert settings.xero_identity_url == "https://identity.xero.com"
    assert settings.xpm_base_url == "https://api.xero.com/practicemanager/3.0/"
    assert settings.xero_scopes == DEFAULT_SCOPES
    assert settings.xero_pkce is True


def test_aws_requires_a_stage_and_a_key() -> None:
    with pytest.raises(ConfigurationError, match="XPMB_STAGE"):
        build_settings({})
    with pytest.raises(ConfigurationError, match="XPMB_KMS_KEY_ID"):
        build_settings({"XPMB_STAGE": "prod"})
    with pytest.raises(ConfigurationError, match="https"):
        build_settings({"XPMB_STAGE": "prod", "XPMB_KMS_KEY_ID": "alias/k"})
    with pytest.raises(ConfigurationError, match="https"):
        build_settings(
            {"XPMB_STAGE": "prod", "XPMB_KMS_KEY_ID": "alias/k", "XPMB_PUBLIC_URL": "http://broker.example"}
        )
    settings = build_settings(
        {"XPMB_STAGE": "prod", "XPMB_KMS_KEY_ID": "alias/k", "XPMB_PUBLIC_URL": "https://broker.example"}
    )
    assert settings.table_prefix == "xpmb-prod-"
    assert settings.aws_endpoint_url is None


def test_unknown_stage_and_api_version_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="one of"):
        build_settings(
            {"XPMB_STAGE": "staging", "XPMB_KMS_KEY_ID": "k", "XPMB_PUBLIC_URL": "https://b.example"}
        )
    with pytest.raises(ConfigurationError, match=r"3\.0 or 3\.1"):
        build_settings({"AWS_ENDPOINT_URL": "http://x", "XPMB_XPM_API_VERSION": "2.0"})


def test_explicit_argument_beats_environment_beats_default() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
        "XPMB_PUBLIC_URL": "https://broker.example/",
        "XPMB_XERO_PKCE": "false",
        "XPMB_XPM_API_VERSION": "3.1",
    }
    settings = build_settings(env)
    assert settings.public_url == "https://broker.example"
    assert settings.xero_pkce is False
    assert settings.xpm_base_url.endswith("/practicemanager/3.1/")
    assert build_settings(env, XPMB_PUBLIC_URL="https://other.example").public_url == "https://other.example"


def test_configuration_error_renders_as_problem_json() -> None:
    error = ConfigurationError("XPMB_KMS_KEY_ID is required on AWS")
    assert isinstance(error, BrokerError)
    status, headers, body = error.render("req-12345678")
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json"
    assert '"code": "configuration_error"' in body
    assert '"request_id": "req-12345678"' in body
