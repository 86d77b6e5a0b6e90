"""Does a policy allow a call? The resource ARNs an AWS call acts on (from its request parameters), and IAM's matching of
actions, resources (wildcards, policy variables) and the conditions opsbook's scoped policies use.

A small evaluator for opsbook's own policies (Allow statements; StringEquals, StringLike and their ForAnyValue forms, and Null, on
``aws:ResourceTag/<key>``, ``lambda:FunctionArn``, ``kms:ResourceAliases``, ``kms:ViaService``), not IAM: a condition key
it cannot resolve is not met, so an unknown case says "refused", never "allowed".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlparse

from opsbook.iam import iam_action
from opsbook.iam_scope import ACTION_RESOURCES, PRINCIPAL_ACCOUNT, partition


@dataclass(frozen=True)
class Call:
    """One AWS API call as the before-call hook saw it: botocore service name, operation, client region, parameters."""

    service: str
    operation: str
    region: str
    params: Mapping[str, Any] = field(default_factory=dict)


def _name_of(value: str, sep: str) -> str:
    """A name or an ARN's last part after ``sep``."""
    return value.rsplit(sep, 1)[-1] if value.startswith("arn:") else value


def _dynamodb(c: Call, arn: Callable[[str], str]) -> list[str]:
    p, op = c.params, c.operation
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [arn(f"table/{t}") for t in p.get("RequestItems", {})]
    if op == "TransactWriteItems":
        return [arn(f"table/{v['TableName']}") for it in p.get("TransactItems", []) for v in it.values() if "TableName" in v]
    if op == "RestoreTableFromBackup":
        return [p["BackupArn"], arn(f"table/{p['TargetTableName']}")]
    if op == "RestoreTableToPointInTime":
        src = p.get("SourceTableArn") or arn(f"table/{p['SourceTableName']}")
        return [src, arn(f"table/{p['TargetTableName']}")]
    for key in ("ResourceArn", "BackupArn"):
        if key in p:
            return [p[key]]
    if "TableName" in p:  # an ARN is the table it names (another account or region stays so), a name is in the caller's
        table = p["TableName"] if p["TableName"].startswith("arn:") else arn(f"table/{p['TableName']}")
        return [f"{table}/index/{p['IndexName']}" if p.get("IndexName") else table]
    return ["*"]


def _s3(c: Call, part: str) -> list[str]:
    p = c.params
    if "Bucket" not in p:
        return ["*"]
    bucket = f"arn:{part}:s3:::{p['Bucket']}"
    if c.operation == "DeleteObjects":
        return [f"{bucket}/{o['Key']}" for o in p.get("Delete", {}).get("Objects", [])]
    if "Key" in p:
        return [f"{bucket}/{p['Key']}"]
    return [bucket]


def _ecs(c: Call, arn: Callable[[str], str]) -> list[str]:
    p = c.params
    cluster = _name_of(p.get("cluster", "default"), "/")
    services = p.get("services") or ([p["service"]] if "service" in p else [])
    return [s if s.startswith("arn:") else arn(f"service/{cluster}/{s}") for s in services] or ["*"]


def _lambda(c: Call, arn: Callable[[str], str]) -> list[str]:
    p = c.params
    if c.operation in ("UpdateEventSourceMapping", "GetEventSourceMapping", "DeleteEventSourceMapping") and "UUID" in p:
        return [arn(f"event-source-mapping:{p['UUID']}")]
    fn = p.get("FunctionName")
    if not fn:
        return ["*"]
    qualifier = p.get("Qualifier") or p.get("Name") if c.operation in ("GetAlias", "UpdateAlias") else p.get("Qualifier")
    if fn.startswith("arn:"):  # the function it names, in its own account and region; a qualifier in the ARN wins
        base = ":".join(fn.split(":")[:7])
        qualifier = fn.split(":")[7] if len(fn.split(":")) > 7 else qualifier
        return [base + (f":{qualifier}" if qualifier else "")]
    name, _, named_qualifier = fn.partition(":")  # "fn:live" is the alias live of fn
    qualifier = named_qualifier or qualifier
    return [arn(f"function:{name}" + (f":{qualifier}" if qualifier else ""))]


