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
