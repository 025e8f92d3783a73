"""A local stand-in for Xero identity + the XPM API (never deployed).

Matches the [V] facts of ../shared/xero-reference.md so that a broker proven against it works
against Xero; adds a control API under /_sandbox/ for tests (faults, clock, call counts).
"""
