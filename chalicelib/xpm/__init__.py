"""The XPM client (XML in/out), JSON mapping, rate governor, search, create, push jobs, sync."""
