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
