#!/usr/bin/env bash
# Upload and download of one large file through a release `warden serve` on
# its embedded PostgreSQL, next to `cat` of the same file to /dev/null in the
# same run (the baseline), with warden's resident memory before and at peak.
#
#     benches/file_transfer.sh            # 500 MB
#     SIZE_MB=100 benches/file_transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${SIZE_MB:-500}
work=$(mktemp -d /tmp/warden-file-bench.XXXXXX)
chmod 755 "$work"   # the embedded PostgreSQL may run as another user
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
head -c "${size_mb}M" /dev/urandom > "$work/file.bin"
export WARDEN_ADMIN_PASSWORD='file bench admin password'
target/release/warden --config warden.example.yaml --data-dir "$work/data" serve --listen 127.0.0.1:18099 \
    > "$work/warden.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -sf http://127.0.0.1:18099/api/health >/dev/null && break
    sleep 0.5
done
token=$(curl -sf -X POST http://127.0.0.1:18099/api/local-account/login \
    -d "grant_type=password&username=admin%40example.org&password=file%20bench%20admin%20password" \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
rss() { awk -v key="$1:" '$1 == key {print int($2 / 1024)}' "/proc/$server/status"; }

cat "$work/file.bin" > /dev/null   # warm the page cache for both
start=$(date +%s.%N); cat "$work/file.bin" > /dev/null; end=$(date +%s.%N)
cat_s=$(echo "$end - $start" | bc -l)
before=$(rss VmRSS)

start=$(date +%s.%N)
file_id=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'content-type: audio/mpeg' \
    --data-binary @"$work/file.bin" "http://127.0.0.1:18099/api/files?name=bench.mp3" \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["file_id"])')
end=$(date +%s.%N)
upload_s=$(echo "$end - $start" | bc -l)

start=$(date +%s.%N)
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:18099/api/files/$file_id" -o "$work/back.bin"
end=$(date +%s.%N)
download_s=$(echo "$end - $start" | bc -l)
cmp "$work/file.bin" "$work/back.bin"
peak=$(rss VmHWM)

printf 'file: %s MB\n' "$size_mb"
printf 'cat to /dev/null: %.2f s (%.0f MB/s)\n' "$cat_s" "$(echo "$size_mb / $cat_s" | bc -l)"
printf 'upload:   %.2f s = %.0f MB/s (%.3f of cat)\n' "$upload_s" "$(echo "$size_mb / $upload_s" | bc -l)" "$(echo "$cat_s / $upload_s" | bc -l)"
printf 'download: %.2f s = %.0f MB/s (%.3f of cat)\n' "$download_s" "$(echo "$size_mb / $download_s" | bc -l)" "$(echo "$cat_s / $download_s" | bc -l)"
printf 'warden RSS: %s MB before, %s MB at peak (growth %s MB)\n' "$before" "$peak" "$((peak - before))"
