/*
 * C-host tests of libtokenflow's API (Include/tokenflow.h), linked like a real host links it.
 *
 *     api_test GROUP [ARG...]     prints "PASS <name>" / "FAIL <name>: <why>" lines; exit 1 on any failure
 *
 * Groups (Tests/Host/c-api.sh runs each with the environment it needs):
 *     success MODEL            a full edit on the tiny model: count, size, stride, pts, progress, drain
 *     misuse MODEL             NULL arguments, bad settings and structs, state machine, cancellation, ...
 *     threads MODEL            contexts editing in parallel; tf_open errors kept per thread
 *     leaks MODEL              one pass over the success and error paths, small enough for valgrind
 *     open-error CODE MODEL NAME   tf_open with model_path MODEL ("-" = NULL) must fail with CODE (ENOENT, ...)
 *     open-ok MODEL NAME           tf_open with model_path MODEL ("-" = NULL) must succeed (default lookup)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tokenflow.h>

static int failures;

static void check(int ok, const char *name, const char *detail) {
    if (ok) {
        printf("PASS %s\n", name);
    } else {
        printf("FAIL %s: %s\n", name, detail);
        failures++;
    }
    fflush(stdout);
}

/* A call that must return `expected` and leave a non-empty message in tf_last_error(ctx). */
static void check_code(const char *name, int code, int expected, const TFContext *ctx) {
    char detail[1024];
    const char *message = tf_last_error(ctx);
    snprintf(detail, sizeof detail, "returned %d (%s), expected %d (%s); last error \"%s\"", code, tf_strerror(code),
             expected, tf_strerror(expected), message ? message : "(NULL)");
    check(code == expected && message != NULL && message[0] != '\0', name, detail);
}

/* A call that must succeed; `ctx` is where its error message would be (NULL for tf_open). The message is
 * read here, after the call: as an argument beside the call it could be read before the call ran. */
static void check_ok(const char *name, int code, const TFContext *ctx) {
    char detail[1024];
    snprintf(detail, sizeof detail, "returned %d (%s): %s", code, tf_strerror(code), tf_last_error(ctx));
    check(code == TF_OK, name, detail);
}

/* Small, fast settings: 2 sampling and 2 inversion steps at the input size. */
static TFSettings quick_settings(const char *model) {
    TFSettings s;
    tf_default_settings(&s);
    s.model_path = model;
    s.prompt = "a marble statue";
    s.inversion_prompt = "a moving pattern";
    s.steps = 2;
    s.inversion_steps = 2;
    s.working_width = -1;
    s.working_height = -1;
    s.batch_size = 4;
    return s;
}

enum { W = 64, H = 48, PAD = 16, STRIDE = W * 3 + PAD, FRAMES = 6 };

/* Frame i of a moving pattern, with PAD bytes of garbage after each row (the stride must be honoured). */
static void make_frame(uint8_t *frame, int i) {
    for (int y = 0; y < H; y++) {
        uint8_t *row = frame + y * STRIDE;
        for (int x = 0; x < W; x++) {
            row[3 * x + 0] = (uint8_t)((x + 4 * i) * 4);
            row[3 * x + 1] = (uint8_t)((y + 2 * i) * 5);
            row[3 * x + 2] = (uint8_t)(((x / 8 + y / 8 + i) % 2) * 200);
        }
        memset(row + 3 * W, 0xAB, PAD);
    }
}

/* Irregular, negative and beyond 32 bits: the pts must come back exactly as sent. */
static int64_t pts_of(int i) { return (int64_t)0x123456789A * i * i - 5; }

static int send_clip(TFContext *ctx, int count) {
    static uint8_t frame[STRIDE * H];
    for (int i = 0; i < count; i++) {
        make_frame(frame, i);
        int code = tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i));
        if (code != TF_OK) return code;
    }
    return TF_OK;
}

struct progress_log {
    int calls, last_stage, out_of_order, bad_counts, seen[4], cancel_at;
};

