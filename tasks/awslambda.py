"""Lambda: functions present and Active, aliases present."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_alias, judge_duration, judge_function
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import System
from opsbook.resources import Discovered
from tasks.cloudwatch import peak, run_metric_queries


def function_names(system: System, found: Discovered) -> list[str]:
    """Explicit names and tag-discovered names, as a union (explicit first)."""
    names = [f.name for f in system.lambda_functions]
    return names + [n for n in found.lambda_functions if n not in names]


@aws_task(iam=["lambda:GetFunctionConfiguration", "lambda:GetAlias"], cache_policy=NO_CACHE)
def check_functions(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    c = aws.client("lambda", system.region)
    named = {f.name for f in system.lambda_functions}
    names = function_names(system, found)
    results = aws.parallel(lambda n: c.get_function_configuration(FunctionName=n), names, deadline=deadline)
    findings = [judge_function(n, cfg, n in named, aws.unreadable(err)) for n, cfg, err in results]
    present = {n for n, _, err in results if err is None}
    unread = {n: why for n, _, err in results if (why := aws.unreadable(err))}  # not missing: not read (its aliases neither)
    aliases = [(f.name, a) for f in system.lambda_functions for a in f.aliases if f.name in present]
    for (fn, alias), res, err in aws.parallel(lambda fa: c.get_alias(FunctionName=fa[0], Name=fa[1]), aliases, deadline=deadline):
        findings.append(judge_alias(f"{fn}:{alias}", res, aws.unreadable(err)))
    findings += [judge_alias(f"{f.name}:{a}", None, f"not read: the function could not be read ({unread[f.name]})")
                 for f in system.lambda_functions for a in f.aliases if f.name in unread]
    return findings


# --- Duration p99 against the timeout (daily-health) -----------------------------------------------------------

DURATION_WINDOW_H = 24.0  # daily-health's window: its log scans read the last 24 h too


def read_duration_p99(region: str, names: list[str], hours: float) -> dict[str, float | None]:
    """Each function's Duration p99 (ms) over the last ``hours``, in one batched GetMetricData (every page, 500 queries a
    call); None: no datapoint (no invocation in the window)."""
    if not names:
        return {}
    period = max(60, round(hours * 60) * 60)  # one period over the whole window
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    specs = {n: ("AWS/Lambda", "Duration", {"FunctionName": n}, "p99", period) for n in names}
    res = run_metric_queries(region, specs, end - timedelta(seconds=period), end)
    return {n: peak(res[n]) for n in names}


@aws_task(iam=["cloudwatch:GetMetricData"], name="check-lambda-durations", cache_policy=NO_CACHE)
def check_durations(system: System, states: list[Finding], hours: float = DURATION_WINDOW_H) -> list[Finding]:
    """Every function check_functions read (named and tag-discovered): its Duration p99 over the window, one batched
    GetMetricData, against the timeout that read found (``states``: its lambda-state findings; no second read). A function
    that does not exist is lambda-state's finding, not this one's; one whose configuration could not be read is UNKNOWN."""
    fns = [f for f in states if f.check == "lambda-state" and (f.status is not Status.CRIT or f.details)]  # CRIT without details: missing
    if not fns:
        return []
    try:
        p99, p99_err = read_duration_p99(system.region, [f.resource for f in fns], hours), None
    except Exception as exc:  # every function's p99 is then unknown, with the reason
        p99, p99_err = {}, exc
    th = system.thresholds
    findings = []
    for f in fns:
        if f.status is Status.UNKNOWN and not f.details:
            why: str | None = f"the function's configuration (its timeout): {f.summary}"
        else:
            why = f"Duration p99 (GetMetricData): {aws.describe_error(p99_err)}" if p99_err is not None else None
        findings.append(judge_duration(f.resource, f.details.get("timeout_s"), p99.get(f.resource), th.lambda_duration_warn_pct,
                                       th.lambda_duration_crit_pct, hours, why))
    return findings


# --- rollback support ------------------------------------------------------------------


def alias_value(alias: dict[str, Any]) -> str:
    """The alias as one comparable value: '7', or '7+8=0.1' while it shifts weight to another version."""
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    extra = ",".join(f"{v}={w:g}" for v, w in sorted(weights.items()))
    return f"{alias['FunctionVersion']}+{extra}" if extra else alias["FunctionVersion"]


def split_alias(resource: str) -> tuple[str, str]:
    fn, _, alias = resource.rpartition(":")
    return fn, alias


@aws_task(iam=["lambda:GetAlias", "lambda:ListVersionsByFunction"], name="read-lambda-alias", cache_policy=NO_CACHE)
def read_alias_history(system: System, resource: str) -> dict[str, Any]:
    fn, alias = split_alias(resource)
    c = aws.client("lambda", system.region)
    a = c.get_alias(FunctionName=fn, Name=alias)
    versions = sorted(int(v["Version"]) for v in aws.paginate(c, "list_versions_by_function", "Versions", FunctionName=fn) if v["Version"] != "$LATEST")
    return {"value": alias_value(a), "version": a["FunctionVersion"], "versions": versions}


@declares(["lambda:GetAlias"])
def read_alias(system: System, resource: str) -> str:
    fn, alias = split_alias(resource)
    return alias_value(aws.client("lambda", system.region).get_alias(FunctionName=fn, Name=alias))


@declares(["lambda:GetAlias", "lambda:GetFunctionConfiguration"])
def alias_settled(system: System, resource: str, target: str) -> tuple[bool, str]:
    """The alias resolves to ``target`` and that version is Active (the settled check of the alias step)."""
    if read_alias(system, resource) != target:
        return False, f"alias does not resolve to {target} yet"
    fn = resource.rsplit(":", 1)[0]
    state = aws.client("lambda", system.region).get_function_configuration(FunctionName=fn, Qualifier=target.split("+")[0]).get("State", "Active")
    return state == "Active", f"alias resolves to {target}, version {state}"


@declares(["lambda:GetAlias", "lambda:UpdateAlias"])
def set_alias(system: System, resource: str, value: str) -> None:
    """Point the alias at one version (clearing any weighted routing). Idempotent."""
    if read_alias(system, resource) == value:
        return
    fn, alias = split_alias(resource)
    version, _, extra = value.partition("+")
    weights = {v: float(w) for v, w in (p.split("=") for p in extra.split(",") if p)} if extra else {}
    aws.client("lambda", system.region).update_alias(FunctionName=fn, Name=alias, FunctionVersion=version,
                                                     RoutingConfig={"AdditionalVersionWeights": weights})


# --- configuration (timeout, memory): read, and set as an ``Applier`` (remediate-lambda-timeout) ----------------

TIMEOUT_KIND, MEMORY_KIND = "lambda-timeout", "lambda-memory"
CONFIG_IAM = "lambda:UpdateFunctionConfiguration"
CONFIG_KEYS = {TIMEOUT_KIND: "Timeout", MEMORY_KIND: "MemorySize"}


class FunctionConfig(BaseModel):
    name: str
    timeout_s: int | None = None
    memory_mb: int | None = None
    state: str | None = None
    last_update_status: str | None = None
    last_modified: datetime | None = None
    queues: list[str] = Field(default_factory=list, description="SQS queues with an event source mapping to the function")
    mapping_error: str | None = None
    error: str | None = None
    missing: bool = False


def parse_time(value: Any) -> datetime | None:
    """Lambda's LastModified ('2024-05-01T18:27:43.112+0000', or moto's nanosecond ISO form) as aware UTC."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    s = str(value).strip().replace("Z", "+00:00")
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?([+-]\d{2}:?\d{2})?$", s)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "+00:00"
    if ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return datetime.fromisoformat(m.group(1) + frac + tz).astimezone(timezone.utc)


