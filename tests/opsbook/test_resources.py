"""Whether named resources exist (moto): the idle ones weekly-report cannot prove by tag discovery."""

from __future__ import annotations

import boto3

from opsbook.inventory import load_system
from opsbook.resources import confirm_idle

HR = load_system("hr-resource-optimization")


def test_confirm_idle_reports_missing_resources_and_not_existing_ones(aws_mock):
    region = HR.region
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(TableName="here", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    boto3.client("apigateway", region_name=region).create_rest_api(name="api-here")
    out = confirm_idle.fn(HR, {"dynamodb": ["here", "gone"], "lambda": ["no-fn"], "s3": ["no-bucket"], "apigateway": ["api-here", "api-gone"]})
    assert {(u.kind, u.resource) for u in out} == {("dynamodb", "gone"), ("lambda", "no-fn"), ("s3", "no-bucket"), ("apigateway", "api-gone")}
    assert all(u.not_found for u in out), [u.reason for u in out]


# --- the run's one resolution (pure: built from what was read) -------------------------------------

from opsbook.findings import Status  # noqa: E402
from opsbook.resources import Probe, Resolved, build_resolved, kind_name, resolution_findings, resolve, resolve_tables_buckets, resolved_or_named, to_probe  # noqa: E402
from tasks.tagging import resource_tags  # noqa: E402

ACCT = "arn:aws:{svc}:us-east-2:123456789012:{res}"
TEAM = [{"Key": "Team", "Value": "Team2"}]


def mapping(svc: str, res: str, tags=TEAM) -> dict:
    return {"ResourceARN": ACCT.format(svc=svc, res=res), "Tags": tags}


def hr_mappings(skip: set[str] = frozenset()) -> list[dict]:
    """Every named HR function, table and bucket carries the tag (except ``skip``), plus tag-only extras."""
    out = [mapping("lambda", f"function:{f.name}") for f in HR.lambda_functions if f.name not in skip]
    out += [mapping("dynamodb", f"table/{t.name}") for t in HR.dynamodb_tables if t.name not in skip]
    out += [{"ResourceARN": f"arn:aws:s3:::{b.name}", "Tags": TEAM} for b in HR.s3_buckets if b.name not in skip]
    return out + [mapping("lambda", "function:extra-fn"), mapping("logs", "log-group:/hr/extra:*"), mapping("dynamodb", "table/extra-table")]


def test_kind_name_sorts_arns_and_ignores_what_it_does_not_audit():
    assert kind_name("arn:aws:lambda:r:1:function:f:live") == ("lambda", "f")
    assert kind_name("arn:aws:dynamodb:r:1:table/t/stream/x") is None
    assert kind_name("arn:aws:logs:r:1:log-group:/g:*") == ("logs", "/g")
    assert kind_name("arn:aws:es:r:1:domain/d") is None and kind_name("bad") is None


def test_resolved_is_the_union_and_says_where_each_name_came_from():
    res = build_resolved(HR, hr_mappings(), {}, enabled=True, probed=True)
    names = res.names("lambda")
    assert names[:8] == [f.name for f in HR.lambda_functions] and names[8:] == ["extra-fn"]  # named first, inventory order
    assert res.names("dynamodb")[-1] == "extra-table" and res.names("logs") == ["/hr/extra"]
    assert res.source("lambda", "ResumeParser") == "named+discovered" and res.source("lambda", "extra-fn") == "discovered"
    assert res.tags["lambda:extra-fn"] == {"Team": "Team2"} and res.missing == {} and res.count() == 9 + 7 + 4 + 1
    assert resolution_findings(HR, res) == []


def test_a_named_resource_discovery_did_not_see_is_missing_untagged_or_unreadable_by_its_lookup():
    skip = {"Employees-Team2", "Projects-Team2", "hr-frontend-bucket-team2", "ResumeParser"}
    inv = HR.model_copy(update={"dynamodb_tables": [*HR.dynamodb_tables, HR.dynamodb_tables[0].model_copy(update={"name": "Ghost-Team2"})]})
    found = build_resolved(inv, hr_mappings(skip), {}, enabled=True)
    assert to_probe(inv, found) == [("lambda", "ResumeParser"), ("dynamodb", "Employees-Team2"), ("dynamodb", "Projects-Team2"),
                                    ("dynamodb", "Ghost-Team2"), ("s3", "hr-frontend-bucket-team2")]
    probes = {"dynamodb:Employees-Team2": Probe(exists=True, tags={"Owner": "hr"}), "dynamodb:Ghost-Team2": Probe(exists=False),
              "dynamodb:Projects-Team2": Probe(error="AccessDenied: no dynamodb:DescribeTable"), "s3:hr-frontend-bucket-team2": Probe(exists=True, tags={}),
              "lambda:ResumeParser": Probe(exists=True, tags={"Team": "Team2"})}
    res = build_resolved(inv, hr_mappings(skip), probes, enabled=True, probed=True)
    assert res.missing == {"dynamodb": ["Ghost-Team2"]} and "Ghost-Team2" not in res.names("dynamodb")
    assert "Projects-Team2" in res.names("dynamodb") and res.unreadable == {"dynamodb:Projects-Team2": "AccessDenied: no dynamodb:DescribeTable"}
    assert [t.name for t in res.present(inv).dynamodb_tables] == [t.name for t in HR.dynamodb_tables]  # the audits never see the ghost
    tags = {(t.kind, t.name): t for t in resource_tags(res)}
    assert ("dynamodb", "Ghost-Team2") not in tags
    assert tags[("dynamodb", "Employees-Team2")].tags == {"Owner": "hr"} and tags[("s3", "hr-frontend-bucket-team2")].tags == {}
    assert tags[("dynamodb", "Projects-Team2")].error.startswith("AccessDenied")  # never OK without data
    [f] = resolution_findings(inv, res)
    assert (f.check, f.resource, f.status) == ("inventory", "Ghost-Team2", Status.WARN) and "does not exist in us-east-2" in f.summary


def test_discovery_that_failed_leaves_the_named_ones_and_says_so():
    res = resolved_or_named(HR, RuntimeError("boom"))
    assert res.error and res.names("lambda") == [f.name for f in HR.lambda_functions] and res.discovered("lambda") == []
    [f] = resolution_findings(HR, res)
    assert f.status is Status.UNKNOWN and f.check == "discovery" and "only the inventory's named resources were checked" in f.summary
    erred = build_resolved(HR, [], {"dynamodb:Employees-Team2": Probe(exists=False)}, enabled=True, error="AccessDenied", probed=True)
    assert erred.missing == {"dynamodb": ["Employees-Team2"]} and len(resolution_findings(HR, erred)) == 2


def test_resolved_stays_a_discovered_for_the_checks_that_take_one():
    res = build_resolved(HR, hr_mappings(), {}, enabled=True)
    assert isinstance(res, Resolved) and res.count() == Resolved(**res.model_dump()).count() == 21


def test_resolve_looks_up_only_what_discovery_did_not_see(aws_mock):
    """moto: HR with no discovery tags on anything; a table, an untagged bucket, and the rest missing."""
    region = HR.region
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(TableName="Employees-Team2", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], Tags=[{"Key": "Owner", "Value": "hr"}])
    boto3.client("s3", region_name=region).create_bucket(Bucket="hr-reports-bucket-team2", CreateBucketConfiguration={"LocationConstraint": region})
    res = resolve.fn(HR, tags=True)
    assert res.enabled and not res.error and res.probed and res.count() == 0
    assert res.tags["dynamodb:Employees-Team2"] == {"Owner": "hr"} and res.tags["s3:hr-reports-bucket-team2"] == {}
    assert sorted(res.missing) == ["dynamodb", "lambda", "s3"] and len(res.missing["lambda"]) == 8 and len(res.missing["dynamodb"]) == 5
    assert res.names("dynamodb") == ["Employees-Team2"] and res.names("s3") == ["hr-reports-bucket-team2"]
    assert res.confirmed("dynamodb") == {"Employees-Team2"} and res.confirmed("lambda") == set()
    only_tables = resolve_tables_buckets.fn(HR, tags=True)  # a resolver without the tag-reading actions reads no tags
    assert only_tables.missing == {k: res.missing[k] for k in ("dynamodb", "s3")} and "dynamodb:Employees-Team2" not in only_tables.tags
    assert set(resolve_tables_buckets.iam_actions) == {"tag:GetResources", "dynamodb:DescribeTable", "s3:GetBucketTagging"}


