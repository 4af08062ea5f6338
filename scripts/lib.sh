# Shared helpers for the set-up and test scripts (sourced, not run).

# require_packages PKG...: apt-get installs the Debian packages that are missing (update first, once).
require_packages() {
    local missing=() package
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing ${missing[*]}"
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    # Wait for another apt run holding the lock instead of failing at once.
    local wait=(-o DPkg::Lock::Timeout=600)
    if [ -z "${TOKENFLOW_APT_UPDATED:-}" ]; then
        $sudo_cmd apt-get "${wait[@]}" update -qq
        export TOKENFLOW_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get "${wait[@]}" install -y -qq "${missing[@]}" >/dev/null
}

# The benchmarks' rounds (TOKENFLOW_BENCH_ROUNDS, default 3): each round runs ours, then the peer, and gives one
# ratio. This machine kind's speed drifts by up to 2x within minutes (a 2-core VM: the same UNet forward took 7.8 s
# and 13.5 s an hour apart), so the sides alternate and the median of the rounds' ratios is the figure.
# Use as rounds=$(bench_rounds): under set -e a bad value stops the script.
bench_rounds() {
    local rounds=${TOKENFLOW_BENCH_ROUNDS:-3}
    [[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "TOKENFLOW_BENCH_ROUNDS must be a positive integer, not '$rounds'" >&2; return 2; }
    echo "$rounds"
}

# median_of LABEL VALUE...: prints "LABEL=median (rounds: VALUE ...)".
median_of() {
    local label=$1; shift
    printf '%s\n' "$@" | sort -g | awk -v label="$label" -v all="$*" '{ v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s=%.2f (rounds: %s)\n", label, m, all }'
}