def _sqs(c: Call, arn: Callable[[str], str]) -> list[str]:
    p = c.params
    if "QueueUrl" in p:  # https://sqs.<region>.amazonaws.com/<account>/<name>: the queue of that account and region
        url = urlparse(p["QueueUrl"])
        account_name = unquote(url.path).strip("/").split("/")
        host = (url.hostname or "").split(".")
        region = host[1] if len(host) > 2 and host[0] == "sqs" else c.region
        if len(account_name) == 2 and account_name[0].isdigit():
            return [f"arn:{partition(region)}:sqs:{region}:{account_name[0]}:{account_name[1]}"]
        return [arn(account_name[-1])]
    if "QueueName" in p:
        return [arn(p["QueueName"])]
    return ["*"]


def _apigateway(c: Call, part: str) -> list[str]:
    p = c.params
    base = f"arn:{part}:apigateway:{c.region}::/restapis"
    if "restApiId" not in p:
        return [base]
    path = f"{base}/{p['restApiId']}"
    if "stageName" in p:
        return [f"{path}/stages/{p['stageName']}"]
    if "resourceId" in p:
        return [f"{path}/resources/{p['resourceId']}" + (f"/methods/{p['httpMethod']}" if "httpMethod" in p else "")]
    return [path] if c.operation == "GetRestApi" else [f"{path}/{c.operation.removeprefix('Get').lower()}"]


def _simple(c: Call, arn: Callable[[str], str], part: str, account: str) -> list[str] | None:
    """Services whose ARN comes from one parameter."""
    p, s = c.params, c.service
    if s == "logs" and (p.get("logGroupName") or p.get("logGroupIdentifier")):
        return [arn(f"log-group:{p.get('logGroupName') or p.get('logGroupIdentifier')}")]
    if s == "opensearch":
        names = p.get("DomainNames") or ([p["DomainName"]] if "DomainName" in p else [])
        return [arn(f"domain/{n}") for n in names] or None
    if s == "sns" and "TopicArn" in p:
        return [p["TopicArn"]]
    if s == "secretsmanager" and "SecretId" in p:
        sid = p["SecretId"]
        return [sid if sid.startswith("arn:") else arn(f"secret:{sid}-XXXXXX")]  # the 6 characters AWS appends, stood in for
    if s == "cognito-idp" and "UserPoolId" in p:
        return [arn(f"userpool/{p['UserPoolId']}")]
    if s == "rds" and "DBInstanceIdentifier" in p:
        return [arn(f"db:{p['DBInstanceIdentifier']}")]
    if s == "ecr" and "repositoryName" in p:
        return [arn(f"repository/{p['repositoryName']}")]
    if s == "acm" and "CertificateArn" in p:
        return [p["CertificateArn"]]
    if s == "kms" and "KeyId" in p:
        k = p["KeyId"]
        return [k if k.startswith("arn:") else arn(f"key/{k}")]
    if s == "iam" and "PolicyArn" in p:
        return [p["PolicyArn"]]
    if s == "iam" and "RoleName" in p:
        return [f"arn:{part}:iam::{account}:role/{p['RoleName']}"]
    if s == "sts" and "RoleArn" in p:
        return [p["RoleArn"]]
    if s == "application-autoscaling" and "ResourceId" in p:
        return [arn("scalable-target/" + re.sub(r"[^A-Za-z0-9]", "", p["ResourceId"]))]
    return None


_PREFIXES = {"opensearch": "es", "monitoring": "cloudwatch"}


