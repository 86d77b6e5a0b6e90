"""The read helper the LEH AI worker calls before spending tokens on a case.

Contract (vendor this file into the worker; it needs only boto3):

    from breaker_client import BreakerClient
    breaker = BreakerClient(table="leh-circuit-breakers")      # once per container
    if not breaker.allowed(case_id):
        return  # leave the message: it is retried later or lands in the DLQ; do not call OpenAI

- ``allowed(case_id)`` is False only when the case's breaker is OPEN.
  HALF_OPEN lets work through (the breaker runbook closes it when usage is back
  under budget, or opens it again). A case with no item is CLOSED.
- Answers are cached per container for ``cache_s`` seconds (default 30), so a
  busy worker makes at most one GetItem per case per 30 s.
- When the table cannot be read (throttling, outage, permissions), the default
  is ``on_error="allow"``: the work goes on, and the helper emits the metric
  ``LEH/AI BreakerReadErrors`` (Count) and logs a warning, so a table outage
  does not stop the service but is visible and can be alarmed on.
  ``on_error="deny"`` fails closed instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("leh.breaker")


class BreakerClient:
    def __init__(self, table: str = "leh-circuit-breakers", *, cache_s: float = 30.0, on_error: str = "allow",
                 metric_namespace: str = "LEH/AI", dynamodb: Any = None, cloudwatch: Any = None) -> None:
        if on_error not in ("allow", "deny"):
            raise ValueError("on_error must be 'allow' or 'deny'")
        import boto3

        self.table, self.cache_s, self.on_error, self.namespace = table, cache_s, on_error, metric_namespace
        self.dynamodb = dynamodb or boto3.client("dynamodb")
        self.cloudwatch = cloudwatch or boto3.client("cloudwatch")
        self._cache: dict[str, tuple[float, bool]] = {}

    def allowed(self, case_id: str) -> bool:
        hit = self._cache.get(case_id)
        if hit and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        try:
            item = self.dynamodb.get_item(TableName=self.table, Key={"case_id": {"S": case_id}},
                                          ProjectionExpression="#s", ExpressionAttributeNames={"#s": "state"}).get("Item")
            ok = not (item and item.get("state", {}).get("S") == "OPEN")
        except Exception as exc:  # the contract: explicit, counted, and allow by default
            log.warning("breaker table %s unreadable (%s); %s case %s", self.table, type(exc).__name__, self.on_error, case_id)
            try:
                self.cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=[
                    {"MetricName": "BreakerReadErrors", "Value": 1, "Unit": "Count"}])
            except Exception:  # the metric is best effort; the decision below stands
                log.warning("could not emit BreakerReadErrors")
            return self.on_error == "allow"
        self._cache[case_id] = (time.monotonic(), ok)
        return ok