def test_confirmed_is_what_discovery_or_a_lookup_showed_to_exist():
    probes = {"lambda:ResumeParser": Probe(exists=True, tags={}), "lambda:AffinityScoreCalculator": Probe(error="AccessDenied")}
    res = build_resolved(HR, hr_mappings({"ResumeParser", "AffinityScoreCalculator", "DomainAnalysisEngine"}), probes, enabled=True, probed=True)
    seen = res.confirmed("lambda")
    assert "ResumeParser" in seen and "extra-fn" in seen and "AffinityScoreCalculator" not in seen and "DomainAnalysisEngine" not in seen


# --- discovery under throttling: asked again, then what it did not see named -------------------------------------------

from botocore.exceptions import ClientError  # noqa: E402

from opsbook import aws, resources  # noqa: E402
from opsbook.resources import coverage, discover  # noqa: E402

THROTTLED = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetResources")


class Pages:
    """GetResources over ``pages`` (lists of mappings); ``fail[n]``: how many times page n is throttled first (-1: always)."""

    def __init__(self, pages: list[list[dict]], fail: dict[int, int] | None = None) -> None:
        self.pages, self.fail, self.asked = pages, dict(fail or {}), []

    def get_resources(self, **kwargs):
        n = int(kwargs.get("PaginationToken", "0"))
        self.asked.append(n)
        if self.fail.get(n, 0):
            self.fail[n] -= 1
            raise THROTTLED
        out = {"ResourceTagMappingList": self.pages[n]}
        return out | ({"PaginationToken": str(n + 1)} if n + 1 < len(self.pages) else {})