@declares(["lambda:GetFunctionConfiguration", "lambda:ListEventSourceMappings"])
def read_config(region: str, name: str) -> FunctionConfig:
    c = aws.client("lambda", region)
    try:
        cfg = c.get_function_configuration(FunctionName=name)
    except Exception as exc:
        if aws.is_not_found(exc):
            return FunctionConfig(name=name, missing=True, error="the function does not exist (check the inventory name and region)")
        return FunctionConfig(name=name, error=aws.describe_error(exc))
    out = FunctionConfig(name=name, timeout_s=cfg.get("Timeout"), memory_mb=cfg.get("MemorySize"), state=cfg.get("State"),
                         last_update_status=cfg.get("LastUpdateStatus"), last_modified=parse_time(cfg.get("LastModified")))
    try:
        arns = [m.get("EventSourceArn", "") for m in aws.paginate(c, "list_event_source_mappings", "EventSourceMappings", FunctionName=name)]
        out.queues = [a.rsplit(":", 1)[-1] for a in arns if a.startswith("arn:") and a.split(":")[2] == "sqs"]
    except Exception as exc:  # the inventory's sqs_source still applies; the gap is reported
        out.mapping_error = aws.describe_error(exc)
    return out


@aws_task(iam=["lambda:GetFunctionConfiguration", "lambda:ListEventSourceMappings"], name="read-lambda-configs", cache_policy=NO_CACHE)
def read_configs(system: System, names: list[str], deadline: aws.Deadline) -> list[FunctionConfig]:
    out = []
    for name, cfg, err in aws.parallel(lambda n: read_config(system.region, n), names, deadline=deadline):
        out.append(cfg if err is None else FunctionConfig(name=name, error=aws.describe_error(err)))
    return out


