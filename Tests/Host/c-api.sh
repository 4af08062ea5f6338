#!/usr/bin/env bash
# The C API (Include/tokenflow.h) from C hosts: the installed library in .build/prefix (scripts/setup.d/
# 20-install-library.sh), test programs compiled here with cc through pkg-config, the dlopen example,
# model errors and default model lookup, and a valgrind leak check.
set -u
cd "$(dirname "$0")/../.."
source Tests/Host/support/check.sh
prefix=$PWD/.build/prefix
model=$PWD/Tests/Fixtures/models/sd2-tiny
work=$(mktemp -d /tmp/tokenflow-c-api-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
unset TOKENFLOW_MODEL
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig

# The installed library.
library=$prefix/lib/libtokenflow.so.0
expect "c-api pkg-config finds tokenflow" pkg-config --exists tokenflow
expect "c-api libtokenflow.so links to the soname" test "$(readlink "$prefix/lib/libtokenflow.so")" = libtokenflow.so.0
expect "c-api library needs no Swift runtime" bash -c "! readelf -d '$library' | grep -Eq 'NEEDED.*(swift|Foundation|dispatch|BlocksRuntime)|R(UN)?PATH.*(swift|/opt|/usr/lib)'"
exports=$(nm -D --defined-only "$library" | awk '{print $NF}' | sed 's/@.*//' | grep -v '^TOKENFLOW_0$' | sort | tr '\n' ' ')
expected_exports="tf_close tf_default_settings tf_get_frame tf_last_error tf_open tf_run tf_send_frame tf_strerror tf_version tf_version_string "
expect "c-api library exports exactly the header's functions" test "$exports" = "$expected_exports"

# The header on its own (strict C99, and C++), and its version against the library's and the .pc file's.
cat > "$work/header.c" <<'C'
#include <stdio.h>
#include <tokenflow.h>
int main(void) {
    printf("%d.%d.%d %s\n", TOKENFLOW_VERSION_MAJOR, TOKENFLOW_VERSION_MINOR, TOKENFLOW_VERSION_PATCH, tf_version_string());
    return tf_version() == TOKENFLOW_VERSION ? 0 : 1;
}
C
expect "c-api header compiles as strict C99" cc -std=c99 -Wall -Wextra -Wpedantic -Werror -o "$work/header" "$work/header.c" \
    $(pkg-config --cflags --libs tokenflow) -Wl,-rpath,"$prefix/lib"
version=$(pkg-config --modversion tokenflow)
expect "c-api header, library and tokenflow.pc agree on the version" test "$("$work/header")" = "$version $version"
if command -v c++ > /dev/null; then
    expect "c-api header compiles as C++" c++ -x c++ -Wall -Wextra -Werror $(pkg-config --cflags tokenflow) -c "$work/header.c" -o "$work/header-cxx.o"
fi

# Test program, linked the way hosts link (pkg-config), found at run time through an rpath.
cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -O1 -o "$work/api_test" Tests/Host/c/api_test.c \
    $(pkg-config --cflags --libs tokenflow) -lpthread -Wl,-rpath,"$prefix/lib" || { fail "c-api build api_test" "cc failed"; finish; }
# Each group prints its own PASS/FAIL lines; a crash (no FAIL line, non-zero exit) is a failure too.
group() { # NAME COMMAND...
    local name=$1; shift
    local output; output=$("$@" 2>&1); local status=$?
    echo "$output"
    if [ $status -ne 0 ] && ! grep -q '^FAIL ' <<<"$output"; then fail "$name" "exit status $status"; fi
    grep -q '^FAIL ' <<<"$output" && failures=$((failures + 1))
    return 0
}
group "c-api success" "$work/api_test" success "$model"
group "c-api misuse" "$work/api_test" misuse "$model"
group "c-api threads" "$work/api_test" threads "$model"

# Model directories that are missing, incomplete, corrupt or unsupported.
broken() { # NAME: a full copy of the tiny model to break
    rm -rf "$work/$1"; cp -rL "$model" "$work/$1"; echo "$work/$1"
}
group "c-api missing model" "$work/api_test" open-error ENOENT "$work/nonexistent" "c-api missing model dir -> ENOENT"
dir=$(broken no-vae); rm "$dir/vae/diffusion_pytorch_model.safetensors"
group "c-api missing weights" "$work/api_test" open-error ENOENT "$dir" "c-api missing weights file -> ENOENT"
dir=$(broken no-vocab); rm "$dir/tokenizer/vocab.json"
group "c-api missing vocab" "$work/api_test" open-error ENOENT "$dir" "c-api missing tokenizer file -> ENOENT"
dir=$(broken truncated); truncate -s 1000 "$dir/unet/diffusion_pytorch_model.safetensors"
group "c-api truncated weights" "$work/api_test" open-error EIO "$dir" "c-api truncated safetensors -> EIO"
dir=$(broken bad-json); echo '{"in_channels": ' > "$dir/unet/config.json"
group "c-api bad config" "$work/api_test" open-error EIO "$dir" "c-api malformed config.json -> EIO"
dir=$(broken bad-scheduler); sed -i 's/"epsilon"/"flow"/' "$dir/scheduler/scheduler_config.json"
group "c-api unsupported scheduler" "$work/api_test" open-error ENOTSUP "$dir" "c-api unsupported prediction_type -> ENOTSUP"

# Default model: $TOKENFLOW_MODEL, then <prefix>/share/tokenflow/model beside the library, else a clear error.
TOKENFLOW_MODEL=$model group "c-api TOKENFLOW_MODEL" "$work/api_test" open-ok - "c-api model from TOKENFLOW_MODEL"
mkdir -p "$work/bare/lib" "$work/usr/lib" "$work/usr/share/tokenflow"
cp "$library" "$work/bare/lib/libtokenflow.so.0"
output=$(LD_LIBRARY_PATH=$work/bare/lib "$work/api_test" open-error ENOENT - "c-api no model anywhere -> ENOENT"); echo "$output"
grep -q '^FAIL ' <<<"$output" && failures=$((failures + 1))
expect "c-api no-model message says how to set one" grep -q "TOKENFLOW_MODEL.*$work/bare/share/tokenflow/model" <<<"$output"
cp "$library" "$work/usr/lib/libtokenflow.so.0"
ln -s "$model" "$work/usr/share/tokenflow/model"
LD_LIBRARY_PATH=$work/usr/lib group "c-api installed model" "$work/api_test" open-ok - "c-api model from <prefix>/share/tokenflow/model"

# The dlopen example: generated clip -> raw RGB24, then that file back in -> PPM frames.
cc -Wall -Wextra -Werror -O1 -I Include -o "$work/edit_clip" Examples/edit_clip.c -ldl || { fail "c-api build edit_clip" "cc failed"; finish; }
quick=(-m "$model" --steps 2 --inversion-steps 2 --input-size -s 64x48)
"$work/edit_clip" "$prefix/lib/libtokenflow.so" "${quick[@]}" -n 5 -o "$work/out.rgb" > "$work/example.log" 2>&1
expect "c-api example edits a generated clip" test $? -eq 0 -a "$(stat -c %s "$work/out.rgb" 2>/dev/null)" = $((5 * 64 * 48 * 3))
expect "c-api example prints progress" grep -q "sampling *4/4" "$work/example.log"
mkdir -p "$work/ppm"
"$work/edit_clip" "$prefix/lib/libtokenflow.so" "${quick[@]}" -i "$work/out.rgb" -o "$work/ppm/" > /dev/null 2>&1
expect "c-api example reads raw RGB24 and writes PPM frames" test "$(ls "$work/ppm" | wc -l)" -eq 5 -a "$(head -c 2 "$work/ppm/frame-0004.ppm")" = P6
bad_example() { # NAME EXPECTED-MESSAGE ARGS...
    local name=$1 message=$2; shift 2
    "$work/edit_clip" "$@" > "$work/err.log" 2>&1; local status=$?
    if [ $status -ne 0 ] && grep -q -- "$message" "$work/err.log"; then pass "$name"; else fail "$name" "exit $status: $(head -c 300 "$work/err.log")"; fi
}
bad_example "c-api example: library not found" "cannot load" "$work/nope.so" -o "$work/x.rgb"
bad_example "c-api example: not a libtokenflow" "has no tf_version" "$(ldconfig -p | awk '/libm.so.6 /{print $NF; exit}')" -o "$work/x.rgb"
bad_example "c-api example: missing model" "missing model file" "$prefix/lib/libtokenflow.so" -m "$work/nope" -o "$work/x.rgb"

# Leaks: one pass over the success and error paths under memcheck. Swift's runtime keeps one-time
# metadata caches ("still reachable", "possibly lost"); nothing may be definitely lost.
if command -v valgrind > /dev/null; then
    valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --log-file="$work/valgrind.log" \
        "$work/api_test" leaks "$model" > "$work/leaks.log" 2>&1; status=$?
    grep -E "(definitely|indirectly|possibly) lost:|still reachable:|ERROR SUMMARY" "$work/valgrind.log" | sed 's/^==[0-9]*== */  valgrind: /'
    expect "c-api leaks run passes under valgrind" bash -c "! grep -q '^FAIL' '$work/leaks.log' && grep -q '^PASS leaks frames' '$work/leaks.log'"
    expect "c-api valgrind: no memory errors, nothing definitely lost" test $status -eq 0
else
    fail "c-api valgrind" "valgrind is not installed (scripts/setup.d/20-install-library.sh installs it)"
fi
finish
