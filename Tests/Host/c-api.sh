#!/usr/bin/env bash
# The C API (Include/tokenflow.h) from C hosts: the installed library in .build/prefix (scripts/setup.d/
# 20-install-library.sh), test programs compiled here with cc through pkg-config (the settings table and
# grammar, editing, the streaming loop, windows, opaque values, latents in a temporary file, misuse, keyframe
# schedules, threads), a caller built against an older header, the dlopen example, model errors and default
# model lookup, and a valgrind leak check.
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
expected_exports="tf_close tf_end_of_stream tf_get_frame tf_last_error tf_open tf_option tf_run tf_send_frame tf_set_keyframes \
tf_set_opaque_release tf_set_progress_callback tf_settings_free tf_settings_get tf_settings_new tf_settings_set tf_strerror \
tf_version tf_version_string "
expect "c-api library exports exactly the header's functions" test "$exports" = "$expected_exports"
header_functions=$(grep -o 'TF_API [^(]*(' Include/tokenflow.h | grep -o 'tf_[a-z_]*' | sort | tr '\n' ' ')
expect "c-api the expected exports are the header's TF_API functions" test "$header_functions" = "$expected_exports"

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
    $(pkg-config --cflags --libs tokenflow) -lpthread -lm -Wl,-rpath,"$prefix/lib" || { fail "c-api build api_test" "cc failed"; finish; }
# Each group prints its own PASS/FAIL lines (exit 1 if any failed). A crash or hang (exit status above 1;
# or non-zero without a FAIL line) is a failure of its own, beside any FAIL lines printed before it.
group() { # NAME COMMAND...
    local name=$1; shift
    local output; output=$(timeout 600 "$@" 2>&1); local status=$?
    echo "$output"
    grep -q '^FAIL ' <<<"$output" && failures=$((failures + 1))
    if [ $status -gt 1 ] || { [ $status -ne 0 ] && ! grep -q '^FAIL ' <<<"$output"; }; then
        fail "$name" "exit status $status$([ $status -ge 128 ] && echo " (killed by signal $((status - 128)))")$([ $status -eq 124 ] && echo " (timed out)")"
    fi
    return 0
}
group "c-api settings" "$work/api_test" settings
group "c-api success" "$work/api_test" success "$model"
group "c-api misuse" "$work/api_test" misuse "$model"
group "c-api window" "$work/api_test" window "$model"
group "c-api opaque" "$work/api_test" opaque "$model"
mkdir -p "$work/spill"
group "c-api spill" "$work/api_test" spill "$model" "$work/spill"
group "c-api keyframes" "$work/api_test" keyframes "$model"
for count in SIZE_MAX '2^63' 'SIZE_MAX/4+1' '2^40'; do
    group "c-api keyframes count $count" "$work/api_test" keyframes-count "$model" "$count"
done
group "c-api threads" "$work/api_test" threads "$model"

# Growth: a caller compiled against an older header, whose library structs end earlier (TFOption without
# choice_help and methods, TFProgress without step, steps and window, TFFrame without opaque) and which sets
# only the settings it knows, reads the same options, progress and frames as a caller of this header that
# sets every setting to its default: the structs only grow at the end, and settings it never sets keep their
# defaults.
mkdir -p "$work/older-header"
awk '
    /^typedef struct TFOption/ { keep_until = "choices;" }
    /^typedef struct TFProgress/ { keep_until = "completed, total;" }
    /^typedef struct TFFrame/ { keep_until = "int64_t pts;" }
    skipping && /^} TF(Option|Progress|Frame);/ { skipping = 0 }
    skipping { next }
    { print }
    keep_until != "" && index($0, keep_until) { skipping = 1; keep_until = "" }
' Include/tokenflow.h > "$work/older-header/tokenflow.h"
expect "c-api older header ends TFOption, TFProgress and TFFrame earlier" bash -c "
    ! grep -Eq 'choice_help|methods;|int step, steps|int window;|void \*opaque; ' '$work/older-header/tokenflow.h' &&
    grep -q 'const char \*const \*choices;' '$work/older-header/tokenflow.h' && grep -q 'int completed, total;' '$work/older-header/tokenflow.h' &&
    grep -q '^    int64_t pts;' '$work/older-header/tokenflow.h' && grep -q '^} TFFrame;' '$work/older-header/tokenflow.h'"
