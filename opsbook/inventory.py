"""System inventories: what a system is made of, its thresholds and schedules.

An inventory is a YAML file in ``systems/`` checked by the pydantic models
below. Unknown keys are rejected, so a typo fails loudly before any AWS call
with the file, the field and the problem (``InventoryError``).

Where the inventories are (one rule, read once at import):

1. ``OPSBOOK_SYSTEMS_DIR``, when set (and not empty): that directory;
2. otherwise the ``systems/`` directory next to the ``opsbook`` package. In a
   checkout (and the editable dev install) that is the repository's
   ``systems/``; ``pip install .`` (the Docker image) ships the inventories
   there too, as package data, so an installed opsbook finds the inventories
   it was built from.

A missing directory and an unknown system are ``InventoryError`` naming the
directory and which of the two rules chose it.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SYSTEMS_ENV = "OPSBOOK_SYSTEMS_DIR"


def systems_dir(environ: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """The inventory directory and the rule that chose it (see the module docstring)."""
    if environ.get(SYSTEMS_ENV):
        return Path(environ[SYSTEMS_ENV]), f"set by {SYSTEMS_ENV}"
    return Path(__file__).resolve().parent.parent / "systems", f"next to the opsbook package; {SYSTEMS_ENV} is not set"


SYSTEMS_DIR, SYSTEMS_DIR_RULE = systems_dir()

REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


@functools.lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region of every partition in botocore's partition data (installed with boto3)."""
    import botocore

    data = json.loads((Path(botocore.__file__).parent / "data" / "partitions.json").read_text(encoding="utf-8"))
    return frozenset(r for p in data["partitions"] for r in p.get("regions", {}))


def check_region(v: str) -> str:
    if not REGION_RE.match(v):
        raise ValueError(f"{v!r} is not an AWS region name (like us-east-2)")
    if v not in known_regions():
        raise ValueError(f"{v!r} is not a region AWS has (botocore's partition data); a typo? (like ap-northeast-2)")
    return v


Region = Annotated[str, AfterValidator(check_region)]


def _check_tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name like Asia/Seoul)") from None
    return v


class InventoryError(ValueError):
    """A broken or unknown inventory. The message names the file, field and problem."""


# --- names AWS accepts -------------------------------------------------------------
# A resource name the service itself would refuse (and shell text like `x; rm -rf /`, `$(...)`) is a field error before
# any call. The rules are AWS's: taken from botocore's service models (the shape's pattern, min and max, named in
# ``botocore``; tests/opsbook/test_inventory.py checks them against the installed botocore) and, where the model has
# none (S3, SQS, ECS, SNS, RDS, ELB, API Gateway), from the service's documented naming rules.


_SHELLISH = set(" \t\r\n;&|$`'\"\\<>(){}[]!*?~#%^,=")


@dataclass(frozen=True)
class NameRule:
    """A service's naming rule: ``pattern`` (the whole name must match), ``min_length``..``max_length`` characters;
    ``arn``: a pattern for the resource's ARN, accepted instead; ``check``: a further test (None when it passes, else why)."""

    what: str
    pattern: str
    min_length: int
    max_length: int
    rule: str
    botocore: str = ""
    arn: str = ""
    check: Callable[[str], str | None] | None = None

    def __call__(self, v: str) -> str:
        if self.arn and v.startswith("arn:"):
            if re.fullmatch(self.arn, v):
                return v
            raise ValueError(f"{v[:120]!r} is not a valid ARN for {self.what}; use one matching {self.arn}")
        bad = self._problem(v)
        if bad:
            raise ValueError(f"{v[:80]!r} is not {self.what}: {bad}; use {self.rule}{', or its ARN' if self.arn else ''}")
        return v

    def _problem(self, v: str) -> str | None:
        if not self.min_length <= len(v) <= self.max_length:
            return f"{len(v)} characters, not {self.min_length}-{self.max_length}"
        if not re.fullmatch(self.pattern, v):
            odd = [c for c in dict.fromkeys(v) if (c in _SHELLISH or not c.isprintable()) and not re.fullmatch(self.pattern, f"ab{c}ab")]
            return f"{''.join(odd)!r} not allowed" if odd else "a character or where it stands breaks the rule"
        return self.check(v) if self.check else None


def aws_name(rule: NameRule) -> Any:
    """``Annotated[str, ...]`` checked by ``rule`` (the rule rides along in the metadata, for opsbook.docs)."""
    return Annotated[str, AfterValidator(rule), rule]


def _bucket_check(v: str) -> str | None:
    if len(v) > 63 or re.search(r"[A-Z_]", v):  # a bucket created in us-east-1 before March 2018: the legacy rule only
        return None
    if ".." in v or ".-" in v or "-." in v:
        return "two periods, or a period next to a hyphen"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", v):
        return "formatted as an IP address"
    if v.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or v.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        return "a prefix or suffix S3 reserves"
    return None


def _rds_check(v: str) -> str | None:
    return "two hyphens in a row or a hyphen at the end" if "--" in v or v.endswith("-") else None


_PARTITION = r"aws[a-zA-Z-]*"
_REGION_ARN = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d"
DYNAMODB_TABLE = NameRule("a DynamoDB table name", r"[a-zA-Z0-9_.-]+", 3, 255, "3-255 of A-Z a-z 0-9 _ . -",
                          botocore="dynamodb TableName")
LAMBDA_FUNCTION = NameRule("a Lambda function name", r"[a-zA-Z0-9_-]+", 1, 64, "1-64 of A-Z a-z 0-9 - _",
                           botocore="lambda FunctionName",
                           arn=rf"arn:{_PARTITION}:lambda:{_REGION_ARN}:\d{{12}}:function:[a-zA-Z0-9_-]{{1,64}}")
LAMBDA_ALIAS = NameRule("a Lambda alias", r"(?!^[0-9]+$)[a-zA-Z0-9_-]+", 1, 128, "1-128 of A-Z a-z 0-9 - _, not all digits",
                        botocore="lambda Alias")
LOG_GROUP = NameRule("a CloudWatch Logs group name", r"[.\-_/#A-Za-z0-9]+", 1, 512, "1-512 of A-Z a-z 0-9 . - _ / #",
                     botocore="logs LogGroupName")
S3_BUCKET = NameRule("an S3 bucket name", r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]", 3, 255,
                     "3-63 of a-z 0-9 . -, beginning and ending with a letter or digit (a legacy us-east-1 bucket: 3-255 of "
                     "A-Z a-z 0-9 . - _)", check=_bucket_check)
SQS_QUEUE = NameRule("an SQS queue name", r"[A-Za-z0-9_-]+(\.fifo)?", 1, 80, "1-80 of A-Z a-z 0-9 - _, a FIFO queue ending in .fifo")
ECS_NAME = NameRule("an ECS cluster or service name", r"[A-Za-z0-9_-]+", 1, 255, "1-255 of A-Z a-z 0-9 - _")
TARGET_GROUP = NameRule("a target group name", r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", 1, 32,
                        "1-32 of A-Z a-z 0-9 -, not beginning or ending with -",
                        arn=rf"arn:{_PARTITION}:elasticloadbalancing:{_REGION_ARN}:\d{{12}}:targetgroup/[A-Za-z0-9-]{{1,32}}/[0-9a-f]+")
