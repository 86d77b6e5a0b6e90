"""tasks.s3's pure helpers (no AWS)."""

from __future__ import annotations

from tasks.s3 import lifecycle_rule


def rule(**kw):
    return {"ID": "r", "Status": "Enabled", "Expiration": {"Days": 7}, **kw}


def test_lifecycle_rule_that_expires_the_prefix():
    assert lifecycle_rule([], "tmp/") == (None, None)
    assert lifecycle_rule([rule(Filter={"Prefix": "tmp/"})], "tmp/") == ("r", 7)
    assert lifecycle_rule([rule(Filter={"Prefix": ""})], "tmp/") == ("r", 7)  # the whole bucket covers tmp/
    assert lifecycle_rule([rule(Filter={"And": {"Prefix": "tmp/"}})], "tmp/") == ("r", 7)
    assert lifecycle_rule([rule(Prefix="tmp/")], "tmp/") == ("r", 7)  # the legacy top-level Prefix
    assert lifecycle_rule([rule(Filter={"Prefix": "other/"})], "tmp/") == (None, None)
    assert lifecycle_rule([rule(Status="Disabled", Filter={"Prefix": "tmp/"})], "tmp/") == (None, None)
    assert lifecycle_rule([rule(Expiration={"ExpiredObjectDeleteMarker": True}, Filter={"Prefix": "tmp/"})], "tmp/") == (None, None)
    tagged = rule(Filter={"And": {"Prefix": "tmp/", "Tags": [{"Key": "k", "Value": "v"}]}})
    assert lifecycle_rule([tagged, rule(ID="r2", Filter={"Prefix": "tmp/"}, Expiration={"Days": 3})], "tmp/") == ("r2", 3)
