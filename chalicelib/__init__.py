"""xpm-broker: the code that runs in AWS Lambda (no Chalice imports outside routes modules)."""