def _fake(monkeypatch, pages: Pages) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(resources, "_sleep", slept.append)
    monkeypatch.setattr(resources.aws, "client", lambda *a, **k: pages)
    return slept


def _split(mappings: list[dict]) -> list[list[dict]]:
    return [mappings[:6], mappings[6:12], mappings[12:]]


def test_a_throttled_discovery_page_is_asked_for_again_and_every_page_kept(monkeypatch):
    pages = Pages(_split(hr_mappings()), fail={1: 2})
    slept = _fake(monkeypatch, pages)
    mappings, error = resources.tagged(HR, aws.Deadline(60))
    assert error is None and len(mappings) == len(hr_mappings()) and pages.asked == [0, 1, 1, 1, 2] and slept == [2.0, 4.0]


def test_a_discovery_answered_at_once_sleeps_never_healthy_twin(monkeypatch):
    pages = Pages(_split(hr_mappings()))
    slept = _fake(monkeypatch, pages)
    assert resources.tagged(HR, aws.Deadline(60))[1] is None and pages.asked == [0, 1, 2] and slept == []


def test_discovery_gives_up_within_the_deadline_keeping_the_pages_it_read(monkeypatch):
    pages = Pages(_split(hr_mappings()), fail={1: -1})
    slept = _fake(monkeypatch, pages)
    mappings, error = resources.tagged(HR, aws.Deadline(60))
    assert len(mappings) == 6 and "ThrottlingException" in error and "page 2 asked for 4 times" in error and slept == [2.0, 4.0, 8.0]
    pages.asked.clear()
    slept.clear()
    assert resources.tagged(HR, aws.Deadline(6))[1] and slept == [] and pages.asked == [0, 1]  # no time left to wait
    pages.asked.clear()
    assert resources.tagged(HR, None)[1] and slept == [] and pages.asked == [0, 1]  # no deadline: botocore's retries only