# OpenSearch Service takes 3-28 characters (botocore); up to 63 here (a host name label) because the seed's own domain,
# hr-resource-optimization-team2, has 30: the characters are AWS's rule, the length is wider by that much.
OPENSEARCH_DOMAIN = NameRule("an OpenSearch domain name", r"[a-z][a-z0-9-]+", 3, 63, "3-63 of a-z 0-9 -, beginning with a letter "
                             "(OpenSearch Service creates 3-28)", botocore="opensearch DomainName")
OPENSEARCH_INDEX = NameRule("an OpenSearch index name", r'(?!\.\.?$)[^_ ,:"+/*\\|?#><A-Z-][^ ,:"+/*\\|?#><A-Z]*', 1, 255,
                            "1-255 characters, lowercase, none of space , : \" + / * \\ | ? # > <, not beginning with _ or -",
                            botocore="opensearch IndexName")
SNAPSHOT_REPOSITORY = NameRule("an OpenSearch snapshot repository name", r"[a-z0-9][a-z0-9._-]*", 1, 255,
                               "1-255 of a-z 0-9 . _ -, beginning with a letter or digit")
API_NAME = NameRule("an API Gateway API name", r"[A-Za-z0-9._-](?:[A-Za-z0-9 ._-]*[A-Za-z0-9._-])?", 1, 128,
                    "1-128 of A-Z a-z 0-9 . _ - and inner spaces")
API_STAGE = NameRule("an API Gateway stage name", r"[A-Za-z0-9_-]+", 1, 128, "1-128 of A-Z a-z 0-9 - _")
SNS_TOPIC = NameRule("an SNS topic name", r"[A-Za-z0-9_-]+(\.fifo)?", 1, 256, "1-256 of A-Z a-z 0-9 - _, a FIFO topic ending in .fifo",
                     arn=rf"arn:{_PARTITION}:sns:{_REGION_ARN}:\d{{12}}:[A-Za-z0-9_-]{{1,256}}(\.fifo)?")
COGNITO_POOL = NameRule("a Cognito user pool name or id", r"[\w\s+=,.@-]+", 1, 128, "1-128 of letters, digits, spaces and + = , . @ - _",
                        botocore="cognito-idp UserPoolNameType")
COGNITO_POOL_ID = NameRule("a Cognito user pool id", r"[\w-]+_[0-9a-zA-Z]+", 1, 55, "REGION_ID, like ap-northeast-2_AbC123",
                           botocore="cognito-idp UserPoolIdType")
RDS_INSTANCE = NameRule("an RDS DB instance identifier", r"[A-Za-z][A-Za-z0-9-]*", 1, 63,
                        "1-63 of A-Z a-z 0-9 -, beginning with a letter", check=_rds_check)
SECRET = NameRule("a Secrets Manager secret name", r"[A-Za-z0-9/_+=.@-]+", 1, 512, "1-512 of A-Z a-z 0-9 / _ + = . @ -",
                  botocore="secretsmanager NameType",
                  arn=rf"arn:{_PARTITION}:secretsmanager:{_REGION_ARN}:\d{{12}}:secret:[A-Za-z0-9/_+=.@-]+")
KMS_ALIAS = NameRule("a KMS alias", r"alias/[a-zA-Z0-9:/_-]+", 7, 256, "alias/ then 1-250 of A-Z a-z 0-9 : / _ -",
                     botocore="kms AliasNameType")
ECR_REPOSITORY = NameRule("an ECR repository name", r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*", 2, 256,
                          "2-256 of a-z 0-9 and single . _ - / between them", botocore="ecr RepositoryName")
IAM_ROLE = NameRule("an IAM role name", r"[\w+=,.@-]+", 1, 64, "1-64 of letters, digits and + = , . @ - _", botocore="iam roleNameType",
                    arn=rf"arn:{_PARTITION}:iam::\d{{12}}:role/([\w+=,.@-]+/)*[\w+=,.@-]{{1,64}}")
METRIC_NAMESPACE = NameRule("a CloudWatch namespace", r"[^:\x00-\x1f\x7f][^\x00-\x1f\x7f]*", 1, 255,
                            "1-255 characters, no control character, not beginning with :", botocore="cloudwatch Namespace")
METRIC_TEXT = NameRule("a CloudWatch name", r"[^\x00-\x1f\x7f]+", 1, 255, "1-255 characters, no control character",
                       botocore="cloudwatch MetricName")
ALARM_NAME = NameRule("a CloudWatch alarm name", r"[^\x00-\x1f\x7f]+", 1, 255, "1-255 characters, no control character",
                      botocore="cloudwatch AlarmName")
DOMAIN_NAME = NameRule("a domain name", r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}", 1, 253,
                       "labels of A-Z a-z 0-9 - joined by dots, optionally beginning with *.")
TAG_KEY = NameRule("a tag key", r"[\w\s.:/=+@-]+", 1, 128, "1-128 of letters, digits, spaces and _ . : / = + - @")
TAG_VALUE = NameRule("a tag value", r"[\w\s.:/=+@-]*", 0, 256, "0-256 of letters, digits, spaces and _ . : / = + - @")
PREFECT_BLOCK = NameRule("a Prefect block name", r"[a-z0-9-]+", 1, 255, "a-z 0-9 - (Prefect's rule for block names)")

# Upper bounds of thresholds (a threshold of 1e30 is a typo, never a policy)
MAX_COUNT = 10**9
MAX_TOKENS = 10**13
MAX_DAYS = 3650
HOURS_A_YEAR = 24 * 366
MINUTES_A_WEEK = 7 * 24 * 60
SECONDS_A_DAY = 24 * 3600
SQS_MAX_MINUTES = 14 * 24 * 60  # SQS keeps a message 14 days at most
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)

TableName = aws_name(DYNAMODB_TABLE)
FunctionName = aws_name(LAMBDA_FUNCTION)
LogGroupName = aws_name(LOG_GROUP)
BucketName = aws_name(S3_BUCKET)
QueueName = aws_name(SQS_QUEUE)
EcsName = aws_name(ECS_NAME)
DomainName = aws_name(OPENSEARCH_DOMAIN)
SecretName = aws_name(SECRET)
AttributeName = aws_name(NameRule("a DynamoDB key attribute name", r"(?s).+", 1, 255, "1-255 characters",
                                  botocore="dynamodb KeySchemaAttributeName"))
DIMENSION_VALUE = NameRule("a CloudWatch dimension value", r"[^\x00-\x1f\x7f]+", 1, 1024, "1-1024 characters, no control character",
                           botocore="cloudwatch DimensionValue")


