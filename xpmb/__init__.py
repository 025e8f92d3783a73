"""Operator and developer tooling (the ``xpm-broker`` CLI, local stack); never deployed to Lambda."""
