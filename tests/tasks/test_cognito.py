"""Cognito helpers without AWS: a user's pseudonym, the inventory's pool."""

from __future__ import annotations

from opsbook.inventory import load_system
from opsbook.pii import mask_log
from tasks.cognito import pool_of, subject_id


def test_pseudonyms_hide_usernames_and_the_masker_hides_emails():
    sid = subject_id("todo-app-users", "pool-1", "suspicious-user@example.com")
    assert sid.startswith("todo-app-users/s***#") and "suspicious" not in sid and "example.com" not in sid
    assert sid == subject_id("todo-app-users", "pool-1", "suspicious-user@example.com") != subject_id("p", "pool-2", "suspicious-user@example.com")
    assert mask_log("user suspicious-user@example.com") == "user [EMAIL]"  # in a log excerpt


def test_the_inventory_names_a_pool_or_none():
    assert pool_of(load_system("hr-resource-optimization")) == (None, None)
    assert pool_of(load_system("leh"))[1] == "leh-users"