class Strict(BaseModel):
    """Every inventory section: unknown keys refused, no inf or NaN, and its thresholds in order (``order_rules``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # (a, b): a must not exceed b, besides every FOO_warn.../FOO_crit... pair found by name (a WARN comes before a CRIT)
    ORDERED: ClassVar[tuple[tuple[str, str], ...]] = ()
    # warn fields whose CRIT is the lower value (days left: fewer is worse)
    LOWER_IS_WORSE: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def order_rules(cls) -> list[tuple[str, str]]:
        """(a, b) pairs where a must not exceed b: each ``*warn*`` field with its ``*crit*`` twin, then ``ORDERED``."""
        pairs = []
        for name in cls.model_fields:
            twin = name.replace("warn", "crit", 1)
            if "warn" in name and twin in cls.model_fields:
                pairs.append((twin, name) if name in cls.LOWER_IS_WORSE else (name, twin))
        return pairs + list(cls.ORDERED)

    @model_validator(mode="after")
    def _in_order(self) -> Strict:
        for low, high in self.order_rules():
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} must not exceed {high} ({a} > {b}): lower {low} or raise {high}")
        return self


# --- resources -------------------------------------------------------------------


class Discovery(Strict):
    """Resources found by tag, in addition to the explicit names (a union)."""

    tags: dict[aws_name(TAG_KEY), aws_name(TAG_VALUE)] = Field(default_factory=dict, description="e.g. {Team: Team2}")


class LambdaFunction(Strict):
    name: FunctionName
    aliases: list[aws_name(LAMBDA_ALIAS)] = Field(default_factory=list)
    log_group: LogGroupName | None = None
    expected_memory_mb: int | None = Field(None, ge=128, le=10240)
    expected_timeout_s: int | None = Field(None, ge=1, le=900)
    sqs_source: QueueName | None = Field(None, description="queue feeding this function (event source)")
    bedrock: bool = Field(False, description="calls Amazon Bedrock (diagnose-bedrock-throttling reads its ThrottlingException lines)")

    @property
    def log_group_name(self) -> str:
        return self.log_group or f"/aws/lambda/{self.name}"


class DynamoTable(Strict):
    name: TableName
    partition_key: AttributeName = "id"
    sort_key: AttributeName | None = None
    created_at_attribute: AttributeName | None = Field(
        None, description="count items created yesterday (system time zone) by this attribute"
    )
    created_at_format: Literal["iso8601", "epoch_seconds", "epoch_millis"] = "iso8601"
    min_items_yesterday: int = Field(1, ge=0, le=10**9, description="fewer items created yesterday is a WARN")
    user_attribute: AttributeName | None = None
    backup_required: bool = False
    backup_max_age_hours: float = Field(26, gt=0, le=HOURS_A_YEAR)
    max_restore_size_gb: float = Field(10, gt=0, le=10**6)


class OpenSearchDomain(Strict):
    name: DomainName
    indices: list[aws_name(OPENSEARCH_INDEX)] = Field(default_factory=list)
    endpoint: str | None = Field(None, description="override of the domain endpoint (https://... or http://127.0.0.1:...)")
    snapshot_repository: aws_name(SNAPSHOT_REPOSITORY) | None = Field(None, description=(
        "the snapshot repository registered on the cluster (000: backup_repo): backup-verify checks its snapshots' age, "
        "dr-test restores from it, restore-index restores from it (backup_repo when unset)"))


class ApiGatewayApi(Strict):
    name: aws_name(API_NAME)
    stage: aws_name(API_STAGE) = "prod"
    integration_timeout_s: int = Field(29, ge=1, le=900, description="29 s unless a quota increase raised it")
    functions: list[FunctionName] = Field(default_factory=list, description="Lambda functions behind this API (besides those its integrations name)")


class EcsService(Strict):
    ORDERED = (("min_tasks", "max_tasks"),)

    cluster: EcsName
    service: EcsName
    log_group: LogGroupName | None = Field(None, description="the service's log group (its tasks' awslogs-group): daily-health and emergency-check "
                                  "read the per-agent execution_time lines of the last hour from it (001 성능 모니터링)")
    target_group: aws_name(TARGET_GROUP) | None = None
    min_tasks: int | None = Field(None, ge=0, le=5000)
    max_tasks: int | None = Field(None, ge=0, le=5000)
    agents: list[str] = Field(default_factory=list, description=(
        "the agents (containers of the product's pipeline, e.g. T-Developer's Parser) this service runs: restart-service "
        "agent=NAME restarts the service that lists NAME (ECS restarts whole tasks, never one container); an agent no "
        "service lists restarts the system's service as a whole, and the plan says so"))


class S3Bucket(Strict):
    name: BucketName
    size_warn_gb: float | None = Field(None, gt=0, le=10**9)
    versioning_required: bool = False
    replication_required: bool = False
    tmp_prefix: str | None = None


class LogGroup(Strict):
    name: LogGroupName
    audit: bool = False
    error_pattern: str = "ERROR"


PLACEHOLDERS = {"{function}": "lambda_functions", "{table}": "dynamodb_tables", "{api}": "api_gateway_apis",
                "{queue}": "sqs_queues", "{service}": "ecs_services", "{domain}": "opensearch_domains"}


class DeclaredAlarm(Strict):
    """An alarm the seed calls for. ``name``: an exact name, a template with one placeholder (``{function}``, ``{table}``,
    ``{api}``, ``{queue}``, ``{service}``, ``{domain}``: one alarm per resource of that kind, named and tag-discovered),
    or a glob (``*`` ``?``): at least one alarm matches."""

    name: aws_name(ALARM_NAME)
    source: str = Field("", description="where the seed calls for it (shown in the finding)")

    @field_validator("name")
    @classmethod
    def _one_placeholder(cls, v: str) -> str:
        found = re.findall(r"\{[^}]*\}", v)
        unknown = [p for p in found if p not in PLACEHOLDERS]
        if unknown:
            raise ValueError(f"{v!r}: unknown placeholder {unknown[0]} (use one of {', '.join(PLACEHOLDERS)})")
        if len(found) > 1:
            raise ValueError(f"{v!r}: at most one placeholder")
        if found and any(c in v for c in "*?["):
            raise ValueError(f"{v!r}: a placeholder and a glob cannot be combined")
        return v

    @property
    def placeholder(self) -> str | None:
        return next((p for p in PLACEHOLDERS if p in self.name), None)

    @property
    def is_pattern(self) -> bool:
        return any(c in self.name for c in "*?[")


class AlarmFilter(Strict):
    """Case-insensitive substrings, or globs when they contain * ? or [."""

    name_filters: list[str] = Field(default_factory=list)
    declared: list[DeclaredAlarm] = Field(
        default_factory=list, description="alarms that must exist, have actions and data (daily-health: missing, no actions, "
                                          "INSUFFICIENT_DATA or an action topic that does not exist is a WARN named after the alarm)")
    insufficient_data_warn_minutes: int = Field(60, ge=0, le=MINUTES_A_WEEK, description="a declared alarm in INSUFFICIENT_DATA this long is a WARN "
                                                                       "(its metric stopped, or never started)")
    priorities: dict[str, Literal["P0", "P1", "P2", "P3"]] = Field(
        default_factory=dict, description="alarm name glob -> priority (seed's alarm response table)"
    )
    runbooks: dict[str, str] = Field(
        default_factory=dict, description="alarm name glob -> runbook the alarm bridge starts when the alarm goes into ALARM"
    )

    def matches(self, alarm_name: str) -> bool:
        return any(name_matches(p, alarm_name) for p in self.name_filters)


class CustomMetric(Strict):
    namespace: aws_name(METRIC_NAMESPACE)
    name: aws_name(METRIC_TEXT)
    statistic: str = "Sum"
    unit: str | None = None
    dimensions: dict[aws_name(METRIC_TEXT), aws_name(DIMENSION_VALUE)] = Field(default_factory=dict)
    slo: float | None = Field(None, ge=-1e12, le=1e12)
    slo_kind: Literal["max", "min"] | None = None


class SqsQueue(Strict):
    name: QueueName
    dlq: QueueName | None = None
    consumer_function: FunctionName | None = None
    redrive_rate_per_s: float = Field(50, gt=0, le=3000, description="dlq-redrive: messages moved per second at most")


class Endpoint(Strict):
    """A URL users reach, probed by daily-health and emergency-check (seed 002's health check after a deploy:
    ``curl -f https://api.todo-app.com/health``): status, latency and, for https, the certificate's expiry. Not an AWS
    call: an HTTP request from where the run runs."""

    LOWER_IS_WORSE = frozenset({"tls_expiry_warn_days"})  # days left: CRIT at fewer days than WARN

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = Field(description="http:// or https:// URL")
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: list[int] = Field(default_factory=list, description="healthy status codes; empty: any 2xx or 3xx (redirects are not followed)")
    expect_body: str | None = Field(None, description="a substring the body must contain (the first 64 KiB are read)")
    timeout_s: float = Field(5, gt=0, le=30, description="connect and read timeout; no answer by then is CRIT (unreachable)")
    latency_warn_ms: float = Field(1000, gt=0, le=600_000, description="a slower answer is WARN")
    latency_crit_ms: float = Field(3000, gt=0, le=600_000, description="a slower answer is CRIT")
    tls_expiry_warn_days: int = Field(30, ge=0, le=825, description="https: a certificate expiring within this many days is WARN")
    tls_expiry_crit_days: int = Field(7, ge=0, le=825, description="https: ... CRIT")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parsed = urlsplit(v)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL with a host")
        if parsed.username or parsed.password:
            raise ValueError(f"{parsed.scheme}://{parsed.hostname}...: credentials do not belong in an inventory URL")
        return v

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 100 <= s <= 599]
        if bad:
            raise ValueError(f"{bad} are not HTTP status codes (100-599)")
        return v

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class Paging(Strict):
    """A paging channel besides SNS: CRIT findings (``min_status``) go to it once per incident, and a resolve when they clear.

    ``pagerduty``: the PagerDuty Events API v2 (the integration's routing key is the secret); ``webhook``: the same
    events as JSON to ``url`` (the secret, if any, as ``Authorization: Bearer``). The secret is read at send time from
    the environment variable ``routing_key_env`` or the Prefect Secret block ``secret_block``, never from this file."""

    kind: Literal["pagerduty", "webhook"]
    url: str | None = Field(None, description=f"where events are posted; pagerduty: {PAGERDUTY_EVENTS_URL} unless set")
    routing_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                        description="environment variable holding the routing key (webhook: the bearer token)")
    secret_block: aws_name(PREFECT_BLOCK) | None = Field(None, description="Prefect Secret block holding the routing key (or the bearer token)")
    min_status: Literal["CRIT", "WARN"] = Field("CRIT", description="the least severe finding that pages")

    @model_validator(mode="after")
    def _where_and_secret(self) -> Paging:
        if self.routing_key_env and self.secret_block:
            raise ValueError("give routing_key_env or secret_block, not both")
        if self.kind == "pagerduty" and not (self.routing_key_env or self.secret_block):
            raise ValueError("pagerduty needs its routing key: routing_key_env or secret_block")
        if self.kind == "webhook" and not self.url:
            raise ValueError("webhook needs a url")
        if self.url and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url must be http(s)://host/...: {self.url[:40]!r}")
        return self

    @property
    def endpoint(self) -> str:
        return self.url or PAGERDUTY_EVENTS_URL


class Notifications(Strict):
    sns_topic: aws_name(SNS_TOPIC) | None = Field(None, description="topic name or ARN")
    prefect_block: aws_name(PREFECT_BLOCK) | None = Field(None, description="name of a Prefect notification block")
    paging: Paging | None = Field(None, description="a paging channel (PagerDuty or a webhook) for CRIT findings, once per incident")


class Cognito(Strict):
    user_pool_name: aws_name(COGNITO_POOL) | None = None
    user_pool_id: aws_name(COGNITO_POOL_ID) | None = None


class SecurityLogs(Strict):
    """Failed logins and rate-limit events (T-Developer's daily security check)."""

    log_group: LogGroupName
    failed_login_pattern: str = '"authentication failed"'
    rate_limit_pattern: str = '"rate_limit_exceeded"'


class Thresholds(Strict):
    # the agents' and the pipeline's p95 targets are WARNs that slow_response_crit_s makes CRIT
    ORDERED = (("agent_execution_target_s", "slow_response_crit_s"), ("pipeline_p95_slo_s", "slow_response_crit_s"))

    log_errors_warn: int = Field(1, ge=1, le=MAX_COUNT, description="ERROR lines in 24 h from which a log group is WARN")
    log_errors_crit: int = Field(100, ge=1, le=MAX_COUNT)
    failed_logins_warn: int = Field(20, ge=1, le=MAX_COUNT)
    failed_logins_crit: int = Field(200, ge=1, le=MAX_COUNT)
    rate_limit_warn: int = Field(50, ge=1, le=MAX_COUNT)
    rate_limit_crit: int = Field(500, ge=1, le=MAX_COUNT)
    dlq_messages_warn: int = Field(1, ge=1, le=MAX_COUNT)
    dlq_messages_crit: int = Field(100, ge=1, le=MAX_COUNT)
    error_lines_budget: int = Field(10_000, ge=1, le=1_000_000, description="ERROR lines emergency-check reads in all (over every "
                                    "log group) to rank the messages of its window; when reached, the ranking and the counts of "
                                    "the groups cut are lower bounds, and the findings say so")
    availability_slo_pct: float | None = Field(None, gt=0, le=100, description="the availability SLO: daily-health (last 24 h) and "
                                               "weekly-report (this week and the one before) measure 1 - 5XX / requests of the system's "
                                               "APIs (API Gateway) and load-balanced ECS services (ALB) against it; none: not measured")
    availability_budget_warn_pct: float = Field(25, ge=0, le=100, description="WARN when less than this share of the window's error "
                                                "budget ((1 - SLO) x requests) is left; below the SLO is CRIT")
    availability_period_days: int = Field(30, ge=1, le=366, description="the SLO period the burn rate is told against (how long a "
                                          "period's budget lasts at the window's pace)")
    error_rate_slo_pct: float | None = Field(None, gt=0, le=100)
    pipeline_p95_slo_s: float | None = Field(None, gt=0, le=SECONDS_A_DAY)
    api_p95_slo_ms: float | None = Field(None, gt=0, le=600_000)
    ecs_cpu_target_pct: float = Field(70, gt=0, le=100, description="an ECS service's CPUUtilization Maximum over the last hour above "
                                      "this is WARN (001: CPU < 70 %)")
    ecs_memory_target_pct: float = Field(80, gt=0, le=100, description="... and its MemoryUtilization (001: memory < 80 %)")
    agent_execution_target_s: float = Field(10, gt=0, le=SECONDS_A_DAY, description="an agent's execution_time p95 over the last hour (the service's log "
                                            "lines) above this is WARN (001: each agent < 10 s)")
    slow_response_crit_s: float = Field(60, gt=0, le=SECONDS_A_DAY, description="an ALB target response time p95, an agent's or the pipeline's execution "
                                        "time p95 above this is CRIT (001 P1 서비스 성능 저하: responses > 60 s)")
    lambda_duration_warn_pct: float = Field(80, gt=0, le=100, description="a function's Duration p99 over daily-health's window at or "
                                            "above this share of its configured timeout is WARN")
    lambda_duration_crit_pct: float = Field(95, gt=0, le=100, description="... and CRIT (the next invocations time out)")
    queue_age_warn_minutes: float = Field(15, gt=0, le=SQS_MAX_MINUTES, description="a worker's source queue (sqs_queues[].consumer_function) whose oldest "
                                          "message is this old (AWS/SQS ApproximateAgeOfOldestMessage, Maximum over the last 15 min) is WARN")
    queue_age_crit_minutes: float = Field(60, gt=0, le=SQS_MAX_MINUTES, description="... and CRIT (the work is stuck)")


class Schedule(Strict):
    cron: str | None = Field(None, description="none: a deployment started by another run or by hand, not on a clock")
    runbook: str | None = Field(None, description="defaults to the schedule's key")
    timezone: str | None = Field(None, description="defaults to the system's time zone")
    parameters: dict = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 5:
            raise ValueError(f"cron {v!r} must have 5 fields (minute hour day month weekday)")
        if v is not None:
            from prefect.client.schemas.schedules import CronSchedule  # the parser the deployment's schedule will use

            try:
                CronSchedule(cron=v)
            except ValidationError:
                raise ValueError(f"cron {v!r} has a value out of range (minute 0-59, hour 0-23, day 1-31, month 1-12, "
                                 "weekday 0-6 or MON-SUN)") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return v if v is None else _check_tz(v)


class EscalationLevel(Strict):
    level: str
    who: str
    respond_within_minutes: int = Field(ge=0, le=30 * 24 * 60)
    when: str = ""
    breach: bool = Field(False, description="the level a suspected breach (a security incident; an IAM or exposure finding at "
                                            "CRIT) goes to at once; at most one level")


class BillShock(Strict):
    """bill-shock-breaker (seed 003 scenario C): token budgets, where usage is read, what may be automatic."""

    namespace: aws_name(METRIC_NAMESPACE) = "LEH/AI"
    metric: aws_name(METRIC_TEXT) = "TokensUsed"
    statistic: str = "Sum"
    case_dimension: aws_name(METRIC_TEXT) = "CaseId"
    user_dimension: aws_name(METRIC_TEXT) = "UserId"
    global_metric: CustomMetric | None = Field(None, description="a series for total usage; default: the sum over cases")
    window_minutes: int = Field(15, ge=1, le=1440)
    baseline_hours: int = Field(24, ge=1, le=336, description="trailing window for a case's own baseline")
    case_budget_tokens: int = Field(200_000, ge=1, le=MAX_TOKENS, description="per case per window")
    user_budget_tokens: int = Field(500_000, ge=1, le=MAX_TOKENS, description="per user per window")
    spike_factor: float = Field(5.0, gt=1, le=1000, description="trip when a window exceeds factor x the case's baseline window")
    spike_min_tokens: int = Field(20_000, ge=0, le=MAX_TOKENS, description="ignore spikes below this many tokens a window")
    global_budget_tokens_per_hour: int = Field(5_000_000, ge=1, le=MAX_TOKENS)
    price_per_1k_tokens: float = Field(0.01, ge=0, le=1000, description="USD, for cost estimates")
    breaker_table: TableName = "leh-circuit-breakers"
    worker_function: FunctionName = "leh-ai-worker"
    source_queue: QueueName = "leh-ai-jobs"
    uploads_bucket: BucketName | None = None
    uploads_prefix: str = "uploads/"
    upload_log_group: LogGroupName | None = None
    upload_log_pattern: str = '"upload"'
    mass_upload_threshold: int = Field(100, ge=1, le=10**7, description="uploads per user per window that suggest an attack")
    cognito_user_pool: aws_name(COGNITO_POOL) | None = None
    auto_block_accounts: bool = False
    auto_pause_service: bool = False
    cooldown_minutes: int = Field(60, ge=5, le=MINUTES_A_WEEK, description="an OPEN case may half-open after this long under budget")
    top_n: int = Field(10, ge=1, le=100)
    retention_warn_fraction: float = Field(0.5, gt=0, lt=1, description="warn when a pause has lasted this share of the queue's retention")


_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*$"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback_host(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1)."""
    import ipaddress

    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CaseDatabase(Strict):
    """The SQL database holding LEH's ``cases`` table (seed 003 시나리오 B: ``UPDATE cases SET status = 'active' WHERE id =
    '{case_id}'`` on its RDS PostgreSQL), reached with psycopg 3. The password comes from Secrets Manager (``password_secret``:
    a plain string, or JSON with a ``password`` key as RDS keeps it) or from an environment variable (``password_env``), read at
    connect time and never shown. The sandbox points every case database at its local PostgreSQL (OPSBOOK_CASE_DB_ENDPOINT,
    loopback only)."""

    host: str = Field(min_length=1, description="the database's endpoint (an RDS instance's Endpoint.Address)")
    port: int = Field(5432, ge=1, le=65535)
    database: str = Field(min_length=1, description="the database (dbname) holding the cases table")
    user: str = Field(min_length=1, description="the database user opsbook connects as (needs SELECT and UPDATE on the table)")
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = Field(
        "require", description="libpq sslmode: TLS as RDS requires (verify-full with sslrootcert to check the RDS CA); "
        "disable only for a database on loopback")
    sslrootcert: str | None = Field(None, description="the CA bundle for verify-ca / verify-full (e.g. RDS's global-bundle.pem)")
    password_secret: SecretName | None = Field(None, description="Secrets Manager secret id or ARN holding the password")
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                     description="environment variable holding the password (read at connect time)")
    table: str = Field("cases", pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$",
                       description="the cases table (optionally schema.table)")
    id_column: str = Field("id", pattern=_SQL_NAME)
    status_column: str = Field("status", pattern=_SQL_NAME)
    connect_timeout_s: int = Field(10, ge=1, le=60)

    @model_validator(mode="after")
    def _auth_and_tls(self) -> CaseDatabase:
        if (self.password_secret is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_secret (a Secrets Manager secret id) and password_env "
                             "(an environment variable's name)")
        if self.sslmode == "disable" and not is_loopback_host(self.host):
            raise ValueError(f"sslmode disable is allowed only for a database on loopback, not {self.host}: use require "
                             "(RDS), or verify-full with sslrootcert")
        if self.sslmode.startswith("verify") and not self.sslrootcert:
            raise ValueError(f"sslmode {self.sslmode} needs sslrootcert (the CA bundle, e.g. RDS's global-bundle.pem)")
        return self


class CaseStore(Strict):
    """LEH's cases (seed 003 시나리오 B): their status in an SQL table (``database``), their evidence in a DynamoDB table,
    one search index a case built from that evidence with the product's mapping (``index_mapping``)."""

    database: CaseDatabase | None = Field(None, description="the SQL database holding the cases table (RDS PostgreSQL); "
                                          "reindex-case says what to configure without it")
    case_key: AttributeName = Field("case_id", description="the evidence table's partition key (the case id)")
    evidence_table: TableName = "leh-evidence"
    evidence_key: AttributeName = "evidence_id"
    opensearch_domain: DomainName = "leh-cases"
    index_template: aws_name(OPENSEARCH_INDEX) = "evidence-{case_id}"
    index_mapping: dict[str, Any] | None = Field(None, description="the product's mapping of a case's index (the index's "
                                                 "``mappings``: {properties: {field: {type: ...}}}): a rebuilt index is created "
                                                 "with it, an index whose fields differ from it is rebuilt")


DEFAULT_EXTERNAL_ERROR_PATTERNS = [
    r"\b429\b", r"RateLimitError", r"Too Many Requests", r"rate[ _-]?limit",
    r"\b50[0234]\b", r"InternalServerError", r"ServiceUnavailable", r"Bad Gateway", r"Gateway Time-?out",
    r"APITimeoutError", r"APIConnectionError", r"ReadTimeout", r"ConnectTimeout", r"timed out.*(openai|api\.)", r"(openai|OpenAI).*timed? ?out",
]


class Reprocess(Strict):
    """How one stuck upload is processed again (003 시나리오 A, 3. 코드 버그: after the hot-fix, ``POST /admin/reprocess-evidence
    {evidence_id}``): through the product's admin API when ``admin_api_url`` is set, else by sending its job to the worker's
    queue again (``message``: the job's JSON body, each value a template over the upload's key values, ``{key}`` and
    ``{uploaded_at}``). SQS delivers at least once and the API may be retried: the worker's idempotency is the product's."""

    admin_api_url: str | None = Field(None, description="the full URL of POST /admin/reprocess-evidence (body {\"evidence_id\": ...}); "
                                      "none: re-enqueue the job instead")
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                  description="environment variable holding the admin API's bearer token (read at call time)")
    timeout_s: float = Field(10, gt=0, le=60)
    queue: QueueName | None = Field(None, description="re-enqueue: the queue (default: the worker's source queue)")
    message: dict[str, str] = Field(default_factory=lambda: {"evidence_id": "{evidence_id}", "case_id": "{case_id}", "s3_key": "{key}",
                                                             "task": "summarize-evidence", "reprocess": "true"},
                                    description="re-enqueue: the job's body, each value a template ({evidence_id}, {case_id}, {key}, {uploaded_at})")
    max_items: int = Field(50, ge=1, le=1000, description="at most this many evidences a plan (the rest: the next run)")

    @field_validator("admin_api_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            parsed = urlsplit(v)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username or parsed.password:
                raise ValueError(f"{v!r} is not an http(s) URL with a host and without credentials")
        return v


class StuckProcessing(Strict):
    """Queue-fed work that stops moving (seed 003 시나리오 A, "uploads succeed, the UI shows 'processing' forever"): where
    daily-health, emergency-check and diagnose-stuck-processing look besides the worker's trigger and queue (every
    ``sqs_queues`` entry with a ``consumer_function``; thresholds ``queue_age_*_minutes``). Defaults come from
    ``bill_shock`` (uploads bucket and prefix) and ``case_store`` (the evidence table) where those sections exist."""

    uploads_bucket: BucketName | None = Field(None, description="where uploads land (default: bill_shock.uploads_bucket)")
    uploads_prefix: str | None = Field(None, description="the uploads' prefix (default: bill_shock.uploads_prefix)")
    results_table: TableName | None = Field(None, description="the table holding one item per processed upload (default: case_store.evidence_table)")
    upload_key_pattern: str = Field(
        r"^uploads/[^/]+/(?P<case_id>[^/]+)/(?P<evidence_id>[^/]+?)(\.[^./]+)?$",
        description="regex over an upload's key with named groups for the results table's partition (and sort) key: ``case_id`` "
                    "and ``evidence_id``, or the table's own key names; keys that do not match are counted, not judged")
    reconcile_hours: float = Field(24, gt=0, le=24 * 14, description="uploads of the last this many hours are reconciled")
    reconcile_sample: int = Field(200, ge=1, le=5000, description="at most this many (newest) uploads are looked up (BatchGetItem, 100 a call)")
    reconcile_list_max: int = Field(10_000, ge=100, le=1_000_000, description="at most this many keys are listed (1,000 a call); beyond, the "
                                    "counts are a lower bound and say so")
    unprocessed_warn: int = Field(1, ge=1, le=10**7, description="uploads older than queue_age_warn_minutes without a result: WARN from this many")
    unprocessed_crit: int = Field(20, ge=1, le=10**7, description="... CRIT from this many")
    worker_error_filter: str = Field('?ERROR ?Exception ?"Task timed out"', description="CloudWatch Logs filter pattern of the worker's "
                                     "error lines (each line read is classified again: lines with none of ERROR, Error, Exception, "
                                     "Traceback, 'Task timed out' are not errors)")
    external_error_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTERNAL_ERROR_PATTERNS), description=(
        "regexes: an error line matching one is the external provider's (OpenAI 429/5xx/timeouts), any other error line internal"))
    provider: str = Field("OpenAI", description="the external provider's name, in findings")
    reprocess: Reprocess | None = Field(None, description="diagnose-stuck-processing's reprocess-evidence step (code bug, once the "
                                        "worker changed since the failures began); none: re-enqueue with the default message")
    provider_status: Endpoint | None = Field(None, description="the provider's status endpoint (a Statuspage status.json, or any URL "
                                             "answering 2xx when healthy); probed like endpoints, from where the run runs")

    @field_validator("upload_key_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return v

    @field_validator("external_error_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a regular expression: {exc}") from None
        return v


class RdsInstance(Strict):
    identifier: aws_name(RDS_INSTANCE)
    snapshot_max_age_hours: float = Field(26, gt=0, le=HOURS_A_YEAR)


class DisasterRecovery(Strict):
    """dr-test, backup-verify and the restore runbooks' settings (seeds 000/001/002: RTO a table 30 min, a region 2 h)."""

    rto_table_minutes: float = Field(30, gt=0, le=MINUTES_A_WEEK)
    rto_index_minutes: float = Field(60, gt=0, le=MINUTES_A_WEEK, description="restore-index and dr-test's index restores: from the snapshot restore's start to the restored "
                                     "index verified and its alias switched")
    rto_region_minutes: float = Field(120, gt=0, le=MINUTES_A_WEEK)
    test_bucket: BucketName | None = Field(None, description="S3 bucket for restored objects; created and tagged by the run when absent")
    opensearch_dr_domain: DomainName | None = Field(None, description="restore snapshots here; else into the source domain under drtest_")
    sample_items: int = Field(20, ge=1, le=1000)
    sample_objects: int = Field(5, ge=1, le=100)
    snapshot_max_age_hours: float = Field(26, gt=0, le=HOURS_A_YEAR, description="OpenSearch snapshots older than this are a finding")
    backup_max_age_hours: float = Field(26, gt=0, le=HOURS_A_YEAR)


class Audit(Strict):
    """maintenance-audit settings (000 보안 운영/데이터 정리, 001 월간 유지보수, 002 보안, 003 정기 점검)."""

    log_retention_days: int = Field(30, ge=1, le=3653, description="retention set on log groups that have none: one of the values "
                                    "CloudWatch Logs takes (" + ", ".join(map(str, LOG_RETENTION_DAYS)) + ")")
    required_tags: list[aws_name(TAG_KEY)] = Field(default_factory=list, description="tag keys every resource of the system must carry")
    iam_role_patterns: list[str] = Field(default_factory=list, description="substrings/globs naming the system's IAM roles")
    iam_unused_days: int = Field(90, ge=1, le=MAX_DAYS)
    runtime_deprecations: dict[str, str] = Field(default_factory=dict, description="runtime -> YYYY-MM-DD, overrides the built-in list")
    runtime_warn_days: int = Field(90, ge=1, le=MAX_DAYS)
    secrets: list[SecretName] = Field(default_factory=list)
    secret_rotation_max_days: int = Field(90, ge=1, le=MAX_DAYS)
    kms_key_aliases: list[aws_name(KMS_ALIAS)] = Field(default_factory=list)
    ecr_repositories: list[aws_name(ECR_REPOSITORY)] = Field(default_factory=list)
    security_group_patterns: list[str] = Field(default_factory=list)
    certificate_domains: list[aws_name(DOMAIN_NAME)] = Field(default_factory=list)
    certificate_warn_days: int = Field(30, ge=1, le=825)
    tmp_max_age_days: int = Field(7, ge=1, le=MAX_DAYS, description="tmp/ objects older than this should have been expired by the lifecycle rule")
    audit_sample_size: int = Field(200, ge=1, le=10000)
    audit_sample_seed: int = Field(42, ge=0, le=2**32 - 1)

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            above = min(d for d in LOG_RETENTION_DAYS if d >= v)
            raise ValueError(f"CloudWatch Logs keeps logs for one of {', '.join(map(str, LOG_RETENTION_DAYS))} days, not {v}: "
                             f"use {above}?")
        return v


class Reporting(Strict):
    """weekly-report settings."""

    report_bucket: BucketName | None = Field(None, description="where the HTML report is stored")
    report_prefix: str = "opsbook-reports/"
    cost_explorer: bool = True


class Remediation(Strict):
    """The policy the remediation and scaling runbooks stay within (issue 7)."""

    lambda_max_timeout_s: int = Field(900, ge=1, le=900, description="never propose a longer timeout (Lambda's limit is 900 s)")
    lambda_max_memory_mb: int = Field(10240, ge=128, le=10240, description="never propose more memory (Lambda's limit is 10240 MB)")
    lambda_timeout_headroom: float = Field(1.5, ge=1.1, le=10, description="proposed timeout = longest observed duration x this")
    sqs_visibility_factor: float = Field(6.0, ge=1, le=100, description="a queue-fed function's timeout stays <= visibility timeout / this (AWS: 6x)")
    dynamodb_prefer: Literal["on-demand", "provisioned"] = Field("on-demand", description="what a throttled provisioned table is moved to")
    dynamodb_max_capacity_units: int = Field(40000, ge=1, le=10**6, description="never propose more read or write units than this")
    dynamodb_capacity_headroom: float = Field(1.5, ge=1, le=10, description="proposed capacity = peak consumed x this")
    opensearch_disk_warn_pct: float = Field(85, gt=0, lt=100, description="a node above this disk use is a finding (OpenSearch's low watermark)")


class Security(Strict):
    """What security-incident may touch and who it must never lock out."""

    break_glass_roles: list[aws_name(IAM_ROLE)] = Field(default_factory=list, description="IAM role names or ARNs exempt from the "
                                                        "emergency deny-all bucket policy")
    secrets: list[SecretName] = Field(default_factory=list, description="secrets it may rotate (default: audit.secrets)")
    buckets: list[BucketName] = Field(default_factory=list, description="buckets it may lock (default: every s3_buckets entry)")


class Mutations(Strict):
    """Where mutating runbooks keep their leases and durable records (created on first use)."""

    state_table: TableName = Field("opsbook-state", description="DynamoDB table (pk, sk) for leases and action records")
    lease_ttl_s: int = Field(60, ge=10, le=3600, description="a lease lapses this long after its holder's last heartbeat "
                             "(renewed every quarter of it while the run lives): how long a re-run waits after a kill")
    approval_timeout_s: int = Field(3600, ge=10, le=7 * 86400)
    settle_timeout_s: int = Field(300, ge=5, le=3600)


class System(Strict):
    # read-only configuration that holds no Prefect futures: opsbook's tasks take it without Prefect walking its
    # fields at each task run (opsbook.iam.aws_task)
    opsbook_inert: ClassVar[bool] = True

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    source: str = Field("", description="the seed runbook this inventory comes from")
    region: Region
    account_id: str | None = Field(None, pattern=r"^\d{12}$")
    timezone: str = "Asia/Seoul"
    discovery: Discovery = Field(default_factory=Discovery)
    lambda_functions: list[LambdaFunction] = Field(default_factory=list)
    dynamodb_tables: list[DynamoTable] = Field(default_factory=list)
    opensearch_domains: list[OpenSearchDomain] = Field(default_factory=list)
    api_gateway_apis: list[ApiGatewayApi] = Field(default_factory=list)
    ecs_services: list[EcsService] = Field(default_factory=list)
    s3_buckets: list[S3Bucket] = Field(default_factory=list)
    log_groups: list[LogGroup] = Field(default_factory=list)
    alarms: AlarmFilter = Field(default_factory=AlarmFilter)
    custom_metrics: list[CustomMetric] = Field(default_factory=list)
    sqs_queues: list[SqsQueue] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(default_factory=list, description="HTTP endpoints users reach, probed by daily-health and emergency-check")
    notifications: Notifications = Field(default_factory=Notifications)
    cognito: Cognito | None = None
    security_logs: SecurityLogs | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    escalation: list[EscalationLevel] = Field(default_factory=list)
    mutations: Mutations = Field(default_factory=Mutations)
    remediation: Remediation = Field(default_factory=Remediation)
    security: Security = Field(default_factory=Security)
    bill_shock: BillShock | None = None
    rds_instances: list[RdsInstance] = Field(default_factory=list)
    dr: DisasterRecovery = Field(default_factory=DisasterRecovery)
    audit: Audit = Field(default_factory=Audit)
    reporting: Reporting = Field(default_factory=Reporting)
    case_store: CaseStore | None = None
    stuck_processing: StuckProcessing | None = Field(None, description="queue-fed work that stops moving: uploads reconciliation, "
                                                     "the worker's error split, the provider's status (see StuckProcessing)")
    schedules: dict[str, Schedule] = Field(default_factory=dict)

    @field_validator("escalation")
    @classmethod
    def _one_breach_level(cls, v: list[EscalationLevel]) -> list[EscalationLevel]:
        marked = [e.level for e in v if e.breach]
        if len(marked) > 1:
            raise ValueError(f"only one level may be marked breach: true (marked: {', '.join(marked)})")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    @model_validator(mode="after")
    def _unique_names(self) -> System:
        for field in ("lambda_functions", "dynamodb_tables", "opensearch_domains", "s3_buckets", "sqs_queues", "endpoints"):
            names = [r.name for r in getattr(self, field)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{field}: duplicate names {dupes}")
        return self

    # --- helpers used by every runbook ---------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def yesterday(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """[start, end) of yesterday in the system's time zone, as aware datetimes."""
        now = (now or datetime.now(self.tz)).astimezone(self.tz)
        today = datetime.combine(now.date(), time(0), tzinfo=self.tz)
        return today - timedelta(days=1), today

    def all_log_groups(self) -> list[LogGroup]:
        """Every function's log group plus the explicit ones, without repeats."""
        seen: dict[str, LogGroup] = {}
        for fn in self.lambda_functions:
            seen.setdefault(fn.log_group_name, LogGroup(name=fn.log_group_name))
        for lg in self.log_groups:
            seen[lg.name] = lg
        return list(seen.values())


def name_matches(pattern: str, name: str) -> bool:
    """Case-insensitive: a glob when the pattern has * ? or [, else a substring."""
    p, n = pattern.lower(), name.lower()
    if any(c in p for c in "*?["):
        return fnmatch.fnmatchcase(n, p)
    return p in n


# --- loading ---------------------------------------------------------------------


def _format_errors(path: Path, err: ValidationError) -> str:
    """One line (a monitor reads the first line): the file, then each problem as ``field PATH: what``, joined by ``;``."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; docs/inventory.md lists the fields)"
        problems.append(f"field {loc}: {' '.join(str(msg).split())}")
    return f"{path}: invalid inventory ({err.error_count()} problem(s)): " + "; ".join(problems)


# Where an inventory declares what to check: a list of resources, or a tag rule that discovers them.
RESOURCE_FIELDS = ("lambda_functions", "dynamodb_tables", "opensearch_domains", "api_gateway_apis", "ecs_services", "s3_buckets",
                   "log_groups", "sqs_queues", "rds_instances", "endpoints", "custom_metrics")


def declares_nothing(system: System) -> str | None:
    """None when the inventory names a resource or a discovery tag rule; else the problem and the fix."""
    if system.discovery.tags or system.alarms.declared or any(getattr(system, f) for f in RESOURCE_FIELDS):
        return None
    return (f"declares nothing to check: add resources under {', '.join(RESOURCE_FIELDS)} (or alarms.declared), "
            "or a discovery tag rule under discovery.tags (e.g. {Team: Team2})")


def unknown_runbooks(system: System, runbooks: list[str]) -> list[str]:
    """Problems, one a schedule or alarm rule naming a runbook that ``runbooks`` (the catalogue's names) lacks."""
    import difflib

    def problem(field: str, name: str) -> str:
        close = difflib.get_close_matches(name, runbooks, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"field {field}: unknown runbook {name!r} ({hint}runbooks: {', '.join(sorted(runbooks))})"

    out = []
    for key, sched in system.schedules.items():
        name = sched.runbook or key
        if name not in runbooks:
            out.append(problem(f"schedules.{key}{'.runbook' if sched.runbook else ''}", name))
    for pattern, name in system.alarms.runbooks.items():
        if name not in runbooks:
            out.append(problem(f"alarms.runbooks.{pattern}", name))
    return out


def _runbook_names() -> list[str]:
    """The catalogue's runbook names (opsbook.registry reads flows.CATALOGUE: data, no flow is imported)."""
    from opsbook import registry  # here: registry imports this module

    return list(registry.RUNBOOKS)


def _where(d: Path) -> str:
    return f"{d} ({SYSTEMS_DIR_RULE})" if d == Path(SYSTEMS_DIR) else f"{d} (given by the caller)"


def known_systems(directory: Path | None = None) -> list[str]:
    """Names of the inventories (``NAME.yaml``) in ``directory`` or the inventory directory."""
    d = Path(directory or SYSTEMS_DIR)
    if not d.is_dir():
        raise InventoryError(f"no inventory directory at {_where(d)}: point {SYSTEMS_ENV} at the directory holding the NAME.yaml files")
    return sorted(p.stem for p in d.glob("*.yaml"))


class _UniqueKeys:
    """A YAML mapping may not name a key twice (YAML keeps the last silently: a second `region:` would win)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unhashable key: PyYAML's own construction says what is wrong with it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


# PyYAML's safe loader in C where PyYAML was built with libyaml (the same documents, a tenth of the CPU: 1.5 ms
# against 14 ms an inventory, read at each run and each seeding), else in Python; both refuse a key named twice.
_SAFE_LOADER = type("SafeLoader", (_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})
_PY_LOADER = type("PySafeLoader", (_UniqueKeys, yaml.SafeLoader), {})


def _yaml_error(path: Path) -> str:
    """The Python loader's account of a document the C loader refused: it quotes the line and points at the column."""
    try:
        yaml.load(path.read_text(encoding="utf-8"), Loader=_PY_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        return str(exc)
    return "refused by libyaml, read by PyYAML's Python loader"  # the two loaders disagree: say so rather than nothing


def load_file(path: Path | str) -> System:
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader)
    except FileNotFoundError:
        raise InventoryError(f"{path}: file not found") from None
    except yaml.YAMLError:
        raise InventoryError(f"{path}: not valid YAML: {_yaml_error(path)}") from None
    if not isinstance(raw, dict):
        raise InventoryError(f"{path}: field (top level): must be a mapping of fields, got {type(raw).__name__}")
    try:
        system = System.model_validate(raw)
    except ValidationError as exc:
        raise InventoryError(_format_errors(path, exc)) from None
    if system.name != path.stem:
        raise InventoryError(f"{path}: field name: {system.name!r} must match the file name {path.stem!r}")
    problems = unknown_runbooks(system, _runbook_names())
    nothing = declares_nothing(system)
    if nothing:
        problems.append(nothing)
    if problems:
        raise InventoryError(f"{path}: invalid inventory ({len(problems)} problem(s)): " + "; ".join(problems))
    return system


def load_system(name_or_path: str, directory: Path | None = None) -> System:
    """Load by system name (``systems/NAME.yaml``) or by a path to a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return load_file(name_or_path)
    d = Path(directory or SYSTEMS_DIR)
    path = d / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(known_systems(d)) or "(none)"
        raise InventoryError(f"unknown system {name_or_path!r}; known systems: {known} (looked in {_where(d)})")
    return load_file(path)
