#!/bin/bash
# Named components in reward.json: Harbor reads every key.
exists=0; exact=0
if [ -f /work/count.txt ]; then exists=1; fi
if [ "$(tr -d '[:space:]' < /work/count.txt 2>/dev/null)" = "${EXPECTED_WORDS}" ]; then exact=1; fi
echo "exists=$exists exact=$exact expected=${EXPECTED_WORDS}"
printf '{"reward": %s, "exists": %s, "exact": %s}\n' "$exact" "$exists" "$exact" \
  > /logs/verifier/reward.json
