"""tasks/iam_roles.py's pure helpers: policy documents as statements, and what they cover."""

from __future__ import annotations

import json
from urllib.parse import quote

from tasks.iam_roles import RolePolicies, statements_of


def test_policy_statements_cover_wildcards_and_denies():
    st = statements_of("p", json.dumps({"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:*:*:table/A*"},
                                                      {"Effect": "Deny", "Action": ["dynamodb:DeleteItem"], "Resource": "*"}]}))
    assert st[0].covers("dynamodb:Query", "arn:aws:dynamodb:r:1:table/Abc") and not st[0].covers("dynamodb:Query", "arn:aws:dynamodb:r:1:table/B")
    assert st[0].covers("DynamoDB:query", None)  # actions are case-insensitive; no resource: the action alone
    assert st[1].covers("dynamodb:DeleteItem", "x") and not st[1].covers("s3:GetObject", "x")
    rp = RolePolicies(role="r", statements=st)
    allow, deny = rp.allows("dynamodb:DeleteItem", "arn:aws:dynamodb:r:1:table/Abc")
    assert [s.effect for s in allow] == ["Allow"] and [s.effect for s in deny] == ["Deny"]


def test_documents_as_iam_returns_them():
    # GetRolePolicy answers a URL-encoded string; a single statement may be an object; NotAction, NotResource, conditions
    doc = quote(json.dumps({"Statement": {"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::x", "Condition": {"Bool": {}}}}))
    (st,) = statements_of("inline", doc)
    assert st.not_actions == ["iam:*"] and st.resources == [] and st.conditional
    assert st.covers("s3:GetObject", None) and not st.covers("iam:PassRole", None)
    assert st.text() == "Allow all but iam:* on * (with conditions) [inline]"
    (st,) = statements_of("managed", {"Statement": [{"Action": ["s3:GetObject", "s3:PutObject"]}]})
    assert st.effect == "Allow" and st.resources == ["*"] and st.text() == "Allow s3:GetObject, s3:PutObject on * [managed]"
