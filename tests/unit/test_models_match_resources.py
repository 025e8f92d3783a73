"""Every PynamoDB model uses a table from the one definition source, with the same keys and indexes."""

from __future__ import annotations

import pytest

import chalicelib.audit
import chalicelib.oauth.models
import chalicelib.sync.models
import chalicelib.tenants.models
import chalicelib.webhooks.models
import chalicelib.xpm.governor
import chalicelib.xpm.push_models  # noqa: F401 - importing registers the models
from chalicelib.resources import table_def
from chalicelib.storage import registered_models


def test_models_agree_with_table_definitions() -> None:
    models = registered_models()
    assert len(models) >= 10
    for model in models:
        table = table_def(model.logical_table)
        attributes = model.get_attributes()
        hash_keys = [a.attr_name for a in attributes.values() if a.is_hash_key]
        range_keys = [a.attr_name for a in attributes.values() if a.is_range_key]
        assert hash_keys == [table.hash_key.name], model.__name__
        assert range_keys == ([table.range_key.name] if table.range_key else []), model.__name__
        indexes = {i.Meta.index_name for i in model._indexes.values()}
        assert indexes == {i.name for i in table.indexes}, model.__name__
        if table.ttl_attribute:
            assert table.ttl_attribute in attributes, model.__name__


def test_a_model_imported_after_binding_binds_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route modules import models lazily: a late model must not write to an "unbound" table."""
    from pynamodb.attributes import UnicodeAttribute

    from chalicelib.config import get_settings, reset_settings
    from chalicelib.storage import BrokerModel, bind, registered_models

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    reset_settings()
    bind(get_settings())

    class LateModel(BrokerModel):
        logical_table = "audit"
        vendor_id = UnicodeAttribute(hash_key=True)
        audit_id = UnicodeAttribute(range_key=True)

    try:
        connection = LateModel._get_connection()
        assert connection.table_name == get_settings().table_name("audit")
    finally:
        registered_models_list = registered_models()
        assert LateModel in registered_models_list
        from chalicelib import storage

        storage._models.remove(LateModel)
        reset_settings()