def call_resources(c: Call, account: str) -> list[str]:
    """The ARNs a call acts on (``["*"]`` where its action takes no resource-level permission or no parameter names one)."""
    action = iam_action(c.service, c.operation)
    if action is None or ACTION_RESOURCES.get(action) == ():
        return ["*"]
    part = partition(c.region)
    prefix = _PREFIXES.get(c.service, c.service)

    def arn(resource: str) -> str:
        return f"arn:{part}:{prefix}:{c.region}:{account}:{resource}"

    if c.service == "dynamodb":
        return _dynamodb(c, arn)
    if c.service == "s3":
        return _s3(c, part)
    if c.service == "ecs":
        return _ecs(c, arn)
    if c.service == "lambda":
        return _lambda(c, arn)
    if c.service == "sqs":
        return _sqs(c, arn)
    if c.service == "apigateway":
        return _apigateway(c, part)
    return _simple(c, arn, part, account) or ["*"]


@lru_cache(maxsize=4096)
def _glob(pattern: str, case: bool) -> re.Pattern[str]:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{body}$", 0 if case else re.IGNORECASE)


def matches(pattern: str, value: str, *, case: bool = True) -> bool:
    """IAM's wildcard match: ``*`` any run of characters (``/`` and ``:`` included), ``?`` one character."""
    return bool(_glob(pattern, case).match(value))


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _condition_met(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, list[str]]) -> bool:
    for op, tests in condition.items():
        base = op.split(":", 1)[-1]
        if base == "Null":
            if any((str(wanted).lower() == "true") != (not context.get(key)) for key, wanted in tests.items()):
                return False
            continue
        if base not in ("StringEquals", "StringLike"):
            return False
        for key, wanted in tests.items():
            have = context.get(key)
            if not have:
                return False  # the key is absent: IAM's string operators are then not met
            like = base == "StringLike"
            if not any(matches(w, h) if like else w == h for w in _as_list(wanted) for h in have):
                return False
    return True


def allows(policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, list[str]], account: str) -> bool:
    """Whether an Allow statement of ``policy`` covers ``action`` on ``resource`` with the condition keys in ``context``."""
    for st in _as_list(policy.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        if not any(matches(a, action, case=False) for a in _as_list(st.get("Action", []))):
            continue
        resources = [r.replace(PRINCIPAL_ACCOUNT, account) for r in _as_list(st.get("Resource", []))]
        if not any(matches(r, resource) for r in resources):
            continue
        if _condition_met(st.get("Condition") or {}, context):
            return True
    return False


Facts = Callable[[str], Mapping[str, list[str]]]


def no_facts(arn: str) -> Mapping[str, list[str]]:
    return {}


def _context(c: Call, resource: str, facts: Facts, arn_of_function: Callable[[str], str]) -> dict[str, list[str]]:
    ctx = dict(facts(resource))
    if c.service == "lambda" and c.params.get("FunctionName"):
        ctx["lambda:FunctionArn"] = [arn_of_function(c.params["FunctionName"])]
    return ctx


def tag_facts(tags: Mapping[str, Mapping[str, str]], aliases: Mapping[str, list[str]] | None = None) -> Facts:
    """The condition keys of a resource from what is known of it: its tags (aws:ResourceTag/<key>) and, for a KMS key,
    its aliases (kms:ResourceAliases), by ARN."""
    def facts(arn: str) -> Mapping[str, list[str]]:
        out = {f"aws:ResourceTag/{k}": [v] for k, v in (tags.get(arn) or {}).items()}
        if aliases and aliases.get(arn):
            out["kms:ResourceAliases"] = list(aliases[arn])
        return out

    return facts


def refusal(policy: Mapping[str, Any], c: Call, account: str, facts: Facts = no_facts) -> str | None:
    """None when the policy allows the call; else what it refuses (the action and the resource). ``facts(arn)``: the
    condition keys the resource brings (its tags, a key's aliases); what it does not say is absent."""
    action = iam_action(c.service, c.operation)
    if action is None:
        return None  # needs no permission (sts:GetCallerIdentity)
    part = partition(c.region)

    def fn_arn(fn: str) -> str:
        return fn if fn.startswith("arn:") else f"arn:{part}:lambda:{c.region}:{account}:function:{fn}"

    for resource in call_resources(c, account):
        if not allows(policy, action, resource, _context(c, resource, facts, fn_arn), account):
            return f"{action} on {resource}"
    return None
