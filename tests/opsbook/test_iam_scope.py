"""Scoped IAM (issue 19): every declared action has a scope; policies name the inventory's resources; destructive actions
only on a runbook's own copies; the checker refuses what the policy does not allow (and allows its healthy twin)."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

from opsbook import aws, registry
from opsbook.iam import declares
from opsbook.iam_check import Call, call_resources, matches, refusal, tag_facts
from opsbook.iam_scope import (
    ACTION_RESOURCES,
    DESTRUCTIVE,
    PRINCIPAL_ACCOUNT,
    RESOURCE_TYPES,
    Copies,
    pattern_policy,
    resource_types,
    scoped_policy,
)
from opsbook.inventory import load_system

ACCOUNT = "123456789012"


def declared_everywhere() -> set[str]:
    """Every IAM action any task or step declares: the runbooks' TASKS and every decorated function in tasks/ and flows/."""
    import flows
    import tasks

    found = {a for rb in registry.RUNBOOKS.values() for a in rb.actions()}
    for pkg in (tasks, flows):
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                found |= set(getattr(value, "iam_actions", ()) or ())
    return found


def test_every_declared_action_has_a_scope_so_a_new_action_without_one_fails_here():
    missing = sorted(a for a in declared_everywhere() if a not in ACTION_RESOURCES)
    assert missing == [], f"add these to opsbook.iam_scope.ACTION_RESOURCES: {missing}"
    assert {k for kinds in ACTION_RESOURCES.values() for k in kinds} <= set(RESOURCE_TYPES)
    with pytest.raises(KeyError, match="ACTION_RESOURCES"):
        resource_types("dynamodb:DropEverything")


def statements(policy: dict) -> list[dict]:
    return policy["Statement"]


def granted(policy: dict, action: str) -> list[dict]:
    return [s for s in statements(policy) if action in s["Action"]]


@pytest.mark.parametrize("system", ["hr-resource-optimization", "leh", "t-developer", "todo-app"])
def test_no_destructive_action_nor_ecs_update_service_on_star_or_the_inventorys_resources(system):
    inv = load_system(system)
    for rb in registry.RUNBOOKS.values():
        policy = scoped_policy(rb.actions(), inv, rb.copies())
        assert all(s["Sid"].isalnum() for s in statements(policy))
        for action in DESTRUCTIVE | {"ecs:UpdateService"}:
            for s in granted(policy, action):
                assert s["Resource"] != "*" and "*" not in s["Resource"], (rb.name, action, s)
                if action in DESTRUCTIVE:
                    assert "RunbookCopies" in s["Sid"], (rb.name, action, s)
        json.dumps(policy)  # printable


def test_restore_table_policy_names_the_inventorys_tables_in_its_region_and_copies_only_for_delete():
    rb, todo = registry.get("restore-table"), load_system("todo-app")
    policy = scoped_policy(rb.actions(), todo, rb.copies())
    table = f"arn:aws:dynamodb:ap-northeast-2:{PRINCIPAL_ACCOUNT}:table/todos"
    [inv] = [s for s in statements(policy) if s["Sid"] == "DynamodbTableInventory"]
    assert table in inv["Resource"] and "dynamodb:DeleteTable" not in inv["Action"] and "dynamodb:Scan" in inv["Action"]
    untagged, tagged = granted(policy, "dynamodb:DeleteTable")  # by Sid: ...NotYetTagged, ...Tagged
    assert tagged["Resource"] == [f"{table}-restore-*"]
    assert tagged["Condition"] == {"StringLike": {"aws:ResourceTag/opsbook:restore-source": ["todos"]}}
    assert untagged["Condition"] == {"Null": {"aws:ResourceTag/opsbook:restore-source": "true"}}


def test_a_pinned_account_is_named_and_an_unpinned_one_is_the_policy_variable():
    todo = load_system("todo-app")
    pinned = todo.model_copy(update={"account_id": "210987654321"})
    rb = registry.get("daily-health")
    text = json.dumps(scoped_policy(rb.actions(), pinned, rb.copies()))
    assert ":210987654321:" in text and PRINCIPAL_ACCOUNT not in text
    assert PRINCIPAL_ACCOUNT in json.dumps(scoped_policy(rb.actions(), todo, rb.copies()))