cat > "$work/older.c" <<'C'
/* A host written against an older tokenflow.h: it knows fewer struct fields and sets only these settings. */
#include <stdint.h>
#include <stdio.h>
#include <tokenflow.h>
static int on_progress(void *opaque, const TFProgress *p) {
    (void)opaque;
    printf("progress %d %s %d/%d\n", p->stage, p->stage_name, p->completed, p->total);
    return 0;
}
int main(int argc, char **argv) {
    if (argc != 2) return 2;
    for (int i = 0; tf_option(i); i++) {
        const TFOption *o = tf_option(i);
        printf("option %s type=%d default=\"%s\" min=%g max=%g choices=", o->name, o->type, o->default_value, o->min, o->max);
        for (int c = 0; o->choices && o->choices[c]; c++) printf("%s%s", c ? "," : "", o->choices[c]);
        printf(" help=%s\n", o->help);
    }
    TFSettings *s = NULL;
    tf_settings_new(&s);
    const char *known[][2] = {{"model", argv[1]}, {"prompt", "a marble statue"}, {"steps", "2"}, {"inversion_steps", "2"},
                              {"size", "input"}};
    for (int i = 0; i < 5; i++)
        if (tf_settings_set(s, known[i][0], known[i][1]) != TF_OK) printf("set %s failed: %s\n", known[i][0], tf_last_error(NULL));
    for (int i = 0; tf_option(i); i++) printf("value %s=\"%s\"\n", tf_option(i)->name, tf_settings_get(s, tf_option(i)->name));
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) != TF_OK) { printf("open failed: %s\n", tf_last_error(NULL)); return 1; }
    tf_settings_free(&s);
    tf_set_progress_callback(ctx, on_progress, NULL);
    static uint8_t frame[48 * (64 * 3 + 16)];
    const TFFrame *out;
    for (int i = 0; i <= 3; i++) { /* api_test dump's stream: its make_frame and pts_of, then the end of the stream */
        if (i < 3) {
            for (int y = 0; y < 48; y++) {
                uint8_t *row = frame + y * (64 * 3 + 16);
                for (int x = 0; x < 64; x++) {
                    row[3 * x + 0] = (uint8_t)((x + 4 * i) * 4);
                    row[3 * x + 1] = (uint8_t)((y + 2 * i) * 5);
                    row[3 * x + 2] = (uint8_t)(((x / 8 + y / 8 + i) % 2) * 200);
                }
                for (int x = 3 * 64; x < 3 * 64 + 16; x++) row[x] = 0xAB;
            }
            if (tf_send_frame(ctx, frame, 64, 48, 64 * 3 + 16, (int64_t)0x123456789A * i * i - 5, NULL) != TF_OK)
                printf("send failed: %s\n", tf_last_error(ctx));
        } else if (tf_end_of_stream(ctx) != TF_OK) {
            printf("end of stream failed: %s\n", tf_last_error(ctx));
        }
        int code;
        while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
            uint64_t hash = 1469598103934665603u;
            for (int y = 0; y < out->height; y++)
                for (int x = 0; x < 3 * out->width; x++) hash = (hash ^ out->data[y * out->stride + x]) * 1099511628211u;
            printf("frame %dx%d stride %td pts %lld fnv %016llx\n", out->width, out->height, out->stride, (long long)out->pts,
                   (unsigned long long)hash);
        }
        if (code != TF_EAGAIN) printf("get failed: %s\n", tf_last_error(ctx));
    }
    tf_close(&ctx);
    fprintf(stderr, "sizes TFOption=%zu TFProgress=%zu TFFrame=%zu\n", sizeof(TFOption), sizeof(TFProgress), sizeof(TFFrame));
    return 0;
}
C
if cc -std=c99 -Wall -Wextra -Werror -O1 -I "$work/older-header" -o "$work/older" "$work/older.c" \
        $(pkg-config --libs tokenflow) -Wl,-rpath,"$prefix/lib"; then
    "$work/older" "$model" > "$work/older.out" 2> "$work/older.sizes"
    "$work/api_test" dump "$model" > "$work/newer.out" 2> "$work/newer.sizes"
    sizes='s/^sizes TFOption=\([0-9]*\) TFProgress=\([0-9]*\) TFFrame=\([0-9]*\)$/\1 \2 \3/p'
    read -r older_option older_progress older_frame < <(sed -n "$sizes" "$work/older.sizes")
    read -r newer_option newer_progress newer_frame < <(sed -n "$sizes" "$work/newer.sizes")
    echo "  TFOption/TFProgress/TFFrame: $older_option/$older_progress/$older_frame bytes in the older header," \
        "$newer_option/$newer_progress/$newer_frame in this one"
    expect "c-api older header's structs are smaller" test "${older_option:-0}" -gt 0 -a "${older_option:-0}" -lt "${newer_option:-0}" \
        -a "${older_progress:-0}" -lt "${newer_progress:-0}" -a "${older_frame:-0}" -lt "${newer_frame:-0}"
    expect "c-api older caller edits" bash -c "grep -q '^progress 2 sampling 4/4' '$work/older.out' && test \$(grep -c '^frame 64x48' '$work/older.out') -eq 3 &&
        ! grep -q 'failed' '$work/older.out'"
    expect "c-api older caller reads the options' first fields like a current caller" \
        diff <(grep '^option' "$work/older.out") <(grep '^option' "$work/newer.out")
    expect "c-api older caller reads TFProgress's first fields like a current caller" \
        diff <(grep '^progress' "$work/older.out") <(grep '^progress' "$work/newer.out")
    expect "c-api settings an older caller never sets hold the defaults" \
        diff <(grep '^value' "$work/older.out") <(grep '^value' "$work/newer.out")
    expect "c-api older caller's edit equals one with every default set explicitly" \
        diff <(grep -v '^option\|^value\|^progress' "$work/older.out") <(grep -v '^option\|^value\|^progress' "$work/newer.out")
