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