def test_tag_discovery_is_a_tag_condition_where_the_service_has_one_else_any_name_said_in_the_sid():
    hr = load_system("hr-resource-optimization")
    policy = scoped_policy(registry.get("daily-health").actions(), hr)
    [by_tag] = [s for s in statements(policy) if s["Sid"] == "DynamodbTableTagDiscovery"]
    assert by_tag["Resource"] == ["arn:aws:dynamodb:us-east-2:${aws:PrincipalAccount}:table/*"]
    assert by_tag["Condition"] == {"StringEquals": {"aws:ResourceTag/Team": "Team2"}}
    [s3] = [s for s in statements(policy) if s["Sid"] == "S3BucketAnyNameTagDiscoveryWithoutTagCondition"]
    assert s3["Resource"] == ["arn:aws:s3:::*"] and s3["Action"] == ["s3:ListBucket"]


def test_without_a_system_every_region_account_and_name_is_a_wildcard_and_destruction_stays_on_copy_patterns():
    rb = registry.get("dr-test")
    policy = pattern_policy(rb.actions(), rb.copies())
    assert "${" not in json.dumps(policy)
    assert [s["Resource"] for s in granted(policy, "dynamodb:DeleteTable")] == [["arn:aws:dynamodb:*:*:table/*-drtest-*"]] * 2
    assert [s["Resource"] for s in granted(policy, "s3:DeleteBucket")] == [["arn:aws:s3:::*-drtest-*"]]


# --- the checker ---------------------------------------------------------------------------------------------------------

TODO = load_system("todo-app")
RESTORE = registry.get("restore-table")


def restore_policy() -> dict:
    return scoped_policy(RESTORE.actions(), TODO, RESTORE.copies())


def ddb(op: str, **params) -> Call:
    return Call("dynamodb", op, "ap-northeast-2", params)


def test_a_call_on_another_table_than_the_inventorys_is_refused_and_its_twin_on_the_inventorys_table_allowed():
    policy = restore_policy()
    assert refusal(policy, ddb("Scan", TableName="todos"), ACCOUNT) is None
    assert refusal(policy, ddb("Scan", TableName="payroll"), ACCOUNT) == (
        "dynamodb:Scan on arn:aws:dynamodb:ap-northeast-2:123456789012:table/payroll")
    assert refusal(policy, Call("dynamodb", "Scan", "us-east-1", {"TableName": "todos"}), ACCOUNT)  # another region


def test_a_name_given_as_an_arn_or_a_queue_url_is_the_resource_it_names_not_the_callers_account():
    from opsbook.iam_check import call_resources

    assert refusal(restore_policy(), ddb("Scan", TableName=f"arn:aws:dynamodb:ap-northeast-2:{ACCOUNT}:table/todos"), ACCOUNT) is None
    other = ddb("Scan", TableName="arn:aws:dynamodb:eu-west-1:999999999999:table/todos")  # another account's todos
    assert refusal(restore_policy(), other, ACCOUNT) == "dynamodb:Scan on arn:aws:dynamodb:eu-west-1:999999999999:table/todos"
    fn = Call("lambda", "GetFunction", "ap-northeast-2", {"FunctionName": "arn:aws:lambda:eu-west-1:999999999999:function:f"})
    assert call_resources(fn, ACCOUNT) == ["arn:aws:lambda:eu-west-1:999999999999:function:f"]
    alias = Call("lambda", "GetFunction", "ap-northeast-2", {"FunctionName": "f:live"})
    assert call_resources(alias, ACCOUNT) == [f"arn:aws:lambda:ap-northeast-2:{ACCOUNT}:function:f:live"]
    queue = Call("sqs", "GetQueueAttributes", "ap-northeast-2", {"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/999999999999/q"})
    assert call_resources(queue, ACCOUNT) == ["arn:aws:sqs:eu-west-1:999999999999:q"]
    mine = Call("sqs", "GetQueueAttributes", "ap-northeast-2", {"QueueUrl": f"http://127.0.0.1:5000/{ACCOUNT}/q"})
    assert call_resources(mine, ACCOUNT) == [f"arn:aws:sqs:ap-northeast-2:{ACCOUNT}:q"]  # the sandbox's form: the twin