else
    fail "c-api build a caller of an older header" "cc failed"
fi

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

# Single-file checkpoints: an SD 2.x file that does not say what it predicts needs the prediction setting;
# pickles are refused unopened.
group "c-api SD 2.x single file without prediction" "$work/api_test" open-error EINVAL "$model.safetensors" "c-api SD 2.x single file, prediction auto -> EINVAL"
printf 'not a pickle' > "$work/model.ckpt"
group "c-api pickle" "$work/api_test" open-error ENOTSUP "$work/model.ckpt" "c-api .ckpt pickle -> ENOTSUP"

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
quick=(model="$model" steps=2 inversion_steps=2 size=input)
"$work/edit_clip" "$prefix/lib/libtokenflow.so" -n 5 -o "$work/out.rgb" "${quick[@]}" > "$work/example.log" 2>&1
expect "c-api example edits a generated clip" test $? -eq 0 -a "$(stat -c %s "$work/out.rgb" 2>/dev/null)" = $((5 * 64 * 48 * 3))
expect "c-api example prints its settings as read back" grep -q "^set size=input" "$work/example.log"
expect "c-api example prints progress" grep -q "sampling *4/4 *step 2/2" "$work/example.log"
"$work/edit_clip" "$prefix/lib/libtokenflow.so" -n 5 -o "$work/windows.rgb" "${quick[@]}" window=2 > "$work/windows.log" 2>&1
expect "c-api example streams a clip in windows" test $? -eq 0 -a "$(stat -c %s "$work/windows.rgb" 2>/dev/null)" = $((5 * 64 * 48 * 3))
expect "c-api example prints each window's progress" grep -q "window 2: sampling *4/4 *step 2/2" "$work/windows.log"
mkdir -p "$work/ppm"
"$work/edit_clip" "$prefix/lib/libtokenflow.so" -i "$work/out.rgb" -o "$work/ppm/" "${quick[@]}" > /dev/null 2>&1
expect "c-api example reads raw RGB24 and writes PPM frames" test "$(ls "$work/ppm" | wc -l)" -eq 5 -a "$(head -c 2 "$work/ppm/frame-0004.ppm")" = P6
"$work/edit_clip" "$prefix/lib/libtokenflow.so" -n 5 -k 1,3,0,4 -o "$work/keys.rgb" "${quick[@]}" batch_size=3 > "$work/keys.log" 2>&1
expect "c-api example takes a keyframe schedule" test $? -eq 0 -a "$(stat -c %s "$work/keys.rgb" 2>/dev/null)" = $((5 * 64 * 48 * 3))
# On a CPU without AVX (an emulated Nehalem) the library runs its portable path: a short clip, never SIGILL.
timeout 600 qemu-x86_64 -cpu Nehalem "$work/edit_clip" "$prefix/lib/libtokenflow.so" -n 2 -o "$work/nehalem.rgb" "${quick[@]}" \
    > "$work/nehalem.log" 2>&1
