"""CloudFormation for the broker's own resources, generated from chalicelib.resources."""
