"""Xero identity: discovery, connect sessions, callback, id_token, grants, refresh, revoke."""