def test_delete_table_only_on_the_runbooks_copy_tagged_for_this_system():
    policy, copy = restore_policy(), "todos-restore-0123456789"
    arn = f"arn:aws:dynamodb:ap-northeast-2:{ACCOUNT}:table/{copy}"
    assert refusal(policy, ddb("DeleteTable", TableName="todos"), ACCOUNT)  # the live table: never
    assert refusal(policy, ddb("DeleteTable", TableName="payroll-restore-0123456789"), ACCOUNT)  # another table's "copy"
    ours = tag_facts({arn: {"opsbook:restore-source": "todos"}})
    assert refusal(policy, ddb("DeleteTable", TableName=copy), ACCOUNT, ours) is None
    theirs = tag_facts({arn: {"opsbook:restore-source": "payroll"}})
    assert refusal(policy, ddb("DeleteTable", TableName=copy), ACCOUNT, theirs)
    assert refusal(policy, ddb("DeleteTable", TableName=copy), ACCOUNT) is None  # not tagged yet: a killed run's copy


def test_tag_discovered_resources_are_allowed_by_their_tag_and_not_without_it():
    hr = load_system("hr-resource-optimization")
    policy = scoped_policy(registry.get("daily-health").actions(), hr)
    call = Call("dynamodb", "DescribeTable", "us-east-2", {"TableName": "Found-By-Tag"})
    arn = f"arn:aws:dynamodb:us-east-2:{ACCOUNT}:table/Found-By-Tag"
    assert refusal(policy, call, ACCOUNT, tag_facts({arn: {"Team": "Team2"}})) is None
    assert refusal(policy, call, ACCOUNT, tag_facts({arn: {"Team": "Team3"}}))
    assert refusal(policy, call, ACCOUNT)


def test_ecs_update_service_only_on_the_inventorys_services():
    t = load_system("t-developer")
    svc = t.ecs_services[0]
    policy = scoped_policy(registry.get("restart-service").actions(), t)
    ok = Call("ecs", "UpdateService", t.region, {"cluster": svc.cluster, "service": svc.service, "forceNewDeployment": True})
    assert refusal(policy, ok, ACCOUNT) is None
    assert refusal(policy, Call("ecs", "UpdateService", t.region, {"cluster": svc.cluster, "service": "billing"}), ACCOUNT)


@pytest.mark.parametrize(("call", "arns"), [
    (Call("sqs", "GetQueueAttributes", "us-east-2", {"QueueUrl": "http://127.0.0.1:5000/123456789012/jobs-dlq"}),
     ["arn:aws:sqs:us-east-2:123456789012:jobs-dlq"]),
    (Call("lambda", "GetAlias", "us-east-2", {"FunctionName": "fn", "Name": "live"}), ["arn:aws:lambda:us-east-2:123456789012:function:fn:live"]),
    (Call("lambda", "GetFunctionConfiguration", "us-east-2", {"FunctionName": "arn:aws:lambda:us-east-2:123456789012:function:fn"}),
     ["arn:aws:lambda:us-east-2:123456789012:function:fn"]),
    (Call("ecs", "DescribeServices", "us-east-2", {"cluster": "c", "services": ["a", "b"]}),
     ["arn:aws:ecs:us-east-2:123456789012:service/c/a", "arn:aws:ecs:us-east-2:123456789012:service/c/b"]),
    (Call("s3", "GetObject", "us-east-2", {"Bucket": "b", "Key": "k/1"}), ["arn:aws:s3:::b/k/1"]),
    (Call("s3", "ListObjectsV2", "us-east-2", {"Bucket": "b", "Prefix": "k/"}), ["arn:aws:s3:::b"]),
    (Call("logs", "FilterLogEvents", "us-east-2", {"logGroupName": "/aws/lambda/fn"}),
     ["arn:aws:logs:us-east-2:123456789012:log-group:/aws/lambda/fn"]),
    (Call("dynamodb", "Query", "us-east-2", {"TableName": "t", "IndexName": "byEmail"}),
     ["arn:aws:dynamodb:us-east-2:123456789012:table/t/index/byEmail"]),
    (Call("dynamodb", "BatchGetItem", "us-east-2", {"RequestItems": {"a": {}, "b": {}}}),
     ["arn:aws:dynamodb:us-east-2:123456789012:table/a", "arn:aws:dynamodb:us-east-2:123456789012:table/b"]),
    (Call("opensearch", "DescribeDomains", "us-east-2", {"DomainNames": ["d"]}), ["arn:aws:es:us-east-2:123456789012:domain/d"]),
    (Call("cloudwatch", "GetMetricData", "us-east-2", {}), ["*"]),
    (Call("resourcegroupstaggingapi", "GetResources", "us-east-2", {}), ["*"]),
    (Call("s3", "HeadBucket", "cn-north-1", {"Bucket": "b"}), ["arn:aws-cn:s3:::b"]),
])
def test_a_calls_resources_come_from_its_parameters(call, arns):
    assert call_resources(call, ACCOUNT) == arns