def wait_updated(system: System, fn: str, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) until the function's last update is no longer InProgress; raise when it Failed."""
    c = aws.client("lambda", system.region)
    started = time.monotonic()
    polls = 0
    while True:
        cfg = c.get_function_configuration(FunctionName=fn)
        status = cfg.get("LastUpdateStatus", "Successful")
        if status == "Failed":
            raise RuntimeError(f"{fn}: the configuration update failed: {cfg.get('LastUpdateStatusReason') or cfg.get('LastUpdateStatusReasonCode') or '?'}")
        if status != "InProgress":
            return cfg
        elapsed = time.monotonic() - started
        if elapsed >= timeout_s:
            raise TimeoutError(f"{fn}: LastUpdateStatus still InProgress after {timeout_s:g} s")
        print(f"opsbook: {fn}: waiting for the configuration update (LastUpdateStatus InProgress, {elapsed:.0f}/{timeout_s:g} s)", file=sys.stderr)
        time.sleep(min(0.25 * 2 ** polls, 2.0, max(0.1, timeout_s - elapsed)))  # 0.25, 0.5, 1, 2, 2, ... s
        polls += 1


def config_reader(key: str) -> Any:
    """An Applier's read: the function's ``key`` (Timeout, MemorySize) as a string."""
    @declares(["lambda:GetFunctionConfiguration"])
    def read(system: System, fn: str) -> str:
        return str(aws.client("lambda", system.region).get_function_configuration(FunctionName=fn)[key])

    return read


def config_setter(key: str) -> Any:
    """An Applier's apply: set the function's ``key``."""
    @declares(["lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration"])
    def apply(system: System, fn: str, value: str) -> None:
        """Idempotent: waits for any update in progress, sets the value if it differs, waits until Successful."""
        settle = min(float(system.mutations.settle_timeout_s), 300.0)
        cfg = wait_updated(system, fn, settle)
        if str(cfg[key]) == value:
            return
        aws.client("lambda", system.region).update_function_configuration(FunctionName=fn, **{key: int(value)})
        wait_updated(system, fn, settle)

    return apply