def test_when_discovery_gives_up_each_resource_an_earlier_one_found_and_it_did_not_see_is_unknown(monkeypatch):
    full = hr_mappings()
    _fake(monkeypatch, Pages(_split(full)))
    assert discover.fn(HR, aws.Deadline(60)).count() == 21  # complete: remembered
    _fake(monkeypatch, Pages(_split(full), fail={1: -1}))
    found = discover.fn(HR, aws.Deadline(60))
    assert found.error and found.count() == 6 and found.remembered_at  # the first page's resources are checked
    findings = coverage(HR, found)
    per_resource = {f.resource for f in findings if f.resource != f"tags {HR.discovery.tags}"}
    assert all(f.status is Status.UNKNOWN and f.check == "discovery" for f in findings)
    seen = {n for field in resources._FOUND_FIELDS for n in getattr(found, field)}
    expected = {resources.kind_name(m["ResourceARN"])[1] for m in full} - seen
    assert per_resource == expected and len(per_resource) == 21 - 6
    assert "15 resource(s) tag discovery found at" in findings[0].summary
    assert all("not seen this run (GetResources: ThrottlingException" in f.summary for f in findings[1:])


def test_when_discovery_gives_up_with_no_earlier_one_it_says_it_cannot_name_what_it_missed(monkeypatch):
    _fake(monkeypatch, Pages(_split(hr_mappings()), fail={0: -1}))
    [f] = coverage(HR, discover.fn(HR, aws.Deadline(60)))
    assert f.status is Status.UNKNOWN and "no earlier complete discovery on this machine" in f.summary


def test_the_resolution_names_what_discovery_did_not_see_too(monkeypatch):
    full = hr_mappings()
    resources.remember(HR, full)
    res = build_resolved(HR, full[:6], {}, enabled=True, error="GetResources: ThrottlingException: Rate exceeded", probed=True)
    assert res.unseen == [] and res.count() == 6  # pure: what was read
    res = resources.gave_up(HR, res)
    findings = resolution_findings(HR, res)
    assert len(findings) == 1 + 15 and "only the 6 resource(s) it read and the inventory's named ones were checked" in findings[0].summary
    assert res.names("lambda")[:8] == [f.name for f in HR.lambda_functions]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")  # another endpoint: another account's memory
    assert resources.remembered(HR) == ([], None)


def test_runbooks_of_one_invocation_share_a_discovery_that_succeeded_and_not_one_that_failed(monkeypatch):
    pages = Pages(_split(hr_mappings()))
    _fake(monkeypatch, pages)
    with resources.shared_reads():
        first, _ = resources.tagged(HR, aws.Deadline(60))
        again, _ = resources.tagged(HR, aws.Deadline(60))
    assert again == first and pages.asked == [0, 1, 2]  # read once
    resources.tagged(HR, aws.Deadline(60))
    assert pages.asked == [0, 1, 2, 0, 1, 2]  # the healthy twin: outside an invocation nothing is kept
    failing = Pages(_split(hr_mappings()), fail={0: -1})
    _fake(monkeypatch, failing)
    with resources.shared_reads():
        assert resources.tagged(HR, aws.Deadline(3))[1] and resources.tagged(HR, aws.Deadline(3))[1]
    assert failing.asked.count(0) == 2  # a discovery that gave up is tried again by the next runbook


# --- discovery started early (opsbook run, while the flows are imported) -------------------------------------------


def _drop_early():
    with resources._early_lock:
        resources._early.clear()


