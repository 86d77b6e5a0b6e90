"""Cloud Custodian's `custodian run`, counting the AWS calls it makes (run with the bench's Custodian venv python).

    bench/.venv-c7n/bin/python bench/c7n_run.py COUNTS.json run --cache-period 0 -s OUT --region R POLICY.yml

Every botocore call is counted (``BaseClient._make_api_call``: the same point opsbook's count sits behind) by
"service:Operation" and written to COUNTS.json when Custodian ends, whatever its exit.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
from collections import Counter

import botocore.client

CALLS: Counter[str] = Counter()
_lock = threading.Lock()
_make_api_call = botocore.client.BaseClient._make_api_call


def counted(self, operation_name, api_params):  # type: ignore[no-untyped-def]
    with _lock:
        CALLS[f"{self.meta.service_model.service_name}:{operation_name}"] += 1
    return _make_api_call(self, operation_name, api_params)


def main() -> int:
    out, args = sys.argv[1], sys.argv[2:]
    botocore.client.BaseClient._make_api_call = counted
    atexit.register(lambda: open(out, "w").write(json.dumps(dict(sorted(CALLS.items())))))
    from c7n.cli import main as custodian

    sys.argv = ["custodian", *args]
    return custodian() or 0


if __name__ == "__main__":
    sys.exit(main())