@declares(["lambda:GetFunctionConfiguration"])
def read_config_settled(system: System, fn: str, key: str) -> tuple[str, str]:
    """(value, how it reads) for a verification: the value counts once the function's update is no longer in progress."""
    cfg = aws.client("lambda", system.region).get_function_configuration(FunctionName=fn)
    status = cfg.get("LastUpdateStatus", "Successful")
    value = str(cfg[key]) if status == "Successful" else f"{cfg[key]} ({status})"
    return value, f"{key} {cfg[key]}{' s' if key == 'Timeout' else ' MB'}, LastUpdateStatus {status}"


def config_settled(key: str) -> Any:
    """An Applier's settled check: the function's ``key`` reads as the target and its update is no longer in progress."""
    @declares(["lambda:GetFunctionConfiguration"])
    def settled(system: System, fn: str, target: str) -> tuple[bool, str]:
        value, how = read_config_settled(system, fn, key)
        return value == target, how

    return settled


# --- a function's role, timeout and memory (diagnose-api-5xx) ---------------------------------------------------

class FunctionInfo(BaseModel):
    function: str
    exists: bool = False
    error: str | None = None
    role_arn: str | None = None
    timeout_s: int | None = None
    memory_mb: int | None = None

    @property
    def role_name(self) -> str | None:
        return self.role_arn.rsplit("/", 1)[-1] if self.role_arn else None


@aws_task(iam=["lambda:GetFunctionConfiguration"], cache_policy=NO_CACHE)
def read_functions(system: System, functions: list[str], deadline: aws.Deadline) -> dict[str, FunctionInfo]:
    return function_infos(system, functions, deadline)


@declares(["lambda:GetFunctionConfiguration"])
def function_infos(system: System, functions: list[str], deadline: aws.Deadline) -> dict[str, FunctionInfo]:
    """Each function's role, timeout and memory (concurrently); one that does not exist has ``exists`` False, an unreadable one ``error``."""
    c = aws.client("lambda", system.region)
    return {fn: _info(fn, cfg, err) for fn, cfg, err in aws.parallel(lambda n: c.get_function_configuration(FunctionName=n), functions,
                                                                        deadline=deadline)}


def _info(fn: str, cfg: dict[str, Any] | None, err: BaseException | None) -> FunctionInfo:
    if err is not None or cfg is None:
        return FunctionInfo(function=fn, error=None if err is None or aws.is_not_found(err) else aws.describe_error(err))
    return FunctionInfo(function=fn, exists=True, role_arn=cfg.get("Role"), timeout_s=cfg.get("Timeout"), memory_mb=cfg.get("MemorySize"))


@aws_task(iam=["lambda:GetFunctionConfiguration"], name="read-lambda-sizes", cache_policy=NO_CACHE)
def read_function_sizes(system: System, deadline: aws.Deadline, names: list[str] | None = None) -> list[FunctionInfo]:
    """Timeout and memory of the inventory's functions that declare ``expected_memory_mb``/``expected_timeout_s`` (or of
    ``names``): what maintenance-audit compares with the inventory."""
    wanted = names if names is not None else [f.name for f in system.lambda_functions if f.expected_memory_mb or f.expected_timeout_s]
    return list(function_infos(system, wanted, deadline).values())


# --- runtimes -------------------------------------------------------------------------------


class FunctionRuntime(BaseModel):
    function: str
    runtime: str | None = None
    package_type: str | None = None
    error: str | None = None


@aws_task(iam=["lambda:GetFunctionConfiguration"], name="read-runtimes", cache_policy=NO_CACHE)
def read_runtimes(system: System, found: Discovered, deadline: aws.Deadline) -> list[FunctionRuntime]:
    """The runtime of every named and tag-discovered function."""
    c = aws.client("lambda", system.region)

    def one(name: str) -> FunctionRuntime:
        cfg = c.get_function_configuration(FunctionName=name)
        return FunctionRuntime(function=name, runtime=cfg.get("Runtime"), package_type=cfg.get("PackageType"))

    names = function_names(system, found)
    return [s if err is None else FunctionRuntime(function=n, error=aws.describe_error(err)) for n, s, err in aws.parallel(one, names, deadline=deadline)]