def test_an_early_discovery_is_taken_by_the_run_once_instead_of_read_again(monkeypatch):
    _drop_early()
    pages = Pages(_split(hr_mappings()))
    _fake(monkeypatch, pages)
    assert resources.prefetch(HR) and not resources.prefetch(HR)  # one at a time
    first, error = resources.tagged(HR, aws.Deadline(60))
    assert error is None and len(first) == len(hr_mappings()) and pages.asked == [0, 1, 2]  # the early read's pages only
    again, _ = resources.tagged(HR, aws.Deadline(60))
    assert again == first and pages.asked == [0, 1, 2, 0, 1, 2]  # taken once: the next discovery reads


def test_an_early_discovery_that_gave_up_is_read_again_by_the_run(monkeypatch):
    _drop_early()
    pages = Pages(_split(hr_mappings()), fail={0: 4})  # the early read gives up on page 0 (3 waits), the run's gets it
    _fake(monkeypatch, pages)
    assert resources.prefetch(HR)
    mappings, error = resources.tagged(HR, aws.Deadline(60))
    assert error is None and len(mappings) == len(hr_mappings()) and pages.asked == [0, 0, 0, 0, 0, 1, 2]


def test_nothing_starts_early_for_a_system_without_discovery_tags():
    _drop_early()
    untagged = HR.model_copy(update={"discovery": HR.discovery.model_copy(update={"tags": {}})})
    assert resources.prefetch(untagged) is False and resources._early == {}


def test_the_early_discovery_s_calls_are_counted_in_the_run_that_takes_it(seeded, sandbox):
    """Against the sandbox: the run's call log holds the early read's GetResources pages, as many as reading itself."""
    _drop_early()
    hr = seeded("hr-resource-optimization")
    alone = aws.start_call_log()
    plain, _ = resources.tagged(hr, aws.Deadline(60))
    pages = alone.by_operation()["resourcegroupstaggingapi:GetResources"]
    assert resources.prefetch(hr)
    run = aws.start_call_log()
    early, error = resources.tagged(hr, aws.Deadline(60))
    assert error is None and sorted(m["ResourceARN"] for m in early) == sorted(m["ResourceARN"] for m in plain)
    assert run.by_operation() == {"resourcegroupstaggingapi:GetResources": pages} and run.undeclared == set()


def test_an_early_discovery_is_never_taken_under_an_assumed_role(monkeypatch):
    """A fleet target runs inside another account's role: a discovery started for this account is not its answer."""
    _drop_early()
    pages = Pages(_split(hr_mappings()))
    _fake(monkeypatch, pages)
    assert resources.prefetch(HR)
    resources._early[resources._early_key(HR)].done.wait(10)
    monkeypatch.setattr(resources.aws, "current_role", lambda: object())
    assert resources._take_early(HR, aws.Deadline(5)) is None
    _drop_early()


def test_an_early_discovery_still_reading_at_the_deadline_is_discovery_giving_up_and_its_calls_follow_the_run(monkeypatch):
    _drop_early()
    release = __import__("threading").Event()
    pages = Pages(_split(hr_mappings()))

    class Slow:
        def get_resources(self, **kw):
            release.wait(10)
            return pages.get_resources(**kw)

    monkeypatch.setattr(resources.aws, "client", lambda *a, **k: Slow())
    assert resources.prefetch(HR)
    log = aws.start_call_log()
    mappings, error = resources.tagged(HR, aws.Deadline(0.2))
    assert mappings == [] and "did not finish within the run's deadline" in error and pages.asked == []  # no second read
    release.set()
    assert log.total == 0  # the fake client sends no request; what matters: nothing read twice, the run not held
    _drop_early()


def test_the_calls_of_an_early_discovery_no_run_took_are_handed_back_once(monkeypatch):
    _drop_early()
    pages = Pages(_split(hr_mappings()))
    _fake(monkeypatch, pages)
    assert resources.prefetch(HR)
    e = resources._early[resources._early_key(HR)]
    e.done.wait(10)
    e.calls.add("resourcegroupstaggingapi", "GetResources")  # as botocore's count would have
    left = resources.left_early()
    assert left.by_operation() == {"resourcegroupstaggingapi:GetResources": 1} and resources._early == {}
    assert resources.left_early().total == 0
