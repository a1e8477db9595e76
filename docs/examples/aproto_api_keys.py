"""API keys in an SQLite file; reissue revokes the old key."""

import tempfile
from pathlib import Path

from trionet.aproto import APIKeyFactory, Filters, SQLiteKeyStorage

with tempfile.TemporaryDirectory() as tmp, SQLiteKeyStorage(Path(tmp) / "keys.db") as storage:
    keys = APIKeyFactory(storage=storage)
    key = keys.issue({"user": "ann"})
    assert keys.get(key) == {"user": "ann"}
    new_key = keys.reissue(key)  # the old key stops working
    assert key not in keys and new_key in keys
    only_customers = Filters.APIFactory(keys, "api_key")