@aws_task(iam=["lambda:GetFunctionConfiguration"], name="read-lambda-configs", cache_policy=NO_CACHE)
def read_lambda_configs(system: System, found: Discovered, deadline: aws.Deadline) -> dict[str, list[Any]]:
    """One configuration read per function for both of maintenance-audit's Lambda checks: the runtime of every named
    and tag-discovered function ("runtimes") and the timeout and memory of those declaring expected ones
    ("lambda-config"), as read_runtimes and read_function_sizes give them (each read them all: twice the calls)."""
    names = function_names(system, found)
    sized = [f.name for f in system.lambda_functions if f.expected_memory_mb or f.expected_timeout_s]
    c = aws.client("lambda", system.region)
    read = {fn: (cfg, err) for fn, cfg, err in aws.parallel(lambda n: c.get_function_configuration(FunctionName=n),
                                                             names + [n for n in sized if n not in names], deadline=deadline)}
    runtimes = [FunctionRuntime(function=n, error=aws.describe_error(err)) if err is not None else
                FunctionRuntime(function=n, runtime=cfg.get("Runtime"), package_type=cfg.get("PackageType")) for n in names
                for cfg, err in [read[n]]]
    return {"runtimes": runtimes, "lambda-config": [_info(n, *read[n]) for n in sized]}


# --- SQS event source mappings: is a queue's consumer consuming? (dlq-redrive, bill-shock-breaker) -------

from pydantic import BaseModel  # noqa: E402  (this section is appended)


class Consumer(BaseModel):
    function: str
    queue_arn: str
    mapping_uuid: str | None = None
    state: str | None = None
    batch_size: int | None = None
    mappings: int = 0

    @property
    def enabled(self) -> bool:
        return self.state == "Enabled"


def event_source_mappings(region: str, function: str, queue_arn: str) -> list[dict[str, Any]]:
    """The function's event source mappings from the queue (every page)."""
    return list(aws.paginate(aws.client("lambda", region), "list_event_source_mappings", "EventSourceMappings",
                             FunctionName=function, EventSourceArn=queue_arn))


@aws_task(iam=["lambda:ListEventSourceMappings"], name="read-consumer-mapping", cache_policy=NO_CACHE)
def read_consumer_mapping(system: System, function: str, queue_arn: str) -> Consumer:
    """The event source mapping from the queue to its consumer function (an Enabled one first)."""
    maps = event_source_mappings(system.region, function, queue_arn)
    best = sorted(maps, key=lambda m: m.get("State") != "Enabled")[0] if maps else None
    return Consumer(function=function, queue_arn=queue_arn, mappings=len(maps), mapping_uuid=best.get("UUID") if best else None,
                    state=best.get("State") if best else None, batch_size=best.get("BatchSize") if best else None)


@aws_task(iam=["lambda:ListEventSourceMappings", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-consumer", cache_policy=NO_CACHE)
def read_worker(system: System, queue: str, function: str) -> dict[str, Any]:
    """The first mapping from ``queue`` to ``function`` and what waits in the queue (depth, retention)."""
    sqs = aws.client("sqs", system.region)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "MessageRetentionPeriod", "ApproximateNumberOfMessages"])["Attributes"]
    maps = event_source_mappings(system.region, function, attrs["QueueArn"])
    m = maps[0] if maps else None
    return {"mapping_uuid": m["UUID"] if m else None, "state": m.get("State") if m else None,
            "last_modified": m.get("LastModified") if m else None, "retention_s": int(attrs.get("MessageRetentionPeriod", 345600)),
            "queued": int(attrs.get("ApproximateNumberOfMessages", 0))}


# --- the worker's trigger: is each queue-fed worker consuming? (daily-health, emergency-check, diagnose-stuck-processing) ---

from opsbook.processing import SERVICE_BREAKER, consumer_queues, judge_trigger  # noqa: E402  (this section is appended)