static int on_progress(void *opaque, int stage, int completed, int total) {
    struct progress_log *log = opaque;
    log->calls++;
    if (stage < log->last_stage || stage < TF_STAGE_ENCODING || stage > TF_STAGE_DECODING) log->out_of_order++;
    if (completed < 1 || completed > total) log->bad_counts++;
    if (stage >= TF_STAGE_ENCODING && stage <= TF_STAGE_DECODING) log->seen[stage] = 1;
    log->last_stage = stage;
    return log->cancel_at > 0 && log->calls >= log->cancel_at;
}

static int success(const char *model) {
    TFSettings s = quick_settings(model);
    TFContext *ctx = NULL;
    int code = tf_open(&ctx, &s);
    if (code != TF_OK) {
        printf("FAIL success open: %d %s\n", code, tf_last_error(NULL));
        return 1;
    }
    check(ctx != NULL, "success open", "ctx is NULL");
    check_ok("success send frames", send_clip(ctx, FRAMES), ctx);

    struct progress_log log = {0};
    code = tf_run(ctx, on_progress, &log);
    check_ok("success run", code, ctx);
    check(log.calls > 0 && log.seen[0] && log.seen[1] && log.seen[2] && log.seen[3], "success progress reports every stage",
          "a stage was never reported");
    check(log.out_of_order == 0 && log.bad_counts == 0, "success progress in order with 1 <= completed <= total",
          "stages went backwards or counts were out of range");

    uint8_t input[STRIDE * H];
    int count = 0, sizes_ok = 1, pts_ok = 1, differs = 0;
    TFFrame out;
    while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
        if (out.width != W || out.height != H || out.stride < 3 * W || out.data == NULL) sizes_ok = 0;
        if (out.pts != pts_of(count)) pts_ok = 0;
        make_frame(input, count);
        for (int y = 0; y < H && out.data; y++)
            if (memcmp(out.data + y * out.stride, input + y * STRIDE, 3 * W) != 0) differs++;
        count++;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "%d frames out, %d in", count, FRAMES);
    check(count == FRAMES, "success frame count", detail);
    check(sizes_ok, "success frame size and stride", "an output frame is not 64x48 RGB24");
    check(pts_ok, "success pts carried through in order", "an output pts differs from its input's");
    check(differs > 0, "success output differs from input", "the edit returned the input unchanged");
    check_code("success drained -> EAGAIN", code, TF_EAGAIN, ctx);
    check_code("success EAGAIN again", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    tf_close(&ctx);
    check(ctx == NULL, "success close sets ctx to NULL", "ctx not NULL");

    /* An explicit keyframe schedule: 2 steps x 2 batches (frames 0-3 and 4-5). */
    static const int32_t keys[] = {0, 4, 3, 5};
    s.keyframes = keys;
    s.keyframes_count = 4;
    code = tf_open(&ctx, &s);
    check_ok("success open with keyframes", code, NULL);
    if (code == TF_OK) {
        send_clip(ctx, FRAMES);
        check_ok("success run with keyframes, no callback", tf_run(ctx, NULL, NULL), ctx);
        count = 0;
        while (tf_get_frame(ctx, &out) == TF_OK) count++;
        check(count == FRAMES, "success keyframes frame count", "wrong frame count");
        tf_close(&ctx);
    }
    return failures != 0;
}

/* tf_open with `s` must fail with `expected`, leave ctx NULL and explain why in tf_last_error(NULL). */
static void open_fails(const char *name, const TFSettings *s, int expected) {
    TFContext *ctx = (TFContext *)&ctx; /* not NULL: tf_open must reset it */
    check_code(name, tf_open(&ctx, s), expected, NULL);
    if (ctx != NULL) {
        printf("FAIL %s: ctx not NULL after a failed tf_open\n", name);
        failures++;
    }
}

static TFContext *open_quick(const char *model) {
    TFSettings s = quick_settings(model);
    TFContext *ctx = NULL;
    if (tf_open(&ctx, &s) != TF_OK) {
        printf("FAIL open %s: %s\n", model, tf_last_error(NULL));
        failures++;
    }
    return ctx;
}

