#!/usr/bin/env bash
# Run the property suite N times (default 20) with different hypothesis seeds and count
# failing runs. Usage: scripts/flake_hunt.sh [N] [pytest args...]; needs the project installed.
set -u
runs=${1:-20}
shift || true
failures=0
for seed in $(seq 1 "$runs"); do
    if python -m pytest properties -q -p no:cacheprovider --hypothesis-profile=ci-random \
        --hypothesis-seed="$seed" "$@" >"results/flake-$seed.log" 2>&1; then
        echo "seed $seed: pass ($(tail -n 1 "results/flake-$seed.log"))"
    else
        failures=$((failures + 1))
        echo "seed $seed: FAIL (see results/flake-$seed.log)"
    fi
done
echo "flake hunt: $failures failing runs of $runs"
[ "$failures" -eq 0 ]