def test_iam_wildcards():
    assert matches("arn:aws:s3:::b/*", "arn:aws:s3:::b/x/y") and not matches("arn:aws:s3:::b/*", "arn:aws:s3:::bb/x")
    assert matches("arn:aws:secretsmanager:r:1:secret:db-??????", "arn:aws:secretsmanager:r:1:secret:db-AbC123")
    assert not matches("arn:aws:secretsmanager:r:1:secret:db-??????", "arn:aws:secretsmanager:r:1:secret:db-admin-AbC123")
    assert matches("dynamodb:describe*", "dynamodb:DescribeTable", case=False) and not matches("a[b]", "ab")


# --- the recorder -----------------------------------------------------------------------------------------------------


def test_calls_are_recorded_with_their_parameters_only_while_recording(aws_mock):
    c = aws.client("sqs", "us-east-2")
    seen: list[tuple] = []

    @declares(["sqs:CreateQueue", "sqs:GetQueueUrl"])
    def work() -> None:
        c.create_queue(QueueName="q")
        c.get_queue_url(QueueName="q")

    work()
    assert seen == []  # off by default
    with aws.recording(lambda *call: seen.append(call)):
        work()
    work()
    assert [(s, o, r) for s, o, r, _ in seen] == [("sqs", "CreateQueue", "us-east-2"), ("sqs", "GetQueueUrl", "us-east-2")]
    assert seen[1][3]["QueueName"] == "q"


# --- the command line --------------------------------------------------------------------------------------------------


def test_policy_with_and_without_a_system(capsys):
    from opsbook.cli import main

    assert main(["policy", "restore-table", "--system", "todo-app"]) == 0
    out, err = capsys.readouterr()
    assert "table/todos" in out and "${aws:PrincipalAccount}" in err and json.loads(out)["Version"] == "2012-10-17"
    assert main(["policy", "restore-table"]) == 0
    out, err = capsys.readouterr()
    assert "every region, account and resource name is *" in err and "arn:aws:dynamodb:*:*:table/*" in out
    assert main(["policy", "restore-table", "--system", "nowhere"]) == 3
    assert "unknown system 'nowhere'" in capsys.readouterr().out  # the one Nagios line, exit 3


def test_copies_without_a_name_pattern_grant_nothing():
    nothing = Copies("dynamodb:table", "*-x-*", lambda s, a: [])
    policy = scoped_policy(["dynamodb:DeleteTable"], TODO, [nothing])
    assert policy["Statement"] == []


def test_a_roles_aws_managed_policies_are_readable_and_kms_goes_through_secrets_manager_only():
    policy = scoped_policy(registry.get("diagnose-api-5xx").actions(), TODO)
    managed = Call("iam", "GetPolicy", "ap-northeast-2", {"PolicyArn": "arn:aws:iam::aws:policy/AWSLambdaBasicExecutionRole"})
    assert refusal(policy, managed, ACCOUNT) is None
    security = scoped_policy(registry.get("security-incident").actions(), load_system("leh"))
    [kms] = granted(security, "kms:Decrypt")
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "secretsmanager.ap-northeast-2.amazonaws.com"}}
    assert refusal(security, Call("kms", "Decrypt", "ap-northeast-2", {"KeyId": "k"}), ACCOUNT)  # not directly


def test_a_topic_given_as_an_arn_is_kept_and_a_name_is_made_an_arn_of_the_inventorys_region():
    other = "arn:aws:sns:us-east-1:210987654321:ops-alerts"
    inv = TODO.model_copy(update={"notifications": TODO.notifications.model_copy(update={"sns_topic": other})})
    [st] = granted(scoped_policy(["sns:Publish"], inv), "sns:Publish")
    assert st["Resource"] == [other]
    [st] = granted(scoped_policy(["sns:Publish"], TODO), "sns:Publish")
    assert st["Resource"] == [f"arn:aws:sns:ap-northeast-2:{PRINCIPAL_ACCOUNT}:{TODO.notifications.sns_topic}"]
