#!/bin/bash
# daily_health_check_extended.sh
#
# The seed runbook's daily_health_check.sh (seeds/000, "1. 시스템 상태 확인"),
# extended the way an ops team would to cover EVERY function and table of the
# system, not the hand-written lists:
#   - functions, tables and buckets are found by tag (Resource Groups Tagging
#     API, Team=Team2): `aws lambda list-functions` carries no tags, so the
#     seed's `Functions[?Tags.Team=='Team2']` query always prints nothing;
#   - one `aws` process per call, sequential, like the seed.
#
# Environment: AWS_ENDPOINT_URL (the sandbox; aws CLI v1 honours it since
# 1.29), credentials, AWS_REGION (default us-east-2), AWS (the aws binary,
# default `aws`), TAG_KEY/TAG_VALUE (default Team/Team2).
# Last line: "API calls: N" (one per aws invocation; auto-paginated pages of
# get-resources / filter-log-events are not seen from the shell).
set -u

AWS=${AWS:-aws}
REGION=${AWS_REGION:-us-east-2}
TAG_KEY=${TAG_KEY:-Team}
TAG_VALUE=${TAG_VALUE:-Team2}
export AWS_PAGER=""
# the count lives in a file: most calls run inside $( ... ) subshells
CALL_LOG=$(mktemp)
trap 'rm -f "$CALL_LOG"' EXIT

awsc() {
  printf '%s\n' "$1 $2" >> "$CALL_LOG"
  "$AWS" --region "$REGION" "$@"
}

# names of the tagged resources of one type (ARN tail after the prefix)
tagged() {
  local type=$1 strip=$2
  awsc resourcegroupstaggingapi get-resources \
    --tag-filters "Key=${TAG_KEY},Values=${TAG_VALUE}" \
    --resource-type-filters "$type" \
    --query 'ResourceTagMappingList[].ResourceARN' --output text 2>/dev/null \
    | tr '\t' '\n' | sed -e "s#${strip}##" | grep -v '^$' || true
}

echo "=== HR Resource Optimization System - Daily Health Check (extended) ==="
echo "Date: $(date)"
echo ""

# 1. Lambda 함수 상태 확인 (every function tagged Team=Team2)
echo "1. Lambda Functions Status:"
FUNCS=$(tagged lambda:function '^arn:aws:lambda:[^:]*:[0-9]*:function:')
NF=0
for fn in $FUNCS; do
  NF=$((NF + 1))
  st=$(awsc lambda get-function-configuration --function-name "$fn" \
    --query '[State,LastUpdateStatus]' --output text 2>/dev/null)
  echo "  ${fn}: ${st:-NOT_FOUND}"
done

# 2. DynamoDB 테이블 상태 확인 (the seed's six, plus every tagged table)
echo "2. DynamoDB Tables Status:"
TABLES=$( { for t in Employees Projects EmployeeAffinity MessengerLogs CompanyEvents TechTrends; do echo "${t}-Team2"; done
            tagged dynamodb:table '^arn:aws:dynamodb:[^:]*:[0-9]*:table/'; } | awk '!seen[$0]++')
NT=0
for table in $TABLES; do
  NT=$((NT + 1))
  status=$(awsc dynamodb describe-table --table-name "$table" --query "Table.TableStatus" --output text 2>/dev/null)
  echo "  ${table}: ${status:-NOT_FOUND}"
done

# 3. OpenSearch 클러스터 상태 확인
echo "3. OpenSearch Cluster Status:"
awsc opensearch describe-domain --domain-name hr-resource-optimization-team2 \
  --query "DomainStatus.{Processing:Processing,Deleted:Deleted,InstanceType:ClusterConfig.InstanceType}" \
  --output text 2>&1 | sed 's/^/  /'

# 4. API Gateway 상태 확인
echo "4. API Gateway Status:"
awsc apigateway get-rest-apis \
  --query "items[?tags.Team=='${TAG_VALUE}'].[name,id]" \
  --output text 2>&1 | sed 's/^/  /'

# 5. CloudWatch 알람 상태 확인
echo "5. Active Alarms:"
awsc cloudwatch describe-alarms \
  --state-value ALARM \
  --query 'MetricAlarms[?contains(AlarmName, `team2`)].[AlarmName,StateReason]' \
  --output text 2>&1 | sed 's/^/  /'

# 6. 최근 24시간 에러 로그 확인 (every function's log group; the CLI pages to the end)
echo "6. Recent Errors (Last 24 hours):"
START=$(($(date +%s) - 86400))000
NL=0
for fn in $FUNCS; do
  NL=$((NL + 1))
  error_count=$(awsc logs filter-log-events \
    --log-group-name "/aws/lambda/${fn}" \
    --filter-pattern "ERROR" \
    --start-time "$START" \
    --query 'length(events)' \
    --output text 2>/dev/null)
  echo "  ${fn}: ${error_count:-0} errors"
done

# 7. S3 버킷 확인 (the seed's four buckets, plus every tagged bucket)
echo "7. S3 Buckets:"
BUCKETS=$( { for b in hr-resumes-bucket-team2 hr-opensearch-snapshots-team2 hr-reports-bucket-team2 hr-frontend-bucket-team2; do echo "$b"; done
             tagged s3:bucket '^arn:aws:s3:::'; } | awk '!seen[$0]++')
NB=0
for b in $BUCKETS; do
  NB=$((NB + 1))
  if awsc s3api head-bucket --bucket "$b" >/dev/null 2>&1; then echo "  ${b}: OK"; else echo "  ${b}: MISSING"; fi
done

echo ""
echo "=== Health Check Complete ==="
echo "Covered: ${NF} functions, ${NT} tables, ${NL} log groups, ${NB} buckets"
echo "API calls by command:"
sort "$CALL_LOG" | uniq -c | sed 's/^/ /'
echo "API calls: $(wc -l < "$CALL_LOG")"
