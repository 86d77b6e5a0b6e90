#!/bin/bash
# emergency_rollback.sh
#
# The seed runbook's emergency rollback script (seeds/001, "🔥 긴급 롤백
# 스크립트"), as written: read the service's task definition, roll back to
# "current revision - 1" with `aws ecs update-service`, `aws sns publish` to
# the alerts topic, then `aws ecs wait services-stable`.
#
# Changes for the benchmark, none of them to what the script does:
#   - `aws` is $AWS (default `aws`); the sandbox comes from AWS_ENDPOINT_URL
#     (aws CLI v1 honours it since 1.29) and AWS_DEFAULT_REGION (default
#     us-east-1: the seed's topic ARN and cluster live there);
#   - BENCH_MARK lines on stderr (`date +%s.%N`): right before `update-service`
#     is invoked, right before the waiter, and at the end, so the harness can
#     measure time to the rollback call;
#   - the waiter is bounded by `timeout $WAIT_TIMEOUT_S` (default 20 s): moto
#     never settles a rollback (it keeps the old PRIMARY deployment), so the
#     seed's waiter would poll every 15 s for its 40 attempts (10 min) and then
#     fail. The script then exits 124 instead of printing "completed";
#   - the last stdout line is "aws invocations: N" (one per `aws` process; the
#     waiter is one process that polls DescribeServices every 15 s).
set -euo pipefail

AWS=${AWS:-aws}
WAIT_TIMEOUT_S=${WAIT_TIMEOUT_S:-20}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_PAGER=""
CALL_LOG=$(mktemp)   # a file: the first call runs inside a $( ... ) subshell
trap 'rm -f "$CALL_LOG"' EXIT

aws() {
  printf '%s\n' "$1 $2" >> "$CALL_LOG"
  "$AWS" "$@"
}
mark() { echo "BENCH_MARK $1 $(date +%s.%N)" >&2; }
mark start

CLUSTER_NAME="t-developer-cluster-production"
SERVICE_NAME="t-developer-service-production"

echo "🚨 EMERGENCY ROLLBACK INITIATED"

# 현재 태스크 정의 가져오기
CURRENT_TASK_DEF=$(aws ecs describe-services \
  --cluster "$CLUSTER_NAME" \
  --services "$SERVICE_NAME" \
  --query 'services[0].taskDefinition' \
  --output text)

# 이전 버전 계산
CURRENT_REVISION=$(echo "$CURRENT_TASK_DEF" | sed 's/.*://')
PREVIOUS_REVISION=$((CURRENT_REVISION - 1))
PREVIOUS_TASK_DEF="${CURRENT_TASK_DEF%:*}:$PREVIOUS_REVISION"

echo "Rolling back from $CURRENT_TASK_DEF to $PREVIOUS_TASK_DEF"

# 롤백 실행
mark update-service
aws ecs update-service \
  --cluster "$CLUSTER_NAME" \
  --service "$SERVICE_NAME" \
  --task-definition "$PREVIOUS_TASK_DEF"

# 알림 전송
aws sns publish \
  --topic-arn "arn:aws:sns:us-east-1:123456789012:t-developer-alerts-production" \
  --message "🚨 EMERGENCY ROLLBACK: Service rolled back to $PREVIOUS_TASK_DEF"

echo "✅ Rollback initiated. Monitoring deployment..."

# 롤백 완료 대기 (bounded: see the header)
mark wait
printf '%s\n' "ecs wait" >> "$CALL_LOG"
rc=0
timeout "$WAIT_TIMEOUT_S" "$AWS" ecs wait services-stable \
  --cluster "$CLUSTER_NAME" \
  --services "$SERVICE_NAME" || rc=$?
mark end
echo "aws invocations: $(wc -l < "$CALL_LOG")"
if [ "$rc" -eq 124 ]; then
  echo "bench: services-stable waiter stopped after ${WAIT_TIMEOUT_S} s (the sandbox never settles a rollback)" >&2
fi
[ "$rc" -eq 0 ] || exit "$rc"

echo "✅ Rollback completed successfully"