static int misuse(const char *model) {
    char detail[256];
    uint8_t frame[STRIDE * H];
    make_frame(frame, 0);
    TFFrame out;

    /* Version and strings. */
    snprintf(detail, sizeof detail, "tf_version %u, header %u", tf_version(), (unsigned)TOKENFLOW_VERSION);
    check(tf_version() == TOKENFLOW_VERSION, "version matches the header", detail);
    check(strcmp(tf_version_string(), "0.1.0") == 0, "version string", tf_version_string());
    const int codes[] = {TF_OK, TF_EPERM, TF_ENOENT, TF_EIO, TF_EAGAIN, TF_ENOMEM, TF_EINVAL, TF_ENOTSUP, TF_ECANCELED, -9999, 7};
    int strings_ok = 1;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (tf_strerror(codes[i]) == NULL || tf_strerror(codes[i])[0] == '\0') strings_ok = 0;
    check(strings_ok, "tf_strerror is never NULL or empty", "empty string");

    /* Defaults. */
    TFSettings d;
    memset(&d, 0x5A, sizeof d);
    tf_default_settings(&d);
    tf_default_settings(NULL);
    int reserved_zero = 1;
    for (size_t i = 0; i < sizeof d.reserved; i++) reserved_zero &= d.reserved[i] == 0;
    check(d.struct_size == sizeof(TFSettings) && d.model_path == NULL && d.prompt == NULL && d.inversion_prompt == NULL &&
              d.negative_prompt && strcmp(d.negative_prompt, "ugly, blurry, low res, unrealistic, unaesthetic") == 0 &&
              d.method == TF_METHOD_TOKENFLOW && d.steps == 50 && d.inversion_steps == 50 && d.guidance_scale == 7.5f &&
              d.batch_size == 8 && d.pnp_attn_t == 0.5f && d.pnp_f_t == 0.8f && d.strength == 0.8f && d.seed == 1 &&
              d.working_width == 0 && d.working_height == 0 && d.working_longer_side == 512 && d.threads == 0 &&
              d.keyframes == NULL && d.keyframes_count == 0 && reserved_zero,
          "tf_default_settings fills the documented defaults", "a default differs from tokenflow.h");

    /* tf_open: NULL arguments, struct_size, settings. */
    TFSettings s = quick_settings(model);
    check_code("open NULL out -> EINVAL", tf_open(NULL, &s), TF_EINVAL, NULL);
    open_fails("open NULL settings -> EINVAL", NULL, TF_EINVAL);
    s.struct_size = sizeof(TFSettings) - 8;
    open_fails("open struct_size too small -> EINVAL", &s, TF_EINVAL);
    s.struct_size = 0;
    open_fails("open struct_size 0 -> EINVAL", &s, TF_EINVAL);
    struct { TFSettings settings; uint8_t newer_fields[32]; } newer;
    memset(&newer, 0, sizeof newer);
    newer.settings = quick_settings(model);
    newer.settings.struct_size = sizeof newer;
    open_fails("open struct_size larger than known -> ENOTSUP", &newer.settings, TF_ENOTSUP);

#define BAD_SETTING(name, assignment)                     \
    do {                                                  \
        s = quick_settings(model);                        \
        assignment;                                       \
        open_fails("open " name " -> EINVAL", &s, TF_EINVAL); \
    } while (0)
    BAD_SETTING("reserved not zero", s.reserved[10] = 1);
    BAD_SETTING("steps 0", s.steps = 0);
    BAD_SETTING("steps 1001", s.steps = 1001);
    BAD_SETTING("inversion_steps not a multiple of steps", (s.steps = 3, s.inversion_steps = 2));
    BAD_SETTING("method 7", s.method = 7);
    BAD_SETTING("batch_size 0", s.batch_size = 0);
    BAD_SETTING("pnp_attn_t 2", s.pnp_attn_t = 2);
    BAD_SETTING("strength NaN", s.strength = 0.0f / 0.0f);
    BAD_SETTING("working size 12x12", (s.working_width = 12, s.working_height = 12));
    BAD_SETTING("working size 0x64", (s.working_width = 0, s.working_height = 64));
    BAD_SETTING("working_longer_side 4", (s.working_width = 0, s.working_height = 0, s.working_longer_side = 4));
    BAD_SETTING("working_longer_side 2^30", (s.working_width = 0, s.working_height = 0, s.working_longer_side = 1 << 30));
    BAD_SETTING("working size 2^30 x 8", (s.working_width = 1 << 30, s.working_height = 8));
    BAD_SETTING("threads -1", s.threads = -1);
    BAD_SETTING("keyframes NULL with a count", s.keyframes_count = 4);
    BAD_SETTING("keyframes_count huge", (s.keyframes = (const int32_t *)&s, s.keyframes_count = (size_t)-1));
    BAD_SETTING("prompt not UTF-8", s.prompt = "caf\xC3");

    /* NULL contexts: an error code, a message on the thread, never a crash. */
    check_code("send_frame NULL ctx -> EINVAL", tf_send_frame(NULL, frame, W, H, STRIDE, 0), TF_EINVAL, NULL);
    check_code("run NULL ctx -> EINVAL", tf_run(NULL, NULL, NULL), TF_EINVAL, NULL);
    check_code("get_frame NULL ctx -> EINVAL", tf_get_frame(NULL, &out), TF_EINVAL, NULL);
    tf_close(NULL);
    TFContext *null_ctx = NULL;
    tf_close(&null_ctx);
    check(1, "close NULL and *ctx NULL are ignored", "");

    /* Frame arguments and the state machine on a real context. */
    TFContext *ctx = open_quick(model);
    if (!ctx) return 1;
    check(tf_last_error(ctx) != NULL && tf_last_error(ctx)[0] == '\0', "last_error is empty on a fresh context",
          "not empty");
    check_code("send_frame NULL rgb -> EINVAL", tf_send_frame(ctx, NULL, W, H, STRIDE, 0), TF_EINVAL, ctx);
    check_code("send_frame width 0 -> EINVAL", tf_send_frame(ctx, frame, 0, H, STRIDE, 0), TF_EINVAL, ctx);
    check_code("send_frame height -1 -> EINVAL", tf_send_frame(ctx, frame, W, -1, STRIDE, 0), TF_EINVAL, ctx);
    check_code("send_frame width 100000 -> EINVAL", tf_send_frame(ctx, frame, 100000, 1, 300000, 0), TF_EINVAL, ctx);
    check_code("send_frame stride < 3*width -> EINVAL", tf_send_frame(ctx, frame, W, H, 3 * W - 1, 0), TF_EINVAL, ctx);
    check_code("send_frame negative stride -> EINVAL", tf_send_frame(ctx, frame, W, H, -STRIDE, 0), TF_EINVAL, ctx);
    check_code("send_frame stride x height overflow -> EINVAL", tf_send_frame(ctx, frame, W, H, PTRDIFF_MAX / 2, 0),
               TF_EINVAL, ctx);
    check_code("get_frame before run -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("get_frame NULL frame -> EINVAL", tf_get_frame(ctx, NULL), TF_EINVAL, ctx);
    check_ok("send_frame after rejected frames", tf_send_frame(ctx, frame, W, H, STRIDE, 0), ctx);
    check_code("send_frame of another size mid-clip -> EINVAL", tf_send_frame(ctx, frame, W / 2, H, STRIDE, 1), TF_EINVAL,
               ctx);
    check_ok("send_frame of the clip's size after that", tf_send_frame(ctx, frame, W, H, STRIDE, 1), ctx);
    check_ok("run after rejected frames", tf_run(ctx, NULL, NULL), ctx);
    check_code("send_frame after run -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 2), TF_EPERM, ctx);
    check_code("run twice -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    int count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 2, "only the accepted frames are edited", "wrong frame count");
    tf_close(&ctx);
    tf_close(&ctx);
    check(ctx == NULL, "double close", "ctx not NULL");

    ctx = open_quick(model);
    if (!ctx) return 1;
    check_code("run without frames -> EINVAL", tf_run(ctx, NULL, NULL), TF_EINVAL, ctx);
    check_code("get_frame after a failed run -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    tf_close(&ctx);

    /* Cancellation: the first progress report says stop. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    struct progress_log log = {0};
    log.cancel_at = 1;
    check_code("cancel from the callback -> ECANCELED", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    check(log.calls == 1, "no progress after cancelling", "callback called again");
    check_code("get_frame after cancel -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("send_frame after cancel -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0), TF_EPERM, ctx);
    check_code("run after cancel -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    tf_close(&ctx);

    /* Cancellation late in the run (during sampling). */
    ctx = open_quick(model);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    memset(&log, 0, sizeof log);
    log.cancel_at = 8; /* 3 encoded frames + 2 inversion calls, then the 3rd sampling report */
    check_code("cancel during sampling -> ECANCELED", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    check(log.last_stage == TF_STAGE_SAMPLING, "cancelled in the sampling stage", "cancelled in another stage");
    tf_close(&ctx);

    /* Keyframe schedules that do not fit the clip: tf_run rejects them before editing. */
    s = quick_settings(model);
    static const int32_t three[] = {0, 1, 2};
    s.keyframes = three;
    s.keyframes_count = 3;
    ctx = NULL;
    check_ok("open with keyframes", tf_open(&ctx, &s), NULL);
    if (ctx) {
        send_clip(ctx, FRAMES);
        memset(&log, 0, sizeof log);
        check_code("run with keyframes_count not steps x batches -> EINVAL", tf_run(ctx, on_progress, &log), TF_EINVAL, ctx);
        check(log.calls == 0, "bad keyframes rejected before any work", "progress was reported");
        tf_close(&ctx);
    }
    static const int32_t outside[] = {0, 4, 0, 3}; /* 3 is not in batch 1 (frames 4-5) */
    s.keyframes = outside;
    s.keyframes_count = 4;
    if (tf_open(&ctx, &s) == TF_OK) {
        send_clip(ctx, FRAMES);
        check_code("run with a keyframe outside its batch -> EINVAL", tf_run(ctx, NULL, NULL), TF_EINVAL, ctx);
        tf_close(&ctx);
    }
    return failures != 0;
}

/* FNV-1a of a whole quick edit of 3 frames (malloc'd); 0 on failure. */
static void *edit_checksum(void *model) {
    uint64_t *hash = malloc(sizeof *hash);
    *hash = 1469598103934665603u;
    TFContext *ctx = open_quick(model);
    TFFrame out;
    if (!ctx || send_clip(ctx, 3) != TF_OK || tf_run(ctx, NULL, NULL) != TF_OK) *hash = 0;
    while (*hash && tf_get_frame(ctx, &out) == TF_OK)
        for (int y = 0; y < out.height; y++)
            for (int x = 0; x < 3 * out.width; x++) *hash = (*hash ^ out.data[y * out.stride + x]) * 1099511628211u;
    tf_close(&ctx);
    return hash;
}

/* Each thread's tf_open fails differently and must see its own message. */
static void *open_error_of_this_thread(void *argument) {
    int steps = (int)(intptr_t)argument, mismatches = 0;
    char expected[64];
    snprintf(expected, sizeof expected, "got %d", steps);
    for (int i = 0; i < 200; i++) {
        TFSettings s = quick_settings("/nonexistent");
        s.steps = steps;
        TFContext *ctx = NULL;
        if (tf_open(&ctx, &s) != TF_EINVAL || !strstr(tf_last_error(NULL), expected)) mismatches++;
    }
    return (void *)(intptr_t)mismatches;
}

static int threads(const char *model) {
    uint64_t *alone = edit_checksum((void *)model);
    pthread_t a, b;
    void *result_a, *result_b;
    pthread_create(&a, NULL, edit_checksum, (void *)model);
    pthread_create(&b, NULL, edit_checksum, (void *)model);
    pthread_join(a, &result_a);
    pthread_join(b, &result_b);
    uint64_t hash_a = *(uint64_t *)result_a, hash_b = *(uint64_t *)result_b;
    char detail[128];
    snprintf(detail, sizeof detail, "alone %016llx, threads %016llx %016llx", (unsigned long long)*alone,
             (unsigned long long)hash_a, (unsigned long long)hash_b);
    check(*alone != 0 && hash_a == *alone && hash_b == *alone, "two contexts in parallel threads edit like one alone", detail);
    free(alone);
    free(result_a);
    free(result_b);

    pthread_create(&a, NULL, open_error_of_this_thread, (void *)(intptr_t)0);
    pthread_create(&b, NULL, open_error_of_this_thread, (void *)(intptr_t)2000);
    pthread_join(a, &result_a);
    pthread_join(b, &result_b);
    check(result_a == NULL && result_b == NULL, "tf_last_error(NULL) is per thread", "a thread saw another's message");
    return failures != 0;
}

static int leaks(const char *model) {
    TFSettings s = quick_settings(model);
    s.threads = 1; /* valgrind runs one thread at a time anyway */
    s.steps = 0;
    open_fails("leaks open with bad settings", &s, TF_EINVAL);
    s = quick_settings("/nonexistent");
    open_fails("leaks open with a missing model", &s, TF_ENOENT);

    s = quick_settings(model);
    s.threads = 1;
    TFContext *ctx = NULL;
    TFFrame out;
    check_ok("leaks open", tf_open(&ctx, &s), NULL);
    if (!ctx) return 1;
    check_code("leaks get before run", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    send_clip(ctx, 3);
    struct progress_log log = {0};
    log.cancel_at = 5;
    check_code("leaks cancel", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    log.cancel_at = 0;
    tf_close(&ctx);

    check_ok("leaks open again", tf_open(&ctx, &s), NULL);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    check_ok("leaks run", tf_run(ctx, on_progress, &log), ctx);
    int count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 3, "leaks frames", "wrong frame count");
    tf_close(&ctx);
    return failures != 0;
}

static int code_named(const char *name) {
    static const struct { const char *name; int code; } names[] = {
        {"ENOENT", TF_ENOENT}, {"EIO", TF_EIO}, {"ENOTSUP", TF_ENOTSUP}, {"EINVAL", TF_EINVAL}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i].name, name) == 0) return names[i].code;
    fprintf(stderr, "unknown code name %s\n", name);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "success") == 0) return success(argv[2]);
    if (argc == 3 && strcmp(argv[1], "misuse") == 0) return misuse(argv[2]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(argv[2]);
    if (argc == 3 && strcmp(argv[1], "leaks") == 0) return leaks(argv[2]);
    if (argc == 5 && strcmp(argv[1], "open-error") == 0) {
        TFSettings s = quick_settings(strcmp(argv[3], "-") == 0 ? NULL : argv[3]);
        open_fails(argv[4], &s, code_named(argv[2]));
        printf("  message: %s\n", tf_last_error(NULL));
        return failures != 0;
    }
    if (argc == 4 && strcmp(argv[1], "open-ok") == 0) {
        TFSettings s = quick_settings(strcmp(argv[2], "-") == 0 ? NULL : argv[2]);
        TFContext *ctx = NULL;
        check_ok(argv[3], tf_open(&ctx, &s), NULL);
        tf_close(&ctx);
        return failures != 0;
    }
    fprintf(stderr, "usage: %s success MODEL | misuse MODEL | threads MODEL | leaks MODEL | open-error CODE MODEL|- NAME | open-ok MODEL|- NAME\n", argv[0]);
    return 2;
}
