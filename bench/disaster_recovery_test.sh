#!/bin/bash
# disaster_recovery_test.sh
#
# The seed runbook's quarterly DR test (seeds/000, "복구 테스트", 분기별 복구
# 테스트), as written: restore Employees-Team2 from the FIRST backup that
# `list-backups` returns into Employees-Team2-Test, `aws s3 cp` test-file.pdf
# into hr-resumes-bucket-team2-test, and POST a restore of snapshot "latest"
# of backup_repo (employee_profiles renamed to test_employee_profiles).
#
# Changes for the benchmark, none of them to what the script does:
#   - `aws` is $AWS (default `aws`); the sandbox comes from AWS_ENDPOINT_URL
#     (aws CLI v1 honours it since 1.29) and AWS_DEFAULT_REGION (default
#     us-east-2, the HR system's region; the seed relies on the profile's);
#   - the OpenSearch URL: the seed's `https://${OPENSEARCH_ENDPOINT}` (a
#     variable the seed never sets: run as written it would POST to
#     "https:///_snapshot/...") becomes the sandbox's OpenSearch double for the
#     domain, OPSBOOK_OPENSEARCH_URL_TEMPLATE with {domain} =
#     hr-resource-optimization-team2, when that variable is set;
#   - BENCH_STEP lines on stderr (`date +%s.%N`) before and after each of the
#     three steps, and one BENCH_CALLS line at the end (one count per `aws`
#     and per `curl` process), so the harness can time the steps and count the
#     calls. stdout and the exit code are the script's own.
#
# What the script does NOT do (see bench/README.md, "DR"): it waits for
# nothing (the restored table may still be CREATING when it prints "Test
# Complete"), verifies nothing (no item count, no comparison, no checksum, no
# document count), times nothing against an RTO, cleans nothing up (the -Test
# table, the copied object and the test_ index stay, and a second run fails on
# them), has no `set -e` and curl has no `-f`, so it exits 0 whatever failed.
# BackupSummaries[0] is not "the latest backup" (ListBackups gives no such
# order), the S3 step copies the CURRENT object (it restores no version), and
# OpenSearch has no snapshot called "latest" unless someone made one.

AWS=${AWS:-aws}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-2}
export AWS_PAGER=""
if [ -n "${OPSBOOK_OPENSEARCH_URL_TEMPLATE:-}" ]; then
  OPENSEARCH_URL=${OPSBOOK_OPENSEARCH_URL_TEMPLATE//\{domain\}/hr-resource-optimization-team2}
else
  OPENSEARCH_URL="https://${OPENSEARCH_ENDPOINT}"
fi
CALL_LOG=$(mktemp)   # a file: the list-backups call runs inside a $( ... ) subshell
trap 'echo "BENCH_CALLS aws $(grep -c "^aws " "$CALL_LOG") curl $(grep -c "^curl" "$CALL_LOG")" >&2; rm -f "$CALL_LOG"' EXIT
aws() {
  printf 'aws %s %s\n' "$1" "$2" >> "$CALL_LOG"
  "$AWS" "$@"
}
curl() {
  printf 'curl\n' >> "$CALL_LOG"
  command curl "$@"
}
mark() { echo "BENCH_STEP $1 $2 $(date +%s.%N)" >&2; }

echo "=== Disaster Recovery Test ==="
echo "Date: $(date)"

# 1. DynamoDB 복구 테스트
mark dynamodb start
echo "1. Testing DynamoDB restore..."
aws dynamodb restore-table-from-backup \
  --target-table-name Employees-Team2-Test \
  --backup-arn $(aws dynamodb list-backups --table-name Employees-Team2 --query 'BackupSummaries[0].BackupArn' --output text)
mark dynamodb end

# 2. S3 복구 테스트
mark s3 start
echo "2. Testing S3 restore..."
aws s3 cp s3://hr-resumes-bucket-team2/test-file.pdf s3://hr-resumes-bucket-team2-test/test-file.pdf
mark s3 end

# 3. OpenSearch 복구 테스트
mark opensearch start
echo "3. Testing OpenSearch restore..."
curl -XPOST "${OPENSEARCH_URL}/_snapshot/backup_repo/latest/_restore" -H 'Content-Type: application/json' -d'
{
  "indices": "employee_profiles",
  "rename_pattern": "(.+)",
  "rename_replacement": "test_$1"
}'
mark opensearch end

echo "=== Test Complete ==="