def _trigger(system: System, queue: str, function: str) -> Finding:
    """Queue ARN, the mappings from it to the function (every page) and, when paused, the breaker table's service item."""
    try:
        sqs = aws.client("sqs", system.region)
        arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    except Exception as exc:
        return judge_trigger(queue, function, None, f"the source queue {queue} does not exist" if aws.is_not_found(exc) else aws.describe_error(exc))
    try:
        maps = event_source_mappings(system.region, function, arn)
    except Exception as exc:
        return judge_trigger(queue, function, None, f"the function {function} does not exist" if aws.is_not_found(exc) else aws.describe_error(exc))
    breaker, breaker_err = None, None
    paused = maps and all(m.get("State") in ("Disabled", "Disabling") for m in maps)
    if paused and system.bill_shock is not None:
        from tasks.dynamodb import read_breakers

        try:
            breaker = read_breakers(system, [SERVICE_BREAKER]).get(SERVICE_BREAKER)
        except Exception as exc:  # the pause is still reported; that it could not be explained is said
            breaker_err = aws.describe_error(exc)
    return judge_trigger(queue, function, maps, None, breaker, breaker_err)


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "lambda:ListEventSourceMappings", "dynamodb:BatchGetItem"],
          name="check-worker-triggers", cache_policy=NO_CACHE)
def check_triggers(system: System, deadline: aws.Deadline) -> list[Finding]:
    """Each queue-fed worker's event source mapping (State, LastProcessingResult); a paused one is explained by the circuit
    breaker's service item (bill_shock.breaker_table) or CRIT."""
    pairs = consumer_queues(system)
    return [f if err is None else judge_trigger(q, fn, None, aws.describe_error(err))
            for (q, fn), f, err in aws.parallel(lambda p: _trigger(system, *p), pairs, deadline=deadline)]


@aws_task(iam=["lambda:GetFunctionConcurrency"], name="read-reserved-concurrency", cache_policy=NO_CACHE)
def read_reserved_concurrency(system: System, names: list[str], deadline: aws.Deadline) -> dict[str, int | str | None]:
    """Each function's reserved concurrency (None: none reserved; 0: it never runs, an SQS trigger included), or the reason
    it could not be read (a string)."""
    c = aws.client("lambda", system.region)
    out: dict[str, int | str | None] = {}
    for fn, res, err in aws.parallel(lambda n: c.get_function_concurrency(FunctionName=n), names, deadline=deadline):
        out[fn] = aws.describe_error(err) if err is not None else res.get("ReservedConcurrentExecutions")
    return out


# --- a function's environment variables (restore-table's cutover). Plain functions: the calling step declares them.

UNSET = "(unset)"


@declares(["lambda:GetFunctionConfiguration"])
def read_environment(system: System, fn: str) -> tuple[dict[str, str], str]:
    """(its environment variables, its execution role's name)."""
    cfg = aws.client("lambda", system.region).get_function_configuration(FunctionName=fn)
    return dict((cfg.get("Environment") or {}).get("Variables") or {}), str(cfg.get("Role", "")).rsplit("/", 1)[-1]


@declares(["lambda:GetFunctionConfiguration"])
def read_env_var(system: System, resource: str) -> str:
    """``resource``: FUNCTION/env/VARIABLE; its value, or (unset)."""
    fn, _, var = resource.partition("/env/")
    return read_environment(system, fn)[0].get(var, UNSET)


@declares(["lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration"])
def set_env_var(system: System, resource: str, value: str) -> None:
    """Set one variable, the others as they are (idempotent); waits for the update to finish."""
    fn, _, var = resource.partition("/env/")
    settle = min(float(system.mutations.settle_timeout_s), 300.0)
    cfg = wait_updated(system, fn, settle)
    env = dict((cfg.get("Environment") or {}).get("Variables") or {})
    if env.get(var, UNSET) == value:
        return
    if value == UNSET:
        env.pop(var, None)
    else:
        env[var] = value
    aws.client("lambda", system.region).update_function_configuration(FunctionName=fn, Environment={"Variables": env})
    wait_updated(system, fn, settle)
