#!/bin/bash
# weekly_report.sh
#
# The seed runbook's weekly report script (seeds/001, "📊 주간 리포트"):
#   SYSTEM=t-developer (default): as written -- PipelineExecutionTime Average and
#     GenerationSuccess Sum over the last 7 days (period 1 day), and a scan of
#     t-developer-metadata-production's user_id piped to jq unique.
#   SYSTEM=hr-resource-optimization: extended the way an ops team would to the
#     coverage of `opsbook run weekly-report` for HR: every function and table
#     tagged Team=Team2 (Resource Groups Tagging API), get-metric-statistics per
#     function for Invocations (Sum), Errors (Sum), Duration (Average, Maximum)
#     and per table for ConsumedRead/WriteCapacityUnits (Average, Maximum),
#     this week and last week; one `aws` process per call, sequential.
#
# Environment: AWS_ENDPOINT_URL (the sandbox; aws CLI v1 honours it since
# 1.29), credentials, AWS_REGION, AWS (the aws binary, default `aws`),
# TAG_KEY/TAG_VALUE (default Team/Team2).
# Last lines: "Covered: F functions, T tables" and "API calls: N" (one per aws
# invocation; auto-paginated pages are not seen from the shell).
set -u

AWS=${AWS:-aws}
SYSTEM=${SYSTEM:-t-developer}
TAG_KEY=${TAG_KEY:-Team}
TAG_VALUE=${TAG_VALUE:-Team2}
export AWS_PAGER=""
CALL_LOG=$(mktemp)
trap 'rm -f "$CALL_LOG"' EXIT

# every aws call of the script goes through here (counted; most run in $( ... ) subshells)
aws() {
  printf '%s\n' "$1 $2" >> "$CALL_LOG"
  "$AWS" "$@"
}

summary() {
  echo "Covered: ${NF:-0} functions, ${NT:-0} tables"
  echo "API calls by command:"
  sort "$CALL_LOG" | uniq -c | sort -rn
  echo "API calls: $(wc -l < "$CALL_LOG")"
}

if [ "$SYSTEM" = "t-developer" ]; then
  # ---------------- the seed's script, as written ----------------
  echo "=== T-Developer Weekly Report $(date) ==="

  # 성능 지표 수집
  echo "Performance Metrics (Last 7 days):"

  # 평균 응답시간
  aws cloudwatch get-metric-statistics \
    --namespace T-Developer/Pipeline \
    --metric-name PipelineExecutionTime \
    --start-time $(date -d '7 days ago' --iso-8601) \
    --end-time $(date --iso-8601) \
    --period 86400 \
    --statistics Average

  # 성공률
  aws cloudwatch get-metric-statistics \
    --namespace T-Developer/Pipeline \
    --metric-name GenerationSuccess \
    --start-time $(date -d '7 days ago' --iso-8601) \
    --end-time $(date --iso-8601) \
    --period 86400 \
    --statistics Sum

  # 사용자 수
  aws dynamodb scan \
    --table-name t-developer-metadata-production \
    --projection-expression "user_id" | \
    jq '.Items | map(.user_id.S) | unique | length'

  echo "=== Weekly Report Complete ==="
  NF=0; NT=1
  summary
  exit 0
fi

# ---------------- extended: every tagged function and table, two weeks ----------------
REGION=${AWS_REGION:-us-east-2}
export AWS_DEFAULT_REGION=$REGION
THIS_START=$(date -d '7 days ago' --iso-8601)
THIS_END=$(date --iso-8601)
LAST_START=$(date -d '14 days ago' --iso-8601)
LAST_END=$THIS_START

tagged() {
  local type=$1 strip=$2
  aws resourcegroupstaggingapi get-resources \
    --tag-filters "Key=${TAG_KEY},Values=${TAG_VALUE}" \
    --resource-type-filters "$type" \
    --query 'ResourceTagMappingList[].ResourceARN' --output text 2>/dev/null \
    | tr '\t' '\n' | sed -e "s#${strip}##" | grep -v '^$' || true
}

# one week of one metric: sum of the daily Sums, or mean of the daily Averages and max of the Maximums
week() {  # namespace dim_name dim_value metric start end stats...
  local ns=$1 dn=$2 dv=$3 m=$4 s=$5 e=$6
  shift 6
  aws cloudwatch get-metric-statistics --namespace "$ns" --metric-name "$m" \
    --dimensions "Name=${dn},Value=${dv}" --start-time "$s" --end-time "$e" \
    --period 86400 --statistics "$@" --output json 2>/dev/null \
    | jq -r '.Datapoints as $d | if ($d|length)==0 then "no data" else
        [ (if $d[0].Sum != null then "sum=\($d|map(.Sum)|add)" else empty end),
          (if $d[0].Average != null then "avg=\(($d|map(.Average)|add)/($d|length)|.*100|round/100)" else empty end),
          (if $d[0].Maximum != null then "max=\($d|map(.Maximum)|max)" else empty end) ] | join(" ") end' 2>/dev/null \
    || echo "error"
}

echo "=== HR Resource Optimization Weekly Report (extended) $(date) ==="
echo "This week: ${THIS_START} .. ${THIS_END}; last week: ${LAST_START} .. ${LAST_END}"

echo "1. Lambda (Invocations, Errors, Duration):"
FUNCS=$(tagged lambda:function '^arn:aws:lambda:[^:]*:[0-9]*:function:')
NF=0
for fn in $FUNCS; do
  NF=$((NF + 1))
  echo "  ${fn}:"
  for spec in "Invocations Sum" "Errors Sum" "Duration Average Maximum"; do
    set -- $spec
    m=$1; shift
    tw=$(week AWS/Lambda FunctionName "$fn" "$m" "$THIS_START" "$THIS_END" "$@")
    lw=$(week AWS/Lambda FunctionName "$fn" "$m" "$LAST_START" "$LAST_END" "$@")
    echo "    ${m}: this week ${tw}; last week ${lw}"
  done
done

echo "2. DynamoDB (consumed capacity):"
TABLES=$(tagged dynamodb:table '^arn:aws:dynamodb:[^:]*:[0-9]*:table/')
NT=0
for t in $TABLES; do
  NT=$((NT + 1))
  echo "  ${t}:"
  for m in ConsumedReadCapacityUnits ConsumedWriteCapacityUnits; do
    tw=$(week AWS/DynamoDB TableName "$t" "$m" "$THIS_START" "$THIS_END" Average Maximum)
    lw=$(week AWS/DynamoDB TableName "$t" "$m" "$LAST_START" "$LAST_END" Average Maximum)
    echo "    ${m}: this week ${tw}; last week ${lw}"
  done
done

echo "=== Weekly Report Complete ==="
summary
