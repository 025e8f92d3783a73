"""Plain-words explanations of connect failures, for the firm's staff (contract.md §5 codes)."""

from __future__ import annotations

EXPLANATIONS = {
    "access_denied": (
        "Access was not allowed",
        "You chose Cancel on Xero's consent screen, so nothing was shared. To connect, start again and "
        "choose Allow access.",
    ),
    "no_practice_manager_access": (
        "No Xero Practice Manager practice was shared",
        "Your Xero sign-in worked, but Xero did not share any Practice Manager practice. This happens "
        "when your XPM user does not have the \u201cConnect third-party add-ons\u201d permission. Ask an "
        "XPM administrator to open XPM \u203a Settings \u203a Staff \u203a your name \u203a Permissions "
        "and turn on \u201cConnect third-party add-ons\u201d (older XPM accounts: \u201cAuthorise 3rd "
        "Party Full Access\u201d under API Access Privileges), then connect again.",
    ),
    "practice_mismatch": (
        "A different practice was chosen",
        "This account is connected to another XPM practice. Sign in again and choose the same "
        "practice, or ask the application's support to allow connecting a different practice.",
    ),
    "upstream_error": (
        "Xero did not complete the connection",
        "Something went wrong between Xero and us. Nothing was changed. Please try again in a few minutes.",
    ),
}


def explain(code: str | None) -> tuple[str, str] | None:
    return EXPLANATIONS.get(code or "")
