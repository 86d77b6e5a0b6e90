from opsbook.findings import Finding, Status, by_threshold, overall


def f(status):
    return Finding(check="c", resource="r", status=status, summary="s")


def test_overall_precedence():
    assert overall([f(Status.OK), f(Status.UNKNOWN), f(Status.WARN), f(Status.CRIT)]) is Status.CRIT
    assert overall([f(Status.OK), f(Status.UNKNOWN), f(Status.WARN)]) is Status.WARN
    assert overall([f(Status.OK), f(Status.UNKNOWN)]) is Status.UNKNOWN
    assert overall([f(Status.OK)]) is Status.OK
    assert overall([]) is Status.UNKNOWN  # nothing checked is never OK


def test_exit_codes_follow_nagios():
    assert [s.exit_code for s in (Status.OK, Status.WARN, Status.CRIT, Status.UNKNOWN)] == [0, 1, 2, 3]


def test_thresholds():
    assert by_threshold(0, 1, 10) is Status.OK
    assert by_threshold(1, 1, 10) is Status.WARN
    assert by_threshold(10, 1, 10) is Status.CRIT
