"""The one application error XPM reports inside its XML envelope (xero-reference.md §3.2)."""

from __future__ import annotations


class XpmError(Exception):
    """Rendered as ``<Status>ERROR</Status><ErrorDescription>…`` with ``config.xpm_error_status``."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description
