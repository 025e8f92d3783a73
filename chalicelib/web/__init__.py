"""Unsigned HTTP surface: health, the OpenAPI document, hosted pages."""
