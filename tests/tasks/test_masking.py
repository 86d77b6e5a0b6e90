from tasks.masking import mask, mask_obj


def test_secrets_and_personal_data_are_masked():
    text = ("user kim.minsu@example.com from 10.1.2.3 password=hunter2 token: abc123 AKIAABCDEFGHIJKLMNOP "
            "rrn 900101-1234567 phone 010-1234-5678 Bearer abcdefghijklmnopqr sk-abcdefghijklmnopqrstu")
    out = mask(text)
    for secret in ("kim.minsu@example.com", "10.1.2.3", "hunter2", "abc123", "AKIAABCDEFGHIJKLMNOP", "900101-1234567",
                   "010-1234-5678", "abcdefghijklmnopqr", "sk-abcdefghijklmnopqrstu"):
        assert secret not in out, secret


def test_ordinary_log_text_survives():
    line = "ERROR Task timed out after 30.00 seconds in ResumeParser at 2026-11-21T10:00:00"
    assert mask(line) == line


def test_nested_objects():
    assert mask_obj({"a": ["x@y.io", {"b": "password=1"}], "n": 3}) == {"a": ["[EMAIL]", {"b": "password=[REDACTED]"}], "n": 3}


def test_identifiers_and_loopback_urls_are_left_alone():
    import uuid

    for _ in range(20000):
        u = str(uuid.uuid4())
        assert mask(u) == u
    assert mask("http://127.0.0.1:4200/runs/flow-run/85bc1c6f-7c93-4380-9a6a-27c175310445") == \
        "http://127.0.0.1:4200/runs/flow-run/85bc1c6f-7c93-4380-9a6a-27c175310445"
    assert mask("arn:aws:sns:us-east-1:123456789012:alerts") == "arn:aws:sns:us-east-1:123456789012:alerts"
    assert mask("call 010-1234-5678 or +82 10 1234 5678") == "call [PHONE] or [PHONE]"
