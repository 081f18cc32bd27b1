#!/usr/bin/env bash
# A client for the demo: POSTs a prediction request to URL again and again, each request on a new
# connection (curl), until STOP_FILE exists; then writes "OK FAILED" and the first failures to OUT_FILE.
# A request counts as ok when it gets a 200 whose body has "outputs". Runs wherever curl does (this
# machine, or a kind node with `docker exec`); stops by itself after MAX_SECONDS (default 600).
#   load.sh URL BODY STOP_FILE OUT_FILE [MAX_SECONDS]
set -uo pipefail
url=$1 body=$2 stop=$3 out=$4 max=${5:-600}
ok=0 failed=0 failures=()
deadline=$((SECONDS + max))
while [[ ! -e $stop ]] && ((SECONDS < deadline)); do
  reply=$(curl -sS -m 5 -o - -w '\n%{http_code}' -H 'content-type: application/json' -d "$body" "$url" 2>&1)
  code=${reply##*$'\n'}
  if [[ $code == 200 && $reply == *'"outputs"'* ]]; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
    ((${#failures[@]} < 5)) && failures+=("at ${SECONDS}s: ${reply//$'\n'/ }")
  fi
done
{
  echo "$ok $failed"
  for f in "${failures[@]}"; do echo "$f"; done
} >"$out.tmp" && mv "$out.tmp" "$out"