expect "c-api example edits on a CPU without AVX" test $? -eq 0 -a "$(stat -c %s "$work/nehalem.rgb" 2>/dev/null)" = $((2 * 64 * 48 * 3))
# The same edit from each tiny model's single-file checkpoint and from its folder: the same bytes.
for name in sd2-tiny sd15-tiny; do
    for source in "$name" "$name.safetensors"; do
        "$work/edit_clip" "$prefix/lib/libtokenflow.so" -n 5 -o "$work/$source.rgb" "${quick[@]}" model="$PWD/Tests/Fixtures/models/$source" \
            prediction=epsilon > /dev/null 2>&1
    done
    expect "c-api example: $name single file gives the folder's bytes" \
        bash -c "test -s '$work/$name.rgb' && cmp '$work/$name.rgb' '$work/$name.safetensors.rgb'"
done
"$work/edit_clip" "$prefix/lib/libtokenflow.so" --options > "$work/options.txt" 2> /dev/null
expect "c-api example lists every setting of the library" test "$(grep -c '^[a-z_][a-z_]* ' "$work/options.txt")" -eq "$(grep -c '^option ' "$work/newer.out")"
expect "c-api example lists the choices with their help" grep -q "^ *2 = reconstruct .*[a-z]" "$work/options.txt"
bad_example() { # NAME EXPECTED-MESSAGE ARGS...
    local name=$1 message=$2; shift 2
    "$work/edit_clip" "$@" > "$work/err.log" 2>&1; local status=$?
    if [ $status -ne 0 ] && grep -q -- "$message" "$work/err.log"; then pass "$name"; else fail "$name" "exit $status: $(head -c 300 "$work/err.log")"; fi
}
bad_example "c-api example: library not found" "cannot load" "$work/nope.so" -o "$work/x.rgb"
bad_example "c-api example: not a libtokenflow" "has no tf_version" "$(ldconfig -p | awk '/libm.so.6 /{print $NF; exit}')" -o "$work/x.rgb"
bad_example "c-api example: missing model" "missing model file" "$prefix/lib/libtokenflow.so" -o "$work/x.rgb" model="$work/nope"
bad_example "c-api example: bad value names the setting and the range" "steps: '0' is not allowed.*1 to 1000" \
    "$prefix/lib/libtokenflow.so" -o "$work/x.rgb" steps=0
bad_example "c-api example: unknown setting" "unknown setting 'bogus'" "$prefix/lib/libtokenflow.so" -o "$work/x.rgb" bogus=1
bad_example "c-api example: argument not NAME=VALUE" "is not NAME=VALUE" "$prefix/lib/libtokenflow.so" -o "$work/x.rgb" steps
bad_example "c-api example: schedule that does not fit the clip" "keyframe" "$prefix/lib/libtokenflow.so" -n 5 -k 7,7 \
    -o "$work/x.rgb" "${quick[@]}"
# Broken weights, bad config values, FIFOs, memory and older CPUs through this example (and every other
# host): Tests/Host/bad-inputs.table.

# Out of memory under an address-space limit: TF_ENOMEM with a message, the context closes, a smaller edit
# works afterwards. The limit leaves room for the process, OpenBLAS's buffers and the tiny model, not for
# 16384x16384 working tensors.
(ulimit -v 1500000; timeout 120 "$work/api_test" enomem "$model") > "$work/enomem.log" 2>&1
expect "c-api under ulimit -v: no signal, no hang" test $? -lt 128
cat "$work/enomem.log"

# Leaks: one pass over the success and error paths under memcheck. Swift's runtime keeps one-time
# metadata caches ("still reachable", "possibly lost"); nothing may be definitely or indirectly lost.
if command -v valgrind > /dev/null; then
    mkdir -p "$work/leaks-spill"
    valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --log-file="$work/valgrind.log" \
        "$work/api_test" leaks "$model" "$work/leaks-spill" > "$work/leaks.log" 2>&1; status=$?
    grep -v '^PASS' "$work/leaks.log"
    grep -E "(definitely|indirectly|possibly) lost:|still reachable:|ERROR SUMMARY" "$work/valgrind.log" | sed 's/^==[0-9]*== */  valgrind: /'
    expect "c-api leaks run passes under valgrind" bash -c "! grep -q '^FAIL' '$work/leaks.log' && grep -q '^PASS leaks frames' '$work/leaks.log'"
    expect "c-api valgrind: no memory errors, nothing definitely or indirectly lost" test $status -eq 0
    expect "c-api valgrind: 0 bytes definitely and indirectly lost" bash -c "
        grep -Eq 'definitely lost: 0 bytes|no leaks are possible' '$work/valgrind.log' &&
        ! grep -E '(definitely|indirectly) lost: [1-9]' '$work/valgrind.log'"
else
    fail "c-api valgrind" "valgrind is not installed (scripts/setup.d/20-install-library.sh installs it)"
fi
finish
