"""The XPM change feed: scheduled and on-demand syncs, fingerprints, client events (issue 6)."""
