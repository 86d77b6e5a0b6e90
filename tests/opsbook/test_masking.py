"""opsbook/masking.py (secrets, everywhere) and opsbook/pii.py's mask_log (secrets and personal data, in log excerpts):
the 14 secrets of issue 13 masked, and what a reader needs left as it is."""

from __future__ import annotations

import random
import re
import time
import uuid

import pytest
from detect_secrets.plugins.keyword import DENYLIST

from opsbook.inventory import load_system
from opsbook.masking import mask, mask_obj
from opsbook.pii import mask_log

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM_BODY = ["Qkqv6K/N2eMvpjuqJd45pLsvIRKI2Da+SwduINavm/8D/kbVJRXfy8/jzkPTc75v",
            "8yPL4EFb2Tt85cGMkPttq13jbqNQpx5Y0ZjMovxDsHKNnL/8InCtunGJLUszLYVb",
            "QF91Q5tHZeMhk32MPJA84jGzXSESbqah9HZjALhs7t4LOSR/zrLWcaNAKLtpvN5A"]
PEM = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"])
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

# (a log line with one secret, the secret): the first five leaked before (issue 13), the other nine were masked
PLANTED = [
    (f"[ERROR] boto3 init failed for key {AWS_SECRET} in us-east-1", AWS_SECRET),
    ("GET /internal/export 401 Authorization: Basic b3BzYm9vay1zdmM6UzNjcjN0LVBhNTU= rejected", "b3BzYm9vay1zdmM6UzNjcjN0LVBhNTU="),
    ("git clone with ghp_4WZwmT2OxHTQi5TMpUFn3NcLSLcwLUKvlsmk failed: 403", "ghp_4WZwmT2OxHTQi5TMpUFn3NcLSLcwLUKvlsmk"),
    ("slack post with xoxb-369607601610-6057719516780-BnPwBcuzDfeWcM6aPXtmCEJy channel_not_found",
     "xoxb-369607601610-6057719516780-BnPwBcuzDfeWcM6aPXtmCEJy"),
    (f"ERROR could not parse key:\n{PEM}\nwhile loading the signer", PEM_BODY[1]),
    ("ERROR sts call with AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE"),
    (f"ERROR invalid session {JWT} for /api/resumes", JWT.rsplit(".", 1)[1]),
    ("upstream 401: Authorization: Bearer 7f3a9c2e5b1d4f8a0c6e2b9d1f4a7c3e expired", "7f3a9c2e5b1d4f8a0c6e2b9d1f4a7c3e"),
    ("openai client init sk-proj-4fG7hJ2kL9mN3pQ6rS8tV1wX failed", "sk-proj-4fG7hJ2kL9mN3pQ6rS8tV1wX"),
    ("ERROR db login user=hr_app password=hunter2-Prod! refused", "hunter2-Prod!"),
    ("ERROR refresh failed token: 9c1e4b7a2f0d refresh in 5 min", "9c1e4b7a2f0d"),
    ("env aws_secret_access_key=oCvi2e4RlaqNp0MIj8UeaOQt/8CALeWusH2BH2ET loaded", "oCvi2e4RlaqNp0MIj8UeaOQt/8CALeWusH2BH2ET"),
    ("maps call api_key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY over quota", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("notify https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX timed out", "XXXXXXXXXXXXXXXXXXXXXXXX"),
]


@pytest.mark.parametrize("line, secret", PLANTED)
def test_each_planted_secret_is_masked_by_both_and_the_line_stays_readable(line, secret):
    for out in (mask(line), mask_log(line)):
        assert secret not in out, out
        assert out.split()[0] == line.split()[0] and out.split()[-1] == line.split()[-1], out  # only the secret went
        assert mask(out) == out and mask_log(out) == out  # masking masked text changes nothing


def test_a_pem_block_goes_whole_and_a_body_line_alone_still_goes():
    out = mask(f"ERROR could not parse key:\n{PEM}\nwhile loading the signer")
    assert out == "ERROR could not parse key:\n[PRIVATE-KEY]\nwhile loading the signer"
    assert mask(f"key -----BEGIN PRIVATE KEY-----\n{PEM_BODY[0]}") == "key [PRIVATE-KEY]"  # cut before its END line
    assert mask(PEM_BODY[2]) == "[SECRET]"  # one line of a key, logged as its own event


def test_the_labels_say_what_was_there():
    assert mask("id AKIAIOSFODNN7EXAMPLE key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == "id [AWS-ACCESS-KEY] key [SECRET]"
    assert mask(f"jwt {JWT}.") == "jwt [JSON-WEB-TOKEN]."
    assert mask("https://opsbook:pa55w0rd@db.internal:5432/hr") == "https://opsbook:[BASIC-AUTH-CREDENTIALS]@db.internal:5432/hr"
    assert mask("password=hunter2 token: abc123 Bearer 9f8a7b6c5d4e") == "password=[REDACTED] token: [REDACTED] Bearer [TOKEN]"


def test_every_quoted_secret_of_a_json_line_is_masked():
    line = '{"user": "kim", "password": "s3cret-One", "client_secret": "s3cret-Two", "api_key": "s3cret-Three", "x-api-key": "s3cret-Four"}'
    out = mask(line)
    assert "s3cret" not in out and '"user": "kim"' in out, out


@pytest.mark.parametrize("keyword", sorted({w.replace("_?", sep) for w in DENYLIST for sep in ("", "_")}))
def test_every_keyword_of_the_plugin_is_seen(keyword):
    assert mask(f'config {keyword}: "Zq8-w7Xv"') == f'config {keyword}: "[REDACTED]"'


# --- what a reader needs is left as it is ------------------------------------------------------------

KEEP = [
    "sg-0a1b2c3d4e5f67890 allows 0.0.0.0/0 on port 22; vpc 10.0.0.0/8, subnet 10.0.12.0/24, ::/0, 2406:da14::/32",
    "runtime python3.12 version 1.2.3.4 (v2.0.1.7, agent/1.34.5.6, lib-1.2.3.4) nodejs18.x",
    f"ts={int(time.time() * 1000)} at 1767225600000 epoch 1767225600 took 1704067200000 ms",
    "order 4111 1111 1111 1112 and id 1234567890123456 shipped",  # not Luhn-valid: not a card
    "run http://127.0.0.1:4200/runs/flow-run/85bc1c6f-7c93-4380-9a6a-27c175310445 finished",
    "arn:aws:sns:ap-northeast-2:123456789012:hr-resource-optimization-alerts-production-topic",
    "arn:aws:ecs:ap-northeast-2:123456789012:task/t-developer-cluster-production/0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "deploy 9fceb02d0ae598e95dc970b74767f19372d61af8 image sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2",
    "X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793; S3 Request ID: 4442587FB7D0A2F9",
    "stack hr-resource-optimization-prod-ResumeParserFunction-1X2Y3Z4W5V6U UPDATE_COMPLETE",
    "log stream 2026/01/21/[$LATEST]0123456789abcdef0123456789abcdef /aws/lambda/ResumeParser",
    "wrote /aws/lambda/ResumeParserV2Function2026/Logs and s3://Bucket2026/Path/To/ObjectKeyName2026Final",
    "Bearer authentication failed; Basic authentication failed; max tokens: 4096; nextToken=AbC123",
    "password=*** and token=[REDACTED] secret: <none> api_key=${API_KEY}",
    "connect to 10.0.3.12:5432 timed out; health check 127.0.0.1:8080 ok; link 169.254.169.254",
    "[ERROR]\t2026-01-21T10:00:00.123Z\t8f14e45f-ceea-467f-a0e6-5a9a2f2a3b1c\tTask timed out after 30.03 seconds",
]


@pytest.mark.parametrize("line", KEEP, ids=[f"keep-{i}" for i in range(len(KEEP))])  # one line holds "now": ids stay fixed
def test_ordinary_text_is_left_alone_by_both(line):
    assert mask(line) == line
    assert mask_log(line) == line


def test_uuids_are_left_alone():
    """Lower case (AWS request ids, Prefect run ids) and upper case (Windows, some SDKs): 2000 of each, reproducible."""
    rng = random.Random(13)
    for _ in range(2000):
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for v in (u, u.upper()):
            assert mask(v) == v and mask_log(v) == v


def test_personal_data_is_masked_in_log_excerpts_only():
    line = ("user kim.minsu@example.com (010-1234-5678, +82 10 9876 5432) rrn 900101-1234568 card 4111-1111-1111-1111 "
            "from 81.2.69.142 via 10.0.0.5 and 2406:da14:abcd:1234:5678:9abc:def0:1234")
    assert mask(line) == line  # a finding, a plan, a notification: personal data is not a secret
    assert mask_log(line) == ("user [EMAIL] ([PHONE], [PHONE]) rrn [RRN] card [CARD] from [IP] via 10.0.0.5 and [IP]")


def test_the_inventorys_escalation_contact_is_never_masked():
    who = load_system("hr-resource-optimization").escalation[0].who
    assert "operations@example.com" in who and mask(who) == who
    assert mask_obj({"escalation": {"who": who}, "n": 3}) == {"escalation": {"who": who}, "n": 3}


def test_nested_objects():
    assert mask_obj({"a": ["x@y.io", {"b": "password=1"}], "n": 3, "t": ("AKIAIOSFODNN7EXAMPLE",)}) == \
        {"a": ["x@y.io", {"b": "password=[REDACTED]"}], "n": 3, "t": ["[AWS-ACCESS-KEY]"]}


def test_masking_never_verifies_a_secret_over_the_network(monkeypatch):
    import requests

    def no_network(*_, **__):
        raise AssertionError("masking made an HTTP request")

    monkeypatch.setattr(requests.Session, "request", no_network)
    for line, secret in PLANTED:
        assert secret not in mask(line)


def test_masked_labels_are_not_taken_for_data():
    masked = mask_log("\n".join(line for line, _ in PLANTED) + "\nuser a@b.io 81.2.69.160 900101-1234568")
    assert set(re.findall(r"\[[A-Z-]+\]", masked)) >= {"[SECRET]", "[BASIC-AUTH]", "[GITHUB-TOKEN]", "[SLACK-TOKEN]", "[PRIVATE-KEY]",
                                                       "[EMAIL]", "[IP]", "[RRN]"}
    assert mask_log(masked) == masked and mask(masked) == masked
