from __future__ import annotations

import pytest

from chalicelib.config import reset_settings
from chalicelib.oauth.connect import clear_cookie, cookie_name, with_query


@pytest.fixture
def public_url(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    def use(url: str) -> None:
        monkeypatch.setenv("XPMB_PUBLIC_URL", url)
        reset_settings()

    yield use
    reset_settings()


def test_https_uses_a_host_prefixed_secure_cookie(public_url: object) -> None:
    public_url("https://broker.example")  # type: ignore[operator]
    assert cookie_name() == "__Host-xpmb_oauth"
    cookie = clear_cookie()
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=0"):
        assert attribute in cookie
    assert "Domain" not in cookie  # __Host- forbids it


def test_local_http_uses_a_plain_lax_cookie(public_url: object) -> None:
    public_url("http://127.0.0.1:8000")  # type: ignore[operator]
    assert cookie_name() == "xpmb_oauth"
    cookie = clear_cookie()
    assert "Secure" not in cookie
    assert "SameSite=Lax" in cookie
    assert "HttpOnly" in cookie


def test_results_are_appended_to_the_registered_url_keeping_its_query() -> None:
    assert (
        with_query("https://v.example/done", {"status": "connected"})
        == "https://v.example/done?status=connected"
    )
    assert with_query("https://v.example/done?a=1", {"b": "2 3"}) == "https://v.example/done?a=1&b=2+3"
