/*
 * C-host tests of libtokenflow's API (Include/tokenflow.h), linked like a real host links it.
 *
 *     api_test GROUP [ARG...]     prints "PASS <name>" / "FAIL <name>: <why>" lines; exit 1 on any failure
 *
 * Groups (Tests/Host/c-api.sh runs each with the environment it needs):
 *     settings                 the settings table (tf_option) and every type's grammar in tf_settings_set/get
 *     success MODEL            a full edit on the tiny model: count, size, stride, pts, opaque, progress, drain;
 *                              the streaming loop (send, get, end of stream, get) gives tf_run's bytes
 *     misuse MODEL             NULL arguments, inconsistent settings, state machine, cancellation, ...
 *     window MODEL             the window setting: frames out while the stream goes on, progress per window,
 *                              window 0 edited like a clip of its own, later windows anchored to earlier ones
 *     opaque MODEL             tf_set_opaque_release: called at tf_close for exactly the frames never returned
 *     spill MODEL DIR          latent_memory 0: every latent in an unlinked temporary file in DIR (an empty
 *                              folder), the same bytes as in memory; an unusable temp_dir
 *     keyframes MODEL          tf_set_keyframes: reproducing the seeded schedule, bad schedules, state, windows
 *     keyframes-count MODEL N  tf_set_keyframes with a count no array can have: N = SIZE_MAX, 2^63,
 *                              SIZE_MAX/4+1 or 2^40 (a process each: a library that takes it may crash)
 *     threads MODEL            contexts editing in parallel; error messages kept per thread
 *     leaks MODEL DIR          one pass over the success and error paths, small enough for valgrind (DIR: an
 *                              empty folder for a spilled stream cancelled mid-sampling)
 *     dump MODEL               no checks: prints the options, progress and frames of a small streamed edit, with
 *                              every setting set explicitly to its default (c-api.sh compares it with a caller
 *                              built against an older header, which sets only a few settings)
 *     open-error CODE MODEL NAME   tf_open with model MODEL ("-" = not set) must fail with CODE (ENOENT, ...)
 *     open-ok MODEL NAME           tf_open with model MODEL ("-" = not set) must succeed (default lookup)
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tokenflow.h>

static int failures;

static void check(int ok, const char *name, const char *format, ...) {
    if (ok) {
        printf("PASS %s\n", name);
    } else {
        va_list arguments;
        va_start(arguments, format);
        printf("FAIL %s: ", name);
        vprintf(format, arguments);
        printf("\n");
        va_end(arguments);
        failures++;
    }
    fflush(stdout);
}

/* A call that must return `expected` and leave a non-empty message in tf_last_error(ctx). */
static void check_code(const char *name, int code, int expected, const TFContext *ctx) {
    const char *message = tf_last_error(ctx);
    check(code == expected && message != NULL && message[0] != '\0', name,
          "returned %d (%s), expected %d (%s); last error \"%s\"", code, tf_strerror(code), expected, tf_strerror(expected),
          message ? message : "(NULL)");
}

/* Like check_code, and the message must also contain `mention` (a setting, a folder, ...). */
static void check_code_mentions(const char *name, int code, int expected, const TFContext *ctx, const char *mention) {
    const char *message = tf_last_error(ctx);
    check(code == expected && message != NULL && strstr(message, mention) != NULL, name,
          "returned %d (%s), expected %d (%s) with a message naming \"%s\"; last error \"%s\"", code, tf_strerror(code),
          expected, tf_strerror(expected), mention, message ? message : "(NULL)");
}

/* A call that must succeed; `ctx` is where its error message would be (NULL for context-less calls). The
 * message is read here, after the call: as an argument beside the call it could be read before the call ran. */
static void check_ok(const char *name, int code, const TFContext *ctx) {
    check(code == TF_OK, name, "returned %d (%s): %s", code, tf_strerror(code), tf_last_error(ctx));
}

/* Sets a setting the test relies on; a refusal is a failure of its own. */
static void set(TFSettings *s, const char *name, const char *value) {
    if (tf_settings_set(s, name, value) != TF_OK) {
        printf("FAIL set %s=%s: %s\n", name, value ? value : "(NULL)", tf_last_error(NULL));
        failures++;
    }
}

/* Small, fast settings: 2 sampling and 2 inversion steps at the input size, batches of 4 frames.
 * model NULL: not set (the library's default lookup). */
static TFSettings *quick_settings(const char *model) {
    TFSettings *s = NULL;
    if (tf_settings_new(&s) != TF_OK || !s) {
        printf("FAIL tf_settings_new: %s\n", tf_last_error(NULL));
        exit(1);
    }
    if (model) set(s, "model", model);
    set(s, "prompt", "a marble statue");
    set(s, "inversion_prompt", "a moving pattern");
    set(s, "steps", "2");
    set(s, "inversion_steps", "2");
    set(s, "size", "input");
    set(s, "batch_size", "4");
    return s;
}

enum { W = 64, H = 48, PAD = 16, STRIDE = W * 3 + PAD, FRAMES = 6, MAX_FRAMES = 64 };

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

/* ---- Opaque values ---- */

/* Frame i of a test stream carries &tokens[i] as its opaque value; count_release (the tf_set_opaque_release
 * function of the tests) counts its calls per frame, and calls with anything else. */
static char tokens[MAX_FRAMES];
static int released[MAX_FRAMES], released_other;

static void *opaque_of(int i) { return &tokens[i]; }

static void count_release(void *opaque) {
    uintptr_t p = (uintptr_t)opaque, first = (uintptr_t)tokens;
    if (p >= first && p < first + MAX_FRAMES) released[p - first]++;
    else released_other++;
}

static void reset_releases(void) {
    memset(released, 0, sizeof released);
    released_other = 0;
}

/* Checks that count_release was called once for each frame in [first, end) and never otherwise. */
static void check_released(const char *name, int first, int end) {
    char detail[512] = "";
    for (int i = 0; i < MAX_FRAMES; i++) {
        int expected = i >= first && i < end;
        if (released[i] != expected) {
            size_t used = strlen(detail);
            snprintf(detail + used, sizeof detail - used, "%sframe %d released %d times (expected %d)", used ? ", " : "", i,
                     released[i], expected);
        }
    }
    if (released_other) {
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, "%s%d calls with another value", used ? ", " : "", released_other);
    }
    check(!detail[0], name, "%s", detail);
}

/* ---- Sending and getting frames ---- */

/* Sends frames first .. first+count-1 of the test stream (pts_of(i), opaque_of(i)). */
static int send_range(TFContext *ctx, int first, int count) {
    static uint8_t frame[STRIDE * H];
    for (int i = first; i < first + count; i++) {
        make_frame(frame, i);
        int code = tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), opaque_of(i));
        if (code != TF_OK) return code;
    }
    return TF_OK;
}

static int send_clip(TFContext *ctx, int count) { return send_range(ctx, 0, count); }

#define FNV_OFFSET 1469598103934665603u

/* FNV-1a of a frame's pixels (not its padding), continuing `hash`. */
static uint64_t frame_hash(const TFFrame *frame, uint64_t hash) {
    for (int y = 0; y < frame->height; y++)
        for (int x = 0; x < 3 * frame->width; x++) hash = (hash ^ frame->data[y * frame->stride + x]) * 1099511628211u;
    return hash;
}

/* FNV-1a over the pixels of every remaining output frame (drains the context); 0 if tf_get_frame fails
 * with anything but TF_EAGAIN. */
static uint64_t drain_hash(TFContext *ctx, int *count) {
    uint64_t hash = FNV_OFFSET;
    const TFFrame *out = NULL;
    int code;
    *count = 0;
    while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
        hash = frame_hash(out, hash);
        (*count)++;
    }
    return code == TF_EAGAIN ? hash : 0;
}

struct progress_log;
static int progress_calls(const struct progress_log *log);
static int progress_windows(const struct progress_log *log);

/* What a streamed edit gave: every frame out, with what it carried and when it came. */
struct output {
    uint64_t hash;      /* FNV-1a of this frame's pixels */
    int64_t pts;
    void *opaque;
    int sent;           /* frames sent when it came out; -1: after the end of the stream */
    int windows;        /* windows whose progress had been reported when it came out */
    int width, height;
};
struct stream_run {
    int count;          /* frames out */
    int code;           /* TF_OK: every call succeeded and the last tf_get_frame said TF_EAGAIN; else the failure */
    const char *failed; /* the call that failed */
    int calls_before_end; /* progress reports before tf_end_of_stream */
    uint64_t hash;      /* FNV-1a over every frame's pixels in order (as drain_hash) */
    struct output out[MAX_FRAMES];
};

/* Gets frames until TF_EAGAIN, recording them; `sent` as in struct output. TF_OK if it stopped at TF_EAGAIN. */
static int drain_into(TFContext *ctx, struct stream_run *run, int sent, const struct progress_log *log) {
    const TFFrame *frame = NULL;
    int code;
    while ((code = tf_get_frame(ctx, &frame)) == TF_OK) {
        if (run->count < MAX_FRAMES) {
            struct output *o = &run->out[run->count];
            o->hash = frame_hash(frame, FNV_OFFSET);
            o->pts = frame->pts;
            o->opaque = frame->opaque;
            o->sent = sent;
            o->windows = log ? progress_windows(log) : 0;
            o->width = frame->width;
            o->height = frame->height;
        }
        run->hash = frame_hash(frame, run->hash);
        run->count++;
    }
    return code == TF_EAGAIN ? TF_OK : code;
}

/* The streaming loop of a host: sends frames first .. first+frames-1 one at a time, getting every frame the
 * library has after each; then the end of the stream and the rest. `log`: the progress log of the context's
 * callback (tf_set_progress_callback), or NULL. Returns run->code. */
static int stream_edit(TFContext *ctx, int first, int frames, struct stream_run *run, const struct progress_log *log) {
    memset(run, 0, sizeof *run);
    run->hash = FNV_OFFSET;
    static uint8_t frame[STRIDE * H];
    int code = TF_OK;
    run->failed = "tf_send_frame";
    for (int i = first; i < first + frames && code == TF_OK; i++) {
        make_frame(frame, i);
        code = tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), opaque_of(i));
        if (code == TF_OK && (code = drain_into(ctx, run, i - first + 1, log)) != TF_OK) run->failed = "tf_get_frame";
    }
    if (log) run->calls_before_end = progress_calls(log);
    if (code == TF_OK && (code = tf_end_of_stream(ctx)) != TF_OK) run->failed = "tf_end_of_stream";
    if (code == TF_OK && (code = drain_into(ctx, run, -1, log)) != TF_OK) run->failed = "tf_get_frame";
    if (code == TF_OK) run->failed = NULL;
    else printf("  streamed edit: %s: %s (%s)\n", run->failed, tf_strerror(code), tf_last_error(ctx));
    run->code = code;
    return code;
}

/* Checks a complete streamed edit of frames first .. first+frames-1: every call succeeded, and every frame
 * came out once, in order, with its size, pts and opaque value. */
static void check_stream(const char *prefix, const struct stream_run *run, int first, int frames) {
    char name[256];
    snprintf(name, sizeof name, "%s streamed edit completes", prefix);
    check(run->code == TF_OK, name, "%s returned %d (%s)", run->failed ? run->failed : "?", run->code, tf_strerror(run->code));
    snprintf(name, sizeof name, "%s every frame comes out once", prefix);
    check(run->count == frames, name, "%d frames out, %d sent", run->count, frames);
    int bad = -1;
    for (int i = 0; i < run->count && i < MAX_FRAMES && bad < 0; i++)
        if (run->out[i].width != W || run->out[i].height != H) bad = i;
    snprintf(name, sizeof name, "%s frames keep their size", prefix);
    check(bad < 0, name, "frame %d is %dx%d", bad, bad < 0 ? 0 : run->out[bad].width, bad < 0 ? 0 : run->out[bad].height);
    bad = -1;
    for (int i = 0; i < run->count && i < MAX_FRAMES && bad < 0; i++)
        if (run->out[i].pts != pts_of(first + i) || run->out[i].opaque != opaque_of(first + i)) bad = i;
    snprintf(name, sizeof name, "%s frames keep their order, pts and opaque", prefix);
    check(bad < 0, name, "output %d has pts %lld opaque %p, expected %lld %p", bad, bad < 0 ? 0 : (long long)run->out[bad].pts,
          bad < 0 ? NULL : run->out[bad].opaque, (long long)pts_of(first + (bad < 0 ? 0 : bad)),
          opaque_of(first + (bad < 0 ? 0 : bad)));
}

/* ---- Progress reports ---- */

static const char *const stage_names[] = {"encoding", "inversion", "sampling", "decoding"};

struct progress_log {
    int calls, cancel_at, last_stage, problems;
    int cancel_mid_sampling;    /* cancel at the report halfway through the sampling of window cancel_window */
    int cancel_window;
    int cancelled;              /* the callback asked to stop */
    TFProgress cancelled_at;
    char problem[256];          /* the first problem seen */
    int seen[4];                /* per stage, in the current window */
    TFProgress last[4];         /* each stage's last report, in the current window */
    int window, windows;        /* the current window (TFProgress.window) and how many were reported */
    /* A folder that must stay empty (temp_dir: the library's temporary file is unlinked) and must hold the
     * library's open temporary file (seen through /proc/self/fd), checked at every report. */
    const char *watch_dir;
    int watch_checks, watch_entries, watch_open_files;
    char watch_entry[256];      /* the first entry seen in watch_dir */
};

static int progress_calls(const struct progress_log *log) { return log->calls; }
static int progress_windows(const struct progress_log *log) { return log->windows; }

static void progress_problem(struct progress_log *log, const char *format, ...) {
    if (log->problems++ == 0) {
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(log->problem, sizeof log->problem, format, arguments);
        va_end(arguments);
    }
}

/* Entries of `directory` (without . and ..); the first one's name in `first`. -1 if it cannot be read. */
static int directory_entries(const char *directory, char *first, size_t size) {
    DIR *dir = opendir(directory);
    if (!dir) return -1;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir));) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        if (count++ == 0 && first) snprintf(first, size, "%s", entry->d_name);
    }
    closedir(dir);
    return count;
}

/* Files this process has open in `directory` that are unlinked (Linux: /proc/self/fd links read
 * "DIRECTORY/name (deleted)"). */
static int unlinked_open_files_in(const char *directory) {
    DIR *fds = opendir("/proc/self/fd");
    if (!fds) return 0;
    int count = 0;
    size_t length = strlen(directory);
    for (struct dirent *entry; (entry = readdir(fds));) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        const char *deleted = " (deleted)";
        if (strncmp(target, directory, length) == 0 && target[length] == '/' && strchr(target + length + 1, '/') == NULL &&
            (size_t)n > strlen(deleted) && strcmp(target + n - strlen(deleted), deleted) == 0)
            count++;
    }
    closedir(fds);
    return count;
}

/* Checks each report on its own and against the previous one of its stage (in its window). */
static int on_progress(void *opaque, const TFProgress *p) {
    struct progress_log *log = opaque;
    log->calls++;
    if (!p) {
        progress_problem(log, "report %d is NULL", log->calls);
        return 1;
    }
    if (log->watch_dir) {
        log->watch_checks++;
        char first[256] = "";
        int entries = directory_entries(log->watch_dir, first, sizeof first);
        if (entries != 0 && log->watch_entries++ == 0)
            snprintf(log->watch_entry, sizeof log->watch_entry, "%s", entries < 0 ? "(unreadable)" : first);
        if (unlinked_open_files_in(log->watch_dir) > 0) log->watch_open_files++;
    }
    int stage = p->stage;
    if (stage < TF_STAGE_ENCODING || stage > TF_STAGE_DECODING) {
        progress_problem(log, "report %d has stage %d", log->calls, stage);
        return log->cancel_at > 0 && log->calls >= log->cancel_at;
    }
    /* Windows: 0 first, then each one more than the last, each after the previous one's sampling completed. */
    int new_window = 0;
    if (log->calls == 1 && p->window != 0) progress_problem(log, "the first report is for window %d", p->window);
    if (log->calls > 1 && p->window != log->window) {
        const TFProgress *sampling = &log->last[TF_STAGE_SAMPLING];
        if (p->window != log->window + 1)
            progress_problem(log, "window %d reported after window %d", p->window, log->window);
        else if (!log->seen[TF_STAGE_SAMPLING] || sampling->completed != sampling->total || sampling->step != sampling->steps)
            progress_problem(log, "window %d started before window %d's sampling completed", p->window, log->window);
        memset(log->seen, 0, sizeof log->seen);
        new_window = 1;
    }
    log->window = p->window;
    if (p->window + 1 > log->windows) log->windows = p->window + 1;
    if (!p->stage_name || strcmp(p->stage_name, stage_names[stage]) != 0)
        progress_problem(log, "stage %d is named \"%s\", expected \"%s\"", stage, p->stage_name ? p->stage_name : "(NULL)",
                         stage_names[stage]);
    if (log->calls > 1 && !new_window && stage < log->last_stage)
        progress_problem(log, "stage %s after %s", stage_names[stage], stage_names[log->last_stage]);
    if (p->completed < 1 || p->completed > p->total)
        progress_problem(log, "%s: completed %d of total %d", stage_names[stage], p->completed, p->total);
    if (p->step < 0 || p->step > p->steps)
        progress_problem(log, "%s: step %d of steps %d", stage_names[stage], p->step, p->steps);
    if ((stage == TF_STAGE_ENCODING || stage == TF_STAGE_DECODING) && (p->step != p->completed || p->steps != p->total))
        progress_problem(log, "%s: step/steps %d/%d differ from completed/total %d/%d", stage_names[stage], p->step, p->steps,
                         p->completed, p->total);
    if (log->seen[stage]) {
        const TFProgress *before = &log->last[stage];
        if (p->total != before->total || p->steps != before->steps)
            progress_problem(log, "%s: total/steps changed from %d/%d to %d/%d", stage_names[stage], before->total,
                             before->steps, p->total, p->steps);
        if (p->completed < before->completed || p->step < before->step)
            progress_problem(log, "%s: went back from %d (step %d) to %d (step %d)", stage_names[stage], before->completed,
                             before->step, p->completed, p->step);
    }
    log->seen[stage] = 1;
    log->last[stage] = *p;
    log->last_stage = stage;
    int cancel = log->cancel_at > 0 && log->calls >= log->cancel_at;
    if (log->cancel_mid_sampling && stage == TF_STAGE_SAMPLING && p->window == log->cancel_window && p->total >= 2 &&
        p->completed == p->total / 2)
        cancel = 1;
    if (cancel && !log->cancelled) {
        log->cancelled = 1;
        log->cancelled_at = *p;
    }
    return cancel;
}

/* After a complete edit: the stages an edit works through (inversion and sampling: frames are encoded by
 * tf_send_frame and decoded by tf_get_frame, which never report those two) reported, each stage's last
 * report complete, the expected sizes, and `windows` windows numbered from 0. */
static void check_progress(const char *prefix, const struct progress_log *log, int frames, int inversion_steps,
                           int sampling_steps, int windows) {
    char name[160];
    snprintf(name, sizeof name, "%s progress reports are consistent (names, order, completed <= total, step <= steps)", prefix);
    check(log->calls > 0 && log->problems == 0, name, "%d calls, %d problems; first: %s", log->calls, log->problems,
          log->problem);
    int all_seen = 1, complete = 1;
    char detail[512] = "";
    for (int stage = 0; stage < 4; stage++) {
        const TFProgress *p = &log->last[stage];
        int reported = stage == TF_STAGE_INVERSION || stage == TF_STAGE_SAMPLING;
        if (log->seen[stage] != reported) all_seen = 0;
        else if (reported && (p->completed != p->total || p->step != p->steps)) complete = 0;
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof detail - used, "%s%s %d/%d step %d/%d", stage ? ", " : "", stage_names[stage],
                 p->completed, p->total, p->step, p->steps);
    }
    snprintf(name, sizeof name, "%s progress reports inversion and sampling (not encoding/decoding)", prefix);
    check(all_seen, name, "last reports: %s", detail);
    snprintf(name, sizeof name, "%s each stage's last report has completed == total and step == steps", prefix);
    check(all_seen && complete, name, "last reports: %s", detail);
    snprintf(name, sizeof name, "%s progress counts denoising steps", prefix);
    check(log->last[TF_STAGE_INVERSION].steps == inversion_steps && log->last[TF_STAGE_SAMPLING].steps == sampling_steps,
          name, "expected %d inversion and %d sampling steps (%d frames); last reports: %s", inversion_steps,
          sampling_steps, frames, detail);
    if (windows == 1) snprintf(name, sizeof name, "%s progress window is 0 throughout", prefix);
    else snprintf(name, sizeof name, "%s progress window goes 0 to %d", prefix, windows - 1);
    check(log->windows == windows && log->window == windows - 1, name, "windows 0 to %d reported, expected %d windows",
          log->windows - 1, windows);
}

/* ---- The settings table and grammar (no model needed) ---- */

static int option_count(void) {
    int count = 0;
    while (tf_option(count)) count++;
    return count;
}

static const TFOption *option_named(const char *name) {
    for (int i = 0; tf_option(i); i++)
        if (strcmp(tf_option(i)->name, name) == 0) return tf_option(i);
    return NULL;
}

/* Every setting's value as "name=value;..." (malloc'd): a fingerprint of the whole settings. */
static char *snapshot(TFSettings *s) {
    size_t size = 1;
    for (int i = 0; tf_option(i); i++) {
        const char *value = tf_settings_get(s, tf_option(i)->name);
        size += strlen(tf_option(i)->name) + (value ? strlen(value) : 6) + 2;
    }
    char *text = calloc(size, 1);
    for (int i = 0; tf_option(i); i++) {
        const char *value = tf_settings_get(s, tf_option(i)->name);
        strcat(text, tf_option(i)->name);
        strcat(text, "=");
        strcat(text, value ? value : "(NULL)");
        strcat(text, ";");
    }
    return text;
}

/* tf_settings_set(name, value) must succeed and tf_settings_get must then give `expected`. */
static void accept(TFSettings *s, const char *name, const char *value, const char *expected) {
    char label[512];
    snprintf(label, sizeof label, "set %s=\"%.40s\" is accepted and reads back as \"%.40s\"", name, value ? value : "(NULL)",
             expected);
    int code = tf_settings_set(s, name, value);
    const char *message = code == TF_OK ? "" : tf_last_error(NULL);
    const char *got = tf_settings_get(s, name);
    check(code == TF_OK && got && strcmp(got, expected) == 0, label, "returned %d (%s), reads back \"%.60s\"", code, message,
          got ? got : "(NULL)");
}

/* tf_settings_set(name, value) must fail with TF_EINVAL, leave every setting unchanged, and leave a message
 * that names the setting and contains each of the `mentions` (NULL-terminated). */
static void refuse(TFSettings *s, const char *name, const char *value, const char *const *mentions) {
    char label[512];
    snprintf(label, sizeof label, "set %s=\"%.40s\" is refused", name ? name : "(NULL)", value ? value : "(NULL)");
    char *before = snapshot(s);
    int code = tf_settings_set(s, name, value);
    const char *message = tf_last_error(NULL);
    char *after = snapshot(s);
    const char *missing = NULL;
    if (message && name && name[0] && !strstr(message, name)) missing = name;
    for (int i = 0; mentions && mentions[i] && !missing; i++)
        if (!message || !strstr(message, mentions[i])) missing = mentions[i];
    if (code != TF_EINVAL || !message || !message[0])
        check(0, label, "returned %d (%s), message \"%s\"", code, tf_strerror(code), message ? message : "(NULL)");
    else if (strcmp(before, after) != 0)
        check(0, label, "the settings changed: before %s, after %s", before, after);
    else
        check(!missing, label, "the message \"%s\" does not mention \"%s\"", message, missing);
    free(before);
    free(after);
}

static const char *const *none = NULL;

/* The text the library's messages use for a range bound. */
static void bound_text(char *text, size_t size, const TFOption *o, double value) {
    if (o->type == TF_OPTION_INT) snprintf(text, size, "%.0f", value);
    else snprintf(text, size, "%g", value);
}

static void check_option_table(void) {
    static const char *const documented[] = {"model", "prediction", "prompt", "negative_prompt", "inversion_prompt", "method", "steps",
                                             "inversion_steps", "guidance", "pnp_attn_t", "pnp_f_t", "strength",
                                             "batch_size", "seed", "size", "threads", "keyframe_context", "precision",
                                             "latent_memory", "temp_dir", "window"};
    int count = option_count();
    check(count >= (int)(sizeof documented / sizeof documented[0]), "tf_option lists the settings", "%d rows", count);
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++) {
        char label[128];
        snprintf(label, sizeof label, "tf_option has \"%s\"", documented[i]);
        check(option_named(documented[i]) != NULL, label, "no row named %s", documented[i]);
    }
    check(tf_option(count) == NULL && tf_option(count + 1) == NULL && tf_option(1 << 30) == NULL,
          "tf_option past the last row is NULL", "not NULL");
    check(tf_option(-1) == NULL && tf_option(-1000) == NULL && tf_option(INT32_MIN) == NULL, "tf_option of a negative index is NULL",
          "not NULL");
    check(count == 0 || tf_option(0) == tf_option(0), "tf_option returns the same row each time", "different pointers");

    const TFOption *method = option_named("method");
    TFSettings *fresh = NULL;
    check_ok("settings_new", tf_settings_new(&fresh), NULL);
    if (!fresh) return;
    for (int i = 0; i < count; i++) {
        const TFOption *o = tf_option(i);
        char label[256], detail[512] = "";
        const char *name = o->name ? o->name : "(NULL)";
        if (!o->name || !o->name[0]) snprintf(detail, sizeof detail, "row %d has no name", i);
        else if (!o->help || !o->help[0]) snprintf(detail, sizeof detail, "no help");
        else if (o->type < TF_OPTION_STRING || o->type > TF_OPTION_SIZE) snprintf(detail, sizeof detail, "type %d", o->type);
        else if (!o->default_value) snprintf(detail, sizeof detail, "default is NULL");
        else if (!o->methods) snprintf(detail, sizeof detail, "methods is NULL");
        for (int j = 0; j < i && !detail[0]; j++)
            if (strcmp(tf_option(j)->name, o->name) == 0) snprintf(detail, sizeof detail, "rows %d and %d have one name", j, i);
        snprintf(label, sizeof label, "option %s: name, help, known type, default, methods", name);
        check(!detail[0], label, "%s", detail);
        if (detail[0]) continue;

        /* The default: what fresh settings hold, accepted by tf_settings_set and read back unchanged. */
        const char *value = tf_settings_get(fresh, o->name);
        snprintf(label, sizeof label, "option %s: new settings hold the default \"%s\"", name, o->default_value);
        check(value && strcmp(value, o->default_value) == 0, label, "tf_settings_get gives \"%s\"", value ? value : "(NULL)");
        TFSettings *s = NULL;
        tf_settings_new(&s);
        set(s, "steps", "7"); /* something else set, so "unchanged" is meaningful */
        int code = tf_settings_set(s, o->name, o->default_value);
        value = tf_settings_get(s, o->name);
        snprintf(label, sizeof label, "option %s: the default is accepted and reads back unchanged", name);
        check(code == TF_OK && value && strcmp(value, o->default_value) == 0, label, "returned %d (%s), reads back \"%s\"",
              code, code ? tf_last_error(NULL) : "", value ? value : "(NULL)");
        tf_settings_free(&s);

        /* Range and choices by type. */
        snprintf(label, sizeof label, "option %s: range and choices fit its type", name);
        if (o->type == TF_OPTION_INT || o->type == TF_OPTION_FLOAT) {
            char *end;
            double d = strtod(o->default_value, &end);
            check(*end == '\0' && o->min <= d && d <= o->max && o->min < o->max && !o->choices && !o->choice_help, label,
                  "min %g, default \"%s\", max %g, choices %p", o->min, o->default_value, o->max, (const void *)o->choices);
        } else if (o->type == TF_OPTION_CHOICE) {
            int n = 0, helped = 1, has_default = 0;
            for (; o->choices && o->choices[n]; n++) {
                if (!o->choices[n][0] || !o->choice_help || !o->choice_help[n] || !o->choice_help[n][0]) helped = 0;
                if (strcmp(o->choices[n], o->default_value) == 0) has_default = 1;
            }
            check(o->choices && n > 0 && helped && has_default && o->min == 0 && o->max == 0, label,
                  "%d choices, each with help: %d, default among them: %d", n, helped, has_default);
        } else {
            check(!o->choices && !o->choice_help && o->min == 0 && o->max == 0, label, "min %g max %g choices %p", o->min,
                  o->max, (const void *)o->choices);
        }

        /* methods: "" or a comma-separated list of the method setting's choices. */
        int methods_ok = method && method->choices;
        char list[256];
        snprintf(list, sizeof list, "%s", o->methods);
        for (char *save = NULL, *item = strtok_r(list, ",", &save); item && methods_ok; item = strtok_r(NULL, ",", &save)) {
            int known = 0;
            for (int c = 0; method->choices[c]; c++) known |= strcmp(method->choices[c], item) == 0;
            methods_ok = known;
        }
        snprintf(label, sizeof label, "option %s: methods \"%s\" are known methods", name, o->methods);
        check(methods_ok, label, "a method is not one of the method setting's choices");
    }
    tf_settings_free(&fresh);
}

/* Each type's grammar, on the table's own rows: bounds, out of range, malformed text. */
static void check_grammar_by_type(void) {
    for (int i = 0; tf_option(i); i++) {
        const TFOption *o = tf_option(i);
        TFSettings *s = NULL;
        tf_settings_new(&s);
        char low[64], high[64], text[128], label[256];
        bound_text(low, sizeof low, o, o->min);
        bound_text(high, sizeof high, o, o->max);
        const char *const range[] = {low, high, NULL};
        if (o->type == TF_OPTION_INT) {
            accept(s, o->name, low, low);
            accept(s, o->name, high, high);
            snprintf(text, sizeof text, "%.0f", o->min - 1);
            refuse(s, o->name, text, range);
            snprintf(text, sizeof text, "%.0f", o->max + 1);
            refuse(s, o->name, text, range);
            refuse(s, o->name, "99999999999999999999999", range);
            refuse(s, o->name, "1.5", range);
            refuse(s, o->name, "12abc", range);
            refuse(s, o->name, "abc", range);
            refuse(s, o->name, "", range);
            refuse(s, o->name, NULL, range);
        } else if (o->type == TF_OPTION_FLOAT) {
            snprintf(text, sizeof text, "%.17g", o->min);
            const char *got = (tf_settings_set(s, o->name, text), tf_settings_get(s, o->name));
            snprintf(label, sizeof label, "set %s to its minimum %s and read it back", o->name, text);
            check(got && strtod(got, NULL) == o->min, label, "reads back \"%s\"", got ? got : "(NULL)");
            double middle = (o->min + o->max) / 2;
            snprintf(text, sizeof text, "%.17g", middle);
            got = (tf_settings_set(s, o->name, text), tf_settings_get(s, o->name));
            snprintf(label, sizeof label, "set %s to %s and read it back", o->name, text);
            check(got && fabs(strtod(got, NULL) - middle) <= 1e-6 * fabs(middle), label, "reads back \"%s\"",
                  got ? got : "(NULL)");
            snprintf(text, sizeof text, "%.17g", o->max);
            got = (tf_settings_set(s, o->name, text), tf_settings_get(s, o->name));
            snprintf(label, sizeof label, "set %s to its maximum %s and read it back", o->name, text);
            check(got && strtod(got, NULL) == o->max, label, "reads back \"%s\"", got ? got : "(NULL)");
            snprintf(text, sizeof text, "%.17g", o->min - 1);
            refuse(s, o->name, text, range);
            snprintf(text, sizeof text, "%.17g", o->max + fabs(o->max) * 1e-3 + 1e-3);
            refuse(s, o->name, text, range);
            static const char *const malformed[] = {"nan", "NaN", "-nan", "inf", "-inf", "infinity", "1e999", "-1e999",
                                                    "abc", "1.5.2", "", NULL};
            for (int m = 0; malformed[m]; m++) refuse(s, o->name, malformed[m], none);
            refuse(s, o->name, NULL, none);
        } else if (o->type == TF_OPTION_CHOICE) {
            int n = 0;
            while (o->choices && o->choices[n]) n++;
            for (int c = n - 1; c >= 0; c--) {
                accept(s, o->name, o->choices[c], o->choices[c]);
                snprintf(text, sizeof text, "%d", (c + 1) % n); /* by index: always a different choice than the current */
                accept(s, o->name, text, o->choices[(c + 1) % n]);
            }
            const char *const choices_mentioned[] = {n > 0 ? o->choices[0] : "", n > 1 ? o->choices[n - 1] : "", NULL};
            snprintf(text, sizeof text, "%d", n);
            refuse(s, o->name, text, choices_mentioned);
            refuse(s, o->name, "-1", choices_mentioned);
            refuse(s, o->name, "no-such-choice", choices_mentioned);
            refuse(s, o->name, "", choices_mentioned);
        } else if (o->type == TF_OPTION_STRING) {
            accept(s, o->name, "a marble statue", "a marble statue");
            accept(s, o->name, "  spaces kept  ", "  spaces kept  ");
            accept(s, o->name, "caf\xC3\xA9 \xE2\x98\x95 UTF-8", "caf\xC3\xA9 \xE2\x98\x95 UTF-8");
            accept(s, o->name, "", "");
            accept(s, o->name, "x", "x");
            accept(s, o->name, NULL, "");
            static char long_text[5000];
            memset(long_text, 'a', sizeof long_text - 1);
            accept(s, o->name, long_text, long_text);
            refuse(s, o->name, "caf\xC3", none); /* truncated UTF-8 */
            refuse(s, o->name, "\xFF\xFE", none);
        }
        tf_settings_free(&s);
    }
}

static void check_size_grammar(void) {
    TFSettings *s = NULL;
    tf_settings_new(&s);
    accept(s, "size", "512", "512");
    accept(s, "size", "input", "input");
    accept(s, "size", "640x368", "640x368");
    accept(s, "size", "640x360", "640x360"); /* 360 = 45 x 8 */
    accept(s, "size", "8", "8");
    accept(s, "size", "8x8", "8x8");
    accept(s, "size", "768", "768");
    accept(s, "size", "100", "100"); /* a longer side need not be a multiple of 8 */
    accept(s, "size", "", "512");
    accept(s, "size", "input", "input");
    accept(s, "size", NULL, "512");
    static const char *const bad[] = {"hd720", "640x356", "644x368", "12x12", "0x64", "64x0", "0", "4", "7", "-512",
                                      "8x", "x8", "x", "8x8x8", "640 x 368", "1073741824", "1073741824x8", "99999999999999999999",
                                      "inputs", "512.5", NULL};
    for (int i = 0; bad[i]; i++) refuse(s, "size", bad[i], none);
    tf_settings_free(&s);
}

static int settings_group(void) {
    check_option_table();
    check_grammar_by_type();
    check_size_grammar();

    /* Named values the test relies on elsewhere. */
    TFSettings *s = NULL;
    tf_settings_new(&s);
    accept(s, "method", "sdedit", "sdedit");
    accept(s, "method", "0", "tokenflow");
    accept(s, "method", "2", "reconstruct");
    accept(s, "seed", "4294967295", "4294967295");
    accept(s, "seed", "0", "0");
    const char *const seed_range[] = {"0", "4294967295", NULL};
    refuse(s, "seed", "4294967296", seed_range);
    refuse(s, "seed", "-1", seed_range);
    const char *const steps_range[] = {"1", "1000", NULL};
    refuse(s, "steps", "0", steps_range);
    refuse(s, "steps", "1001", steps_range);

    /* Unknown names (including the fields the old struct had), NULL arguments. */
    static const char *const unknown[] = {"bogus", "", "keyframes", "model_path", "working_width", "struct_size", NULL};
    for (int i = 0; unknown[i]; i++) {
        char label[128];
        refuse(s, unknown[i], "1", none);
        snprintf(label, sizeof label, "get of the unknown setting \"%s\" is NULL", unknown[i]);
        check(tf_settings_get(s, unknown[i]) == NULL, label, "not NULL");
    }
    check_code("settings_set NULL settings -> EINVAL", tf_settings_set(NULL, "steps", "2"), TF_EINVAL, NULL);
    char *before = snapshot(s);
    check_code("settings_set NULL name -> EINVAL", tf_settings_set(s, NULL, "2"), TF_EINVAL, NULL);
    char *after = snapshot(s);
    check(strcmp(before, after) == 0, "settings_set NULL name leaves the settings unchanged", "%s -> %s", before, after);
    free(before);
    free(after);
    check(tf_settings_get(NULL, "steps") == NULL, "settings_get NULL settings is NULL", "not NULL");
    check(tf_settings_get(s, NULL) == NULL, "settings_get NULL name is NULL", "not NULL");
    check_code("settings_new NULL -> EINVAL", tf_settings_new(NULL), TF_EINVAL, NULL);

    /* tf_settings_get's strings: one per setting, each valid until that setting is read again. */
    set(s, "prompt", "first");
    const char *prompt = tf_settings_get(s, "prompt");
    const char *steps = tf_settings_get(s, "steps");
    set(s, "prompt", "second");
    set(s, "steps", "9");
    check(prompt && steps && strcmp(prompt, "first") == 0 && strcmp(steps, "50") == 0,
          "settings_get strings stay valid until the same setting is read again", "got \"%s\", \"%s\"",
          prompt ? prompt : "(NULL)", steps ? steps : "(NULL)");

    /* Two settings are independent. */
    TFSettings *other = NULL;
    tf_settings_new(&other);
    set(other, "steps", "3");
    const char *mine = tf_settings_get(s, "steps"), *theirs = tf_settings_get(other, "steps");
    check(mine && theirs && strcmp(mine, "9") == 0 && strcmp(theirs, "3") == 0, "two settings objects are independent",
          "got %s and %s", mine ? mine : "(NULL)", theirs ? theirs : "(NULL)");

    tf_settings_free(&s);
    check(s == NULL, "settings_free sets the pointer to NULL", "not NULL");
    tf_settings_free(&s);
    tf_settings_free(NULL);
    check(1, "settings_free of NULL and of *settings NULL are ignored", "");
    tf_settings_free(&other);
    return failures != 0;
}

/* ---- Editing ---- */

static int success(const char *model) {
    TFSettings *s = quick_settings(model);
    TFContext *ctx = NULL;
    int code = tf_open(&ctx, s);
    /* tf_open copied the settings: they may be freed at once. */
    tf_settings_free(&s);
    if (code != TF_OK) {
        printf("FAIL success open: %d %s\n", code, tf_last_error(NULL));
        return 1;
    }
    check(ctx != NULL, "success open", "ctx is NULL");
    reset_releases();
    check_ok("success set_opaque_release", tf_set_opaque_release(ctx, count_release), ctx);
    check_ok("success send frames", send_clip(ctx, FRAMES), ctx);

    /* tf_run's callback is the one used: it replaces one set with tf_set_progress_callback. */
    struct progress_log log = {0}, replaced = {0};
    check_ok("success set_progress_callback", tf_set_progress_callback(ctx, on_progress, &replaced), ctx);
    code = tf_run(ctx, on_progress, &log);
    check_ok("success run", code, ctx);
    check_progress("success", &log, FRAMES, 2, 2, 1);
    check(replaced.calls == 0, "success tf_run reports to its own callback, not the one set before",
          "the callback set with tf_set_progress_callback was called %d times", replaced.calls);
    int calls_after_run = log.calls;

    uint8_t input[STRIDE * H];
    int count = 0, sizes_ok = 1, pts_ok = 1, opaque_ok = 1, differs = 0;
    uint64_t run_hash = FNV_OFFSET;
    const TFFrame *out = NULL;
    while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
        if (!out || out->width != W || out->height != H || out->stride < 3 * W || out->data == NULL) {
            sizes_ok = 0;
            break;
        }
        if (out->pts != pts_of(count)) pts_ok = 0;
        if (out->opaque != opaque_of(count)) opaque_ok = 0;
        make_frame(input, count);
        for (int y = 0; y < H; y++)
            if (memcmp(out->data + y * out->stride, input + y * STRIDE, 3 * W) != 0) differs++;
        run_hash = frame_hash(out, run_hash);
        count++;
    }
    check(count == FRAMES, "success frame count", "%d frames out, %d in", count, FRAMES);
    check(sizes_ok, "success frame size and stride", "an output frame is not 64x48 RGB24");
    check(pts_ok, "success pts carried through in order", "an output pts differs from its input's");
    check(opaque_ok, "success opaque carried through in order", "an output opaque differs from its input's");
    check(differs > 0, "success output differs from input", "the edit returned the input unchanged");
    check_code("success drained -> EAGAIN", code, TF_EAGAIN, ctx);
    check_code("success EAGAIN again", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    check(log.calls == calls_after_run && replaced.calls == 0, "success after tf_run, tf_get_frame only decodes (no progress)",
          "%d reports during tf_get_frame", log.calls - calls_after_run + replaced.calls);
    tf_close(&ctx);
    check(ctx == NULL, "success close sets ctx to NULL", "ctx not NULL");
    check_released("success every frame returned: the release function is not called", 0, 0);

    /* The streaming loop (send, get after each frame, end of stream, get) with window 0 edits the whole stream
     * at the end and gives tf_run's bytes; tf_get_frame says TF_EAGAIN until the end of the stream. */
    s = quick_settings(model);
    code = tf_open(&ctx, s);
    check_ok("success open for streaming", code, NULL);
    if (ctx) {
        memset(&log, 0, sizeof log);
        check_ok("success streaming set_progress_callback", tf_set_progress_callback(ctx, on_progress, &log), ctx);
        struct stream_run run;
        stream_edit(ctx, 0, FRAMES, &run, &log);
        check_stream("success streaming", &run, 0, FRAMES);
        int early = 0;
        for (int i = 0; i < run.count && i < MAX_FRAMES; i++) early += run.out[i].sent != -1;
        check(early == 0 && run.calls_before_end == 0, "success streaming window 0: nothing is edited before the end of the stream",
              "%d frames out and %d progress reports before tf_end_of_stream", early, run.calls_before_end);
        check(run.code == TF_OK && run.hash == run_hash, "success streaming window 0 gives tf_run's bytes",
              "streamed %016llx, tf_run %016llx", (unsigned long long)run.hash, (unsigned long long)run_hash);
        check_progress("success streaming", &log, FRAMES, 2, 2, 1);
        check_code("success streaming drained -> EAGAIN again", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
        tf_close(&ctx);
    }

    /* The other methods run too, with their own number of sampling steps. */
    set(s, "method", "sdedit");
    set(s, "steps", "4");
    set(s, "inversion_steps", "4");
    set(s, "strength", "0.5"); /* 2 of the 4 steps */
    code = tf_open(&ctx, s);
    check_ok("success open sdedit", code, NULL);
    if (ctx) {
        memset(&log, 0, sizeof log);
        send_clip(ctx, 3);
        check_ok("success run sdedit", tf_run(ctx, on_progress, &log), ctx);
        check_progress("success sdedit", &log, 3, 4, 2, 1);
        drain_hash(ctx, &count);
        check(count == 3, "success sdedit frame count", "%d frames", count);
        tf_close(&ctx);
    }
    set(s, "method", "reconstruct");
    code = tf_open(&ctx, s);
    check_ok("success open reconstruct", code, NULL);
    if (ctx) {
        memset(&log, 0, sizeof log);
        send_clip(ctx, 3);
        check_ok("success run reconstruct", tf_run(ctx, on_progress, &log), ctx);
        check(log.calls > 0 && log.problems == 0, "success reconstruct progress is consistent", "%d problems: %s", log.problems,
              log.problem);
        drain_hash(ctx, &count);
        check(count == 3, "success reconstruct frame count", "%d frames", count);
        tf_close(&ctx);
    }
    tf_settings_free(&s);
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

static TFContext *open_settings(const TFSettings *s) {
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) != TF_OK) {
        printf("FAIL open: %s\n", tf_last_error(NULL));
        failures++;
    }
    return ctx;
}

static TFContext *open_quick(const char *model) {
    TFSettings *s = quick_settings(model);
    TFContext *ctx = open_settings(s);
    tf_settings_free(&s);
    return ctx;
}

/* Opens `s`, edits frames first .. first+frames-1 of the test stream with tf_run, returns the FNV of the
 * output (0 on failure). */
static uint64_t edit_range_hash(const TFSettings *s, int first, int frames) {
    TFContext *ctx = NULL;
    int count = 0;
    uint64_t hash = 0;
    if (tf_open(&ctx, s) == TF_OK && send_range(ctx, first, frames) == TF_OK && tf_run(ctx, NULL, NULL) == TF_OK)
        hash = drain_hash(ctx, &count);
    if (!hash) printf("  edit failed: %s\n", ctx ? tf_last_error(ctx) : tf_last_error(NULL));
    tf_close(&ctx);
    return count == frames ? hash : 0;
}

static uint64_t edit_hash(const TFSettings *s, int frames) { return edit_range_hash(s, 0, frames); }

/* Opens `s` and streams frames first .. first+frames-1 through it (stream_edit) with a progress log. */
static int stream_settings(const TFSettings *s, int first, int frames, struct stream_run *run, struct progress_log *log) {
    TFContext *ctx = NULL;
    memset(run, 0, sizeof *run);
    int code = tf_open(&ctx, s);
    if (code != TF_OK) {
        printf("  open failed: %s\n", tf_last_error(NULL));
        run->code = code;
        run->failed = "tf_open";
        return code;
    }
    if (log) tf_set_progress_callback(ctx, on_progress, log);
    code = stream_edit(ctx, first, frames, run, log);
    tf_close(&ctx);
    return code;
}

static int misuse(const char *model) {
    uint8_t frame[STRIDE * H];
    make_frame(frame, 0);
    const TFFrame *out = NULL;

    /* Version and strings. */
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", TOKENFLOW_VERSION_MAJOR, TOKENFLOW_VERSION_MINOR, TOKENFLOW_VERSION_PATCH);
    check(tf_version() == TOKENFLOW_VERSION, "version matches the header", "tf_version %u, header %u", tf_version(),
          (unsigned)TOKENFLOW_VERSION);
    check(strcmp(tf_version_string(), version) == 0, "version string matches the header", "\"%s\", header %s",
          tf_version_string(), version);
    const int codes[] = {TF_OK, TF_EPERM, TF_ENOENT, TF_EIO, TF_EAGAIN, TF_ENOMEM, TF_EINVAL, TF_ENOTSUP, TF_ECANCELED, -9999, 7};
    int strings_ok = 1;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (tf_strerror(codes[i]) == NULL || tf_strerror(codes[i])[0] == '\0') strings_ok = 0;
    check(strings_ok, "tf_strerror is never NULL or empty", "empty string");

    /* tf_open: NULL arguments, settings inconsistent with each other. */
    TFSettings *s = quick_settings(model);
    check_code("open NULL out -> EINVAL", tf_open(NULL, s), TF_EINVAL, NULL);
    open_fails("open NULL settings -> EINVAL", NULL, TF_EINVAL);
    set(s, "steps", "3");
    open_fails("open inversion_steps not a multiple of steps -> EINVAL", s, TF_EINVAL);
    check(strstr(tf_last_error(NULL), "inversion_steps") != NULL, "open error names the inconsistent setting", "\"%s\"",
          tf_last_error(NULL));
    set(s, "steps", "2");
    set(s, "method", "sdedit");
    set(s, "strength", "0.1");
    open_fails("open sdedit whose strength leaves no step -> EINVAL", s, TF_EINVAL);
    tf_settings_free(&s);

    /* The settings are copied by tf_open: changing them afterwards does not change an open context, and
     * they can be freed while it is open. */
    s = quick_settings(model);
    uint64_t reference = edit_hash(s, 3);
    TFContext *ctx = NULL;
    check_ok("open, then change the settings", tf_open(&ctx, s), NULL);
    set(s, "prompt", "a bronze statue");
    uint64_t changed = edit_hash(s, 3);
    set(s, "model", "/nonexistent");
    tf_settings_free(&s);
    if (ctx) {
        int count = 0;
        uint64_t hash = 0;
        if (send_clip(ctx, 3) == TF_OK && tf_run(ctx, NULL, NULL) == TF_OK) hash = drain_hash(ctx, &count);
        check(reference != 0 && hash == reference, "a context edits with the settings it was opened with",
              "reference %016llx, context %016llx", (unsigned long long)reference, (unsigned long long)hash);
        check(changed != 0 && changed != reference, "settings changed after tf_open open a different edit",
              "both %016llx", (unsigned long long)changed);
        tf_close(&ctx);
    }

    /* NULL contexts: an error code, a message on the thread, never a crash. */
    static const int32_t keys[] = {0, 0};
    check_code("send_frame NULL ctx -> EINVAL", tf_send_frame(NULL, frame, W, H, STRIDE, 0, NULL), TF_EINVAL, NULL);
    check_code("end_of_stream NULL ctx -> EINVAL", tf_end_of_stream(NULL), TF_EINVAL, NULL);
    check_code("set_opaque_release NULL ctx -> EINVAL", tf_set_opaque_release(NULL, count_release), TF_EINVAL, NULL);
    check_code("set_progress_callback NULL ctx -> EINVAL", tf_set_progress_callback(NULL, on_progress, NULL), TF_EINVAL, NULL);
    check_code("set_keyframes NULL ctx -> EINVAL", tf_set_keyframes(NULL, keys, 2), TF_EINVAL, NULL);
    check_code("run NULL ctx -> EINVAL", tf_run(NULL, NULL, NULL), TF_EINVAL, NULL);
    check_code("get_frame NULL ctx -> EINVAL", tf_get_frame(NULL, &out), TF_EINVAL, NULL);
    tf_close(NULL);
    TFContext *null_ctx = NULL;
    tf_close(&null_ctx);
    check(1, "close NULL and *ctx NULL are ignored", "");

    /* Frame arguments and the state machine on a real context, ended with tf_run. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    check(tf_last_error(ctx) != NULL && tf_last_error(ctx)[0] == '\0', "last_error is empty on a fresh context", "not empty");
    check_code("get_frame before any frame -> EAGAIN", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    check_code("send_frame NULL rgb -> EINVAL", tf_send_frame(ctx, NULL, W, H, STRIDE, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame width 0 -> EINVAL", tf_send_frame(ctx, frame, 0, H, STRIDE, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame height -1 -> EINVAL", tf_send_frame(ctx, frame, W, -1, STRIDE, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame width 100000 -> EINVAL", tf_send_frame(ctx, frame, 100000, 1, 300000, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame stride < 3*width -> EINVAL", tf_send_frame(ctx, frame, W, H, 3 * W - 1, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame negative stride -> EINVAL", tf_send_frame(ctx, frame, W, H, -STRIDE, 0, NULL), TF_EINVAL, ctx);
    check_code("send_frame stride x height overflow -> EINVAL", tf_send_frame(ctx, frame, W, H, PTRDIFF_MAX / 2, 0, NULL),
               TF_EINVAL, ctx);
    check_code("get_frame NULL frame -> EINVAL", tf_get_frame(ctx, NULL), TF_EINVAL, ctx);
    check_ok("send_frame after rejected frames", tf_send_frame(ctx, frame, W, H, STRIDE, 0, NULL), ctx);
    check_code("get_frame before the end of the stream (window 0) -> EAGAIN", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    check_code("send_frame of another size mid-clip -> EINVAL", tf_send_frame(ctx, frame, W / 2, H, STRIDE, 1, NULL), TF_EINVAL,
               ctx);
    check_ok("send_frame of the clip's size after that", tf_send_frame(ctx, frame, W, H, STRIDE, 1, NULL), ctx);
    check_code("get_frame before the end of the stream, again -> EAGAIN", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    check_ok("run after rejected frames and TF_EAGAIN", tf_run(ctx, NULL, NULL), ctx);
    check_code("send_frame after run -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 2, NULL), TF_EPERM, ctx);
    check_code("set_keyframes after run -> EPERM", tf_set_keyframes(ctx, keys, 2), TF_EPERM, ctx);
    check_code("set_keyframes (clearing) after run -> EPERM", tf_set_keyframes(ctx, NULL, 0), TF_EPERM, ctx);
    check_code("run twice -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    check_code("end_of_stream after run -> EPERM", tf_end_of_stream(ctx), TF_EPERM, ctx);
    int count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 2, "only the accepted frames are edited", "%d frames", count);
    tf_close(&ctx);
    tf_close(&ctx);
    check(ctx == NULL, "double close", "ctx not NULL");

    /* The same, ended with tf_end_of_stream. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    check_ok("send_frame before the end of the stream", tf_send_frame(ctx, frame, W, H, STRIDE, 0, NULL), ctx);
    check_ok("end_of_stream", tf_end_of_stream(ctx), ctx);
    check_code("send_frame after end_of_stream -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 1, NULL), TF_EPERM, ctx);
    check_code("end_of_stream twice -> EPERM", tf_end_of_stream(ctx), TF_EPERM, ctx);
    check_code("set_keyframes after end_of_stream -> EPERM", tf_set_keyframes(ctx, keys, 2), TF_EPERM, ctx);
    check_code("run after end_of_stream -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 1, "refused calls after end_of_stream leave the stream to edit", "%d frames (%s)", count, tf_last_error(ctx));
    tf_close(&ctx);

    /* An empty stream ends with nothing to return; tf_run refuses it. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    check_ok("end_of_stream of an empty stream", tf_end_of_stream(ctx), ctx);
    check_code("get_frame of an empty stream -> EAGAIN", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    tf_close(&ctx);
    ctx = open_quick(model);
    if (!ctx) return 1;
    check_code("run without frames -> EINVAL", tf_run(ctx, NULL, NULL), TF_EINVAL, ctx);
    check_code("get_frame after a failed run -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("send_frame after a failed run -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0, NULL), TF_EPERM, ctx);
    tf_close(&ctx);

    /* Cancellation: the first progress report says stop. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    struct progress_log log = {0};
    log.cancel_at = 1;
    check_code("cancel from the callback -> ECANCELED", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    check(log.calls == 1, "no progress after cancelling", "callback called %d times", log.calls);
    check_code("get_frame after cancel -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("send_frame after cancel -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0, NULL), TF_EPERM, ctx);
    check_code("set_keyframes after cancel -> EPERM", tf_set_keyframes(ctx, NULL, 0), TF_EPERM, ctx);
    check_code("run after cancel -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    check_code("end_of_stream after cancel -> EPERM", tf_end_of_stream(ctx), TF_EPERM, ctx);
    tf_close(&ctx);

    /* Cancellation late in the run (during sampling). */
    ctx = open_quick(model);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    memset(&log, 0, sizeof log);
    log.cancel_at = 5; /* 2 inversion calls (one batch, 2 steps), then the 3rd sampling report */
    check_code("cancel during sampling -> ECANCELED", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    check(log.last_stage == TF_STAGE_SAMPLING && log.calls == 5, "cancelled in the sampling stage",
          "cancelled in stage %d after %d calls", log.last_stage, log.calls);
    check(log.problems == 0, "progress before the cancel is consistent", "%s", log.problem);
    tf_close(&ctx);

    /* Cancellation from tf_get_frame (the streaming loop): the edit stops, then the context is failed. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    memset(&log, 0, sizeof log);
    log.cancel_mid_sampling = 1;
    tf_set_progress_callback(ctx, on_progress, &log);
    send_clip(ctx, 3);
    check_ok("streaming cancel: end_of_stream", tf_end_of_stream(ctx), ctx);
    check_code("streaming cancel from the callback in tf_get_frame -> ECANCELED", tf_get_frame(ctx, &out), TF_ECANCELED, ctx);
    int calls = log.calls;
    check(log.cancelled && log.cancelled_at.stage == TF_STAGE_SAMPLING, "streaming cancel: cancelled mid-sampling",
          "cancelled %d, stage %d", log.cancelled, log.cancelled_at.stage);
    check_code("get_frame after a streaming cancel -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("send_frame after a streaming cancel -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0, NULL), TF_EPERM, ctx);
    check_code("end_of_stream after a streaming cancel -> EPERM", tf_end_of_stream(ctx), TF_EPERM, ctx);
    check_code("set_keyframes after a streaming cancel -> EPERM", tf_set_keyframes(ctx, NULL, 0), TF_EPERM, ctx);
    check_code("run after a streaming cancel -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    check(log.calls == calls, "no progress after a streaming cancel", "%d more reports", log.calls - calls);
    tf_close(&ctx);
    return failures != 0;
}

/* ---- Windows ---- */

/* Settings of the window tests: batches of 2, so a window of 4 frames has 2 batches (keyframes attend across
 * batches) and the last, partial window of 2 frames one. */
static TFSettings *window_settings(const char *model, const char *window) {
    TFSettings *s = quick_settings(model);
    set(s, "batch_size", "2");
    set(s, "window", window);
    return s;
}

static int window_group(const char *model) {
    enum { WINDOW = 4, STREAM = 10, WINDOWS = 3 }; /* windows: frames 0-3, 4-7 and 8-9 */
    TFSettings *s = window_settings(model, "4");
    struct stream_run run;
    struct progress_log log = {0};
    stream_settings(s, 0, STREAM, &run, &log);
    check_stream("window 4:", &run, 0, STREAM);

    /* Frames come out as soon as their window is complete: frames 0-3 after the 4th frame is sent, 4-7 after
     * the 8th, 8-9 (a partial window) after the end of the stream; each window is edited when its first frame
     * is asked for (its progress comes then, not earlier). */
    int when_ok = 1, windows_ok = 1;
    char detail[256] = "";
    for (int i = 0; i < run.count && i < STREAM; i++) {
        int expected_sent = (i / WINDOW + 1) * WINDOW <= STREAM ? (i / WINDOW + 1) * WINDOW : -1;
        if (run.out[i].sent != expected_sent && when_ok) {
            when_ok = 0;
            snprintf(detail, sizeof detail, "frame %d came out with %d frames sent (-1: after the end), expected %d", i,
                     run.out[i].sent, expected_sent);
        }
        if (run.out[i].windows != i / WINDOW + 1 && windows_ok) {
            windows_ok = 0;
            if (when_ok)
                snprintf(detail, sizeof detail, "frame %d came out after progress of %d windows, expected %d", i,
                         run.out[i].windows, i / WINDOW + 1);
        }
    }
    check(run.count == STREAM && when_ok, "window 4: frames come out once their window is sent, before the end of the stream",
          "%s", detail);
    check(run.count == STREAM && windows_ok, "window 4: each window is edited when its first frame is asked for", "%s", detail);
    check(run.calls_before_end > 0, "window 4: editing happens before the end of the stream", "no progress before tf_end_of_stream");
    check_progress("window 4:", &log, STREAM, 2, 2, WINDOWS);

    /* Window 0 is edited exactly like a clip of its own; later windows attend to anchor frames of earlier
     * windows, so they differ from edits of their frames alone. */
    TFSettings *alone = window_settings(model, "0");
    struct stream_run clip[WINDOWS];
    const int starts[WINDOWS + 1] = {0, 4, 8, 10};
    for (int w = 0; w < WINDOWS; w++) {
        stream_settings(alone, starts[w], starts[w + 1] - starts[w], &clip[w], NULL);
        int same = 0, frames = starts[w + 1] - starts[w];
        for (int i = 0; i < frames && starts[w] + i < run.count; i++) same += clip[w].out[i].hash == run.out[starts[w] + i].hash;
        char name[160];
        if (w == 0) {
            check(clip[w].code == TF_OK && run.count == STREAM && same == frames,
                  "window 4: window 0's frames equal an independent edit of those frames",
                  "%d of %d frames equal (independent edit: %s)", same, frames, tf_strerror(clip[w].code));
        } else {
            snprintf(name, sizeof name, "window 4: window %d differs from an independent edit of its frames (anchors)", w);
            check(clip[w].code == TF_OK && run.count == STREAM && same < frames, name, "all %d frames equal", frames);
        }
    }

    /* tf_run edits every window at once (reporting each), with the streaming loop's bytes. */
    TFContext *ctx = open_settings(s);
    if (ctx) {
        memset(&log, 0, sizeof log);
        send_clip(ctx, STREAM);
        check_ok("window 4: run", tf_run(ctx, on_progress, &log), ctx);
        check_progress("window 4: run", &log, STREAM, 2, 2, WINDOWS);
        int calls = log.calls, count = 0;
        uint64_t hash = drain_hash(ctx, &count);
        check(hash == run.hash && count == STREAM, "window 4: tf_run gives the streaming loop's bytes",
              "run %016llx (%d frames), streamed %016llx", (unsigned long long)hash, count, (unsigned long long)run.hash);
        check(log.calls == calls, "window 4: after tf_run, tf_get_frame only decodes", "%d reports", log.calls - calls);
        tf_close(&ctx);
    }

    /* A host that sends a whole window before asking: the same frames, whatever the interleaving. */
    ctx = open_settings(s);
    if (ctx) {
        memset(&log, 0, sizeof log);
        tf_set_progress_callback(ctx, on_progress, &log);
        const TFFrame *out = NULL;
        uint64_t hash = FNV_OFFSET;
        int count = 0, order_ok = 1, code;
        send_range(ctx, 0, 8);
        while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
            order_ok &= out->pts == pts_of(count) && out->opaque == opaque_of(count);
            hash = frame_hash(out, hash);
            count++;
        }
        check_code("window 4: 8 frames sent: frames 0-7, then EAGAIN before the end of the stream", code, TF_EAGAIN, ctx);
        check(count == 8 && order_ok && log.windows == 2, "window 4: 8 frames sent at once: both windows come out in order",
              "%d frames, order %s, %d windows reported", count, order_ok ? "kept" : "broken", log.windows);
        send_range(ctx, 8, 2);
        check_code("window 4: a partial window waits for the end of the stream", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
        tf_end_of_stream(ctx);
        while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
            order_ok &= out->pts == pts_of(count) && out->opaque == opaque_of(count);
            hash = frame_hash(out, hash);
            count++;
        }
        check(code == TF_EAGAIN && count == STREAM && hash == run.hash && order_ok,
              "window 4: sending whole windows before getting gives the same frames",
              "%d frames, %016llx vs %016llx, last code %d", count, (unsigned long long)hash, (unsigned long long)run.hash, code);
        tf_close(&ctx);
    }

    /* A window longer than the stream: one window, edited at the end like window 0. */
    TFSettings *long_window = window_settings(model, "16");
    struct stream_run whole, reference;
    memset(&log, 0, sizeof log);
    stream_settings(long_window, 0, STREAM, &whole, &log);
    stream_settings(alone, 0, STREAM, &reference, NULL);
    check_stream("window 16 of 10 frames:", &whole, 0, STREAM);
    check(whole.code == TF_OK && reference.code == TF_OK && whole.hash == reference.hash && whole.calls_before_end == 0,
          "window 16 of 10 frames: one window, edited at the end exactly like window 0",
          "%016llx vs %016llx, %d reports before the end", (unsigned long long)whole.hash, (unsigned long long)reference.hash,
          whole.calls_before_end);
    check_progress("window 16 of 10 frames:", &log, STREAM, 2, 2, 1);

    /* Window 1: every frame is a window; frames come out as they are sent. */
    TFSettings *single = window_settings(model, "1");
    memset(&log, 0, sizeof log);
    stream_settings(single, 0, 3, &whole, &log);
    check_stream("window 1:", &whole, 0, 3);
    check(whole.count == 3 && whole.out[0].sent == 1 && whole.out[1].sent == 2 && whole.out[2].sent == 3,
          "window 1: each frame comes out after it is sent", "sent counts %d %d %d", whole.out[0].sent, whole.out[1].sent,
          whole.out[2].sent);
    check_progress("window 1:", &log, 3, 2, 2, 3);

    tf_settings_free(&single);
    tf_settings_free(&long_window);
    tf_settings_free(&alone);
    tf_settings_free(&s);
    return failures != 0;
}

/* ---- Opaque values released at tf_close ---- */

static int opaque_group(const char *model) {
    TFSettings *s = window_settings(model, "0");
    TFSettings *windowed = window_settings(model, "4");
    TFContext *ctx = NULL;
    const TFFrame *out = NULL;
    struct stream_run run;

    /* Closed mid-stream, nothing returned: every frame's opaque is released, at tf_close and not before. */
    reset_releases();
    if ((ctx = open_settings(s))) {
        check_ok("opaque set_opaque_release", tf_set_opaque_release(ctx, count_release), ctx);
        send_clip(ctx, 3);
        check_code("opaque window 0: get before the end -> EAGAIN", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
        check_released("opaque nothing is released before tf_close", 0, 0);
        tf_close(&ctx);
        check_released("opaque closed mid-stream: every frame sent is released once", 0, 3);
    }

    /* Window 4, closed mid-stream after 10 frames: frames 0-7 were returned, 8-9 are released. */
    reset_releases();
    if ((ctx = open_settings(windowed))) {
        tf_set_opaque_release(ctx, count_release);
        memset(&run, 0, sizeof run);
        run.hash = FNV_OFFSET;
        for (int i = 0; i < 10; i++) {
            send_range(ctx, i, 1);
            drain_into(ctx, &run, i + 1, NULL);
        }
        check(run.count == 8, "opaque window 4: 8 of 10 frames returned before the end", "%d frames", run.count);
        tf_close(&ctx);
        check_released("opaque window 4 closed mid-stream: exactly the frames never returned are released", 8, 10);
    }

    /* Closed after the end of the stream with frames left: those are released. */
    reset_releases();
    if ((ctx = open_settings(s))) {
        tf_set_opaque_release(ctx, count_release);
        send_clip(ctx, 5);
        tf_end_of_stream(ctx);
        int got = 0;
        while (got < 2 && tf_get_frame(ctx, &out) == TF_OK) got++;
        check(got == 2, "opaque 2 of 5 frames returned", "%d (%s)", got, tf_last_error(ctx));
        tf_close(&ctx);
        check_released("opaque closed with frames left: those are released", 2, 5);
    }

    /* NULL opaque values are skipped; every frame returned: no call. */
    reset_releases();
    if ((ctx = open_settings(s))) {
        tf_set_opaque_release(ctx, count_release);
        static uint8_t frame[STRIDE * H];
        for (int i = 0; i < 4; i++) {
            make_frame(frame, i);
            tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), i % 2 ? opaque_of(i) : NULL);
        }
        tf_close(&ctx);
        check(released[0] == 0 && released[1] == 1 && released[2] == 0 && released[3] == 1 && released_other == 0,
              "opaque NULL opaque values are skipped, the others released", "released %d %d %d %d times, %d other calls",
              released[0], released[1], released[2], released[3], released_other);
    }
    reset_releases();
    if ((ctx = open_settings(windowed))) {
        tf_set_opaque_release(ctx, count_release);
        stream_edit(ctx, 0, 6, &run, NULL);
        check(run.code == TF_OK && run.count == 6, "opaque window 4: whole stream returned", "%d frames", run.count);
        tf_close(&ctx);
        check_released("opaque every frame returned: no call", 0, 0);
    }

    /* The release function can be reset to NULL (none), and opaque values need not be pointers: they are
     * returned as they were sent, never dereferenced. */
    reset_releases();
    if ((ctx = open_settings(s))) {
        tf_set_opaque_release(ctx, count_release);
        check_ok("opaque set_opaque_release NULL", tf_set_opaque_release(ctx, NULL), ctx);
        static uint8_t frame[STRIDE * H];
        make_frame(frame, 0);
        tf_send_frame(ctx, frame, W, H, STRIDE, 7, (void *)(uintptr_t)0x1);
        tf_send_frame(ctx, frame, W, H, STRIDE, 8, (void *)(uintptr_t)UINTPTR_MAX);
        tf_send_frame(ctx, frame, W, H, STRIDE, 9, opaque_of(2));
        tf_end_of_stream(ctx);
        int ok = tf_get_frame(ctx, &out) == TF_OK && out->opaque == (void *)(uintptr_t)0x1 && out->pts == 7;
        ok = ok && tf_get_frame(ctx, &out) == TF_OK && out->opaque == (void *)(uintptr_t)UINTPTR_MAX && out->pts == 8;
        check(ok, "opaque values that are not pointers come back unchanged", "%s", tf_last_error(ctx));
        tf_close(&ctx);
        check_released("opaque release function reset to NULL: no call", 0, 0);
    }

    /* After a cancel (window 1 of a window-4 stream, mid-sampling): the context is failed; frames 0-3 were
     * returned; tf_close releases exactly frames 4-9. */
    reset_releases();
    if ((ctx = open_settings(windowed))) {
        struct progress_log log = {0};
        log.cancel_mid_sampling = 1;
        log.cancel_window = 1;
        tf_set_progress_callback(ctx, on_progress, &log);
        tf_set_opaque_release(ctx, count_release);
        int got = 0, code = TF_OK;
        for (int i = 0; i < 10 && code != TF_ECANCELED; i++) {
            send_range(ctx, i, 1);
            while ((code = tf_get_frame(ctx, &out)) == TF_OK) got += out->opaque == opaque_of(got);
        }
        check_code("opaque cancel in window 1 -> ECANCELED", code, TF_ECANCELED, ctx);
        check(got == 4 && log.cancelled && log.cancelled_at.window == 1, "opaque cancel: window 0's frames came out, window 1 was cancelled",
              "%d frames, cancelled %d in window %d", got, log.cancelled, log.cancelled_at.window);
        code = send_range(ctx, 8, 2);
        check_code("opaque send after the cancel -> EPERM", code, TF_EPERM, ctx);
        check_code("opaque get after the cancel -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
        check_released("opaque after a cancel, nothing is released before tf_close", 0, 0);
        tf_close(&ctx);
        check_released("opaque after a cancel, tf_close releases exactly the frames sent and never returned", 4, 8);
    }

    /* A cancelled tf_run: no frame was returned, all are released. */
    reset_releases();
    if ((ctx = open_settings(s))) {
        struct progress_log log = {0};
        log.cancel_mid_sampling = 1;
        tf_set_opaque_release(ctx, count_release);
        send_clip(ctx, 3);
        check_code("opaque cancelled run -> ECANCELED", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
        tf_close(&ctx);
        check_released("opaque cancelled run: every frame is released at tf_close", 0, 3);
    }
    tf_settings_free(&windowed);
    tf_settings_free(&s);
    return failures != 0;
}

/* ---- Latents in a temporary file (latent_memory 0) ---- */

static int spill(const char *model, const char *directory) {
    char first[256] = "";
    check(directory_entries(directory, first, sizeof first) == 0, "spill the test folder is empty to begin with",
          "%s holds %s", directory, first);

    /* In memory (the default budget holds these few latents), streamed and with tf_run. */
    TFSettings *s = quick_settings(model);
    struct stream_run memory, spilled;
    stream_settings(s, 0, FRAMES, &memory, NULL);
    check_stream("spill in memory:", &memory, 0, FRAMES);
    uint64_t memory_run = edit_hash(s, FRAMES);

    /* Every latent in the temporary file: the same bytes; the file is open and unlinked while the edit runs,
     * so the folder stays empty, during the edit and after. */
    set(s, "latent_memory", "0");
    set(s, "temp_dir", directory);
    struct progress_log log = {0};
    log.watch_dir = directory;
    stream_settings(s, 0, FRAMES, &spilled, &log);
    check_stream("spill latent_memory 0:", &spilled, 0, FRAMES);
    check(spilled.code == TF_OK && memory.code == TF_OK && spilled.hash == memory.hash,
          "spill latent_memory 0 gives the bytes of the edit in memory", "%016llx vs %016llx",
          (unsigned long long)spilled.hash, (unsigned long long)memory.hash);
    check(log.watch_checks > 0 && log.watch_entries == 0, "spill the temp_dir folder stays empty while the edit runs",
          "%d of %d reports saw %s in it", log.watch_entries, log.watch_checks, log.watch_entry);
    check(log.watch_checks > 0 && log.watch_open_files == log.watch_checks,
          "spill the latents are in an unlinked file in temp_dir, open while the edit runs",
          "an unlinked file open in %s at %d of %d reports", directory, log.watch_open_files, log.watch_checks);
    check(directory_entries(directory, first, sizeof first) == 0, "spill the folder is empty after tf_close", "%s", first);
    check(unlinked_open_files_in(directory) == 0, "spill the temporary file is closed at tf_close", "still open");
    uint64_t spilled_run = edit_hash(s, FRAMES);
    check(spilled_run != 0 && spilled_run == memory_run && memory_run == memory.hash,
          "spill latent_memory 0 with tf_run gives the bytes of the edit in memory", "%016llx vs %016llx",
          (unsigned long long)spilled_run, (unsigned long long)memory_run);

    /* Windows spill too, with the same bytes. */
    TFSettings *windowed = window_settings(model, "4"), *windowed_spilled = window_settings(model, "4");
    set(windowed_spilled, "latent_memory", "0");
    set(windowed_spilled, "temp_dir", directory);
    memset(&log, 0, sizeof log);
    log.watch_dir = directory;
    stream_settings(windowed, 0, 10, &memory, NULL);
    stream_settings(windowed_spilled, 0, 10, &spilled, &log);
    check(memory.code == TF_OK && spilled.code == TF_OK && memory.count == 10 && spilled.hash == memory.hash,
          "spill window 4 with latent_memory 0 gives the bytes of the windows in memory", "%016llx vs %016llx",
          (unsigned long long)spilled.hash, (unsigned long long)memory.hash);
    check(log.watch_checks > 0 && log.watch_entries == 0 && log.watch_open_files == log.watch_checks,
          "spill window 4: the folder stays empty, the unlinked file open", "%d of %d reports saw %s; file open at %d",
          log.watch_entries, log.watch_checks, log.watch_entry, log.watch_open_files);
    tf_settings_free(&windowed);
    tf_settings_free(&windowed_spilled);

    /* Cancelled in the middle of the sampling sweep, then closed: the folder is left empty and every
     * frame's opaque released. */
    TFContext *ctx = open_settings(s);
    const TFFrame *out = NULL;
    if (ctx) {
        memset(&log, 0, sizeof log);
        log.cancel_mid_sampling = 1;
        log.watch_dir = directory;
        reset_releases();
        tf_set_opaque_release(ctx, count_release);
        tf_set_progress_callback(ctx, on_progress, &log);
        send_clip(ctx, FRAMES);
        tf_end_of_stream(ctx);
        check_code("spill cancel mid-sampling -> ECANCELED", tf_get_frame(ctx, &out), TF_ECANCELED, ctx);
        check(log.cancelled && log.cancelled_at.stage == TF_STAGE_SAMPLING && log.cancelled_at.completed < log.cancelled_at.total,
              "spill cancelled in the middle of the sampling sweep", "at %s %d/%d",
              stage_names[log.cancelled_at.stage & 3], log.cancelled_at.completed, log.cancelled_at.total);
        tf_close(&ctx);
        check(directory_entries(directory, first, sizeof first) == 0 && unlinked_open_files_in(directory) == 0,
              "spill after a cancel and tf_close, the folder is empty and the file closed", "%s", first);
        check_released("spill after a cancel, every frame's opaque is released", 0, FRAMES);
    }

    /* An unusable temp_dir: the first latent to write fails with TF_EIO naming the folder; the context is failed. */
    char missing[4096], file[4096];
    snprintf(missing, sizeof missing, "%s/missing/folder", directory);
    snprintf(file, sizeof file, "%s-not-a-folder", directory);
    FILE *plain = fopen(file, "w");
    if (plain) fclose(plain);
    const char *unusable[] = {missing, file};
    const char *what[] = {"a missing folder", "a file"};
    for (int i = 0; i < 2; i++) {
        char name[256];
        set(s, "temp_dir", unusable[i]);
        ctx = open_settings(s);
        if (!ctx) continue;
        int code = send_clip(ctx, 1);
        snprintf(name, sizeof name, "spill temp_dir %s -> EIO naming the folder", what[i]);
        check_code_mentions(name, code, TF_EIO, ctx, unusable[i]);
        snprintf(name, sizeof name, "spill temp_dir %s: then send_frame -> EPERM", what[i]);
        check_code(name, send_range(ctx, 1, 1), TF_EPERM, ctx);
        snprintf(name, sizeof name, "spill temp_dir %s: then get_frame -> EPERM", what[i]);
        check_code(name, tf_get_frame(ctx, &out), TF_EPERM, ctx);
        tf_close(&ctx);
    }
    remove(file);
    /* Latents that fit latent_memory never need the folder. */
    set(s, "latent_memory", "1024");
    set(s, "temp_dir", missing);
    uint64_t unused = edit_hash(s, FRAMES);
    check(unused == memory_run, "spill an unusable temp_dir is not needed while the latents fit latent_memory",
          "%016llx vs %016llx", (unsigned long long)unused, (unsigned long long)memory_run);
    check(directory_entries(directory, first, sizeof first) == 0, "spill the folder is empty at the end", "%s", first);
    tf_settings_free(&s);
    return failures != 0;
}

/* ---- Keyframe schedules ---- */

/* Settings whose keyframe schedule has few possibilities: 3 frames in batches of 2 ({0,1} and {2}),
 * 2 sampling steps: step-major {k0, 2, k1, 2} with k0, k1 in {0, 1}. */
static TFSettings *keyframe_settings(const char *model) {
    TFSettings *s = quick_settings(model);
    set(s, "batch_size", "2");
    return s;
}

/* Opens, optionally sets a schedule, edits 3 frames; returns the output's FNV or 0 (code in *code). */
static uint64_t edit_with_keyframes(const TFSettings *s, const int32_t *keys, size_t count, int *code) {
    TFContext *ctx = NULL;
    uint64_t hash = 0;
    int frames = 0;
    *code = tf_open(&ctx, s);
    if (*code == TF_OK) *code = send_clip(ctx, 3);
    if (*code == TF_OK && keys) *code = tf_set_keyframes(ctx, keys, count);
    if (*code == TF_OK) *code = tf_run(ctx, NULL, NULL);
    if (*code == TF_OK) hash = drain_hash(ctx, &frames);
    if (*code != TF_OK) printf("  %s: %s\n", tf_strerror(*code), ctx ? tf_last_error(ctx) : tf_last_error(NULL));
    tf_close(&ctx);
    return frames == 3 ? hash : 0;
}

/* tf_run, and tf_end_of_stream, with this schedule must fail with TF_EINVAL before any work (no progress
 * report); then no frame comes out. */
static void schedule_refused(const char *name, const TFSettings *s, const int32_t *keys, size_t count) {
    for (int streaming = 0; streaming < 2; streaming++) {
        TFContext *ctx = NULL;
        const TFFrame *out = NULL;
        if (tf_open(&ctx, s) != TF_OK) {
            check(0, name, "tf_open: %s", tf_last_error(NULL));
            return;
        }
        struct progress_log log = {0};
        tf_set_progress_callback(ctx, on_progress, &log);
        send_clip(ctx, 3);
        const char *ending = streaming ? "end_of_stream" : "run";
        char label[256];
        snprintf(label, sizeof label, "%s: set_keyframes takes it (%s checks it against the clip)", name, ending);
        check_ok(label, tf_set_keyframes(ctx, keys, count), ctx);
        snprintf(label, sizeof label, "%s: %s -> EINVAL", name, ending);
        check_code(label, streaming ? tf_end_of_stream(ctx) : tf_run(ctx, on_progress, &log), TF_EINVAL, ctx);
        snprintf(label, sizeof label, "%s: refused by %s before any work", name, ending);
        check(log.calls == 0, label, "%d progress reports", log.calls);
        snprintf(label, sizeof label, "%s: after %s, get_frame -> EPERM", name, ending);
        check_code(label, tf_get_frame(ctx, &out), TF_EPERM, ctx);
        snprintf(label, sizeof label, "%s: after %s, no progress", name, ending);
        check(log.calls == 0, label, "%d progress reports", log.calls);
        tf_close(&ctx);
    }
}

static int keyframes(const char *model) {
    TFSettings *s = keyframe_settings(model);
    int code;

    /* The explicit schedule that equals the seeded one reproduces the seeded edit byte for byte: one of the
     * 4 possible schedules does (the header does not say how the seed draws, so all are tried), and the
     * schedule matters (not every schedule edits alike). */
    uint64_t seeded = edit_with_keyframes(s, NULL, 0, &code);
    check(seeded != 0, "keyframes seeded edit", "failed");
    uint64_t hashes[4];
    int matches = 0, distinct = 0, runs_ok = 1;
    for (int k = 0; k < 4; k++) {
        const int32_t schedule[] = {k & 1, 2, k >> 1, 2};
        hashes[k] = edit_with_keyframes(s, schedule, 4, &code);
        if (!hashes[k]) runs_ok = 0;
        if (hashes[k] == seeded) matches++;
        int seen = 0;
        for (int j = 0; j < k; j++) seen |= hashes[j] == hashes[k];
        distinct += !seen;
    }
    check(runs_ok, "keyframes every explicit schedule runs", "a run failed");
    check(seeded && matches >= 1, "keyframes an explicit schedule reproduces the seeded edit exactly",
          "none of the 4 schedules matches the seeded output %016llx: %016llx %016llx %016llx %016llx",
          (unsigned long long)seeded, (unsigned long long)hashes[0], (unsigned long long)hashes[1],
          (unsigned long long)hashes[2], (unsigned long long)hashes[3]);
    check(distinct > 1, "keyframes the schedule changes the edit", "all 4 schedules edit alike");

    /* The streaming loop takes a schedule too (set before the end of the stream): tf_run's bytes. */
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) == TF_OK) {
        const int32_t schedule[] = {1, 2, 0, 2};
        struct stream_run run;
        check_ok("keyframes set before streaming", tf_set_keyframes(ctx, schedule, 4), ctx);
        stream_edit(ctx, 0, 3, &run, NULL);
        check(run.code == TF_OK && run.count == 3 && run.hash == hashes[1], "keyframes the streaming loop edits with the schedule",
              "%016llx vs %016llx (%s)", (unsigned long long)run.hash, (unsigned long long)hashes[1], tf_strerror(run.code));
        tf_close(&ctx);
    }

    /* Explicit schedules need window 0: with a window, tf_set_keyframes refuses one at once with TF_EINVAL
     * naming the window (clearing with count 0 stays allowed), and the stream edits with the seeded one. */
    set(s, "window", "2"); /* windows: frames 0-1 and 2 */
    static const int32_t whole[] = {0, 2, 0, 2};
    if (tf_open(&ctx, s) == TF_OK) {
        check_code_mentions("keyframes with window 2: tf_set_keyframes -> EINVAL naming the window",
                            tf_set_keyframes(ctx, whole, 4), TF_EINVAL, ctx, "window");
        check_ok("keyframes with window 2: clearing is allowed", tf_set_keyframes(ctx, NULL, 0), ctx);
        check_ok("keyframes with window 2: the context stays usable", send_clip(ctx, 3), ctx);
        check_ok("keyframes with window 2: the stream edits with the seeded schedule", tf_run(ctx, NULL, NULL), ctx);
        tf_close(&ctx);
    }
    set(s, "window", "0");

    /* Per-clip state: count 0 clears, a second call replaces, the array is copied. */
    static const int32_t wrong_shape[] = {0, 2, 0};
    int frames = 0;
    uint64_t hash = 0;
    if (tf_open(&ctx, s) == TF_OK) {
        send_clip(ctx, 3);
        check_ok("keyframes set a bad schedule", tf_set_keyframes(ctx, wrong_shape, 3), ctx);
        check_ok("keyframes clear it with count 0", tf_set_keyframes(ctx, NULL, 0), ctx);
        if (tf_run(ctx, NULL, NULL) == TF_OK) hash = drain_hash(ctx, &frames);
        check(hash == seeded && frames == 3, "keyframes cleared: the seeded schedule is used", "%016llx vs %016llx",
              (unsigned long long)hash, (unsigned long long)seeded);
        tf_close(&ctx);
    }
    int pick = 3; /* a schedule that does not reproduce the seeded edit, if there is one */
    while (pick > 0 && hashes[pick] == seeded) pick--;
    if (tf_open(&ctx, s) == TF_OK) {
        int32_t schedule[] = {pick & 1, 2, pick >> 1, 2};
        tf_set_keyframes(ctx, wrong_shape, 3);
        check_ok("keyframes replace a schedule", tf_set_keyframes(ctx, schedule, 4), ctx);
        schedule[0] = !schedule[0]; /* the library keeps its own copy */
        schedule[1] = 99;
        send_clip(ctx, 3);
        hash = 0;
        if (tf_run(ctx, NULL, NULL) == TF_OK) hash = drain_hash(ctx, &frames);
        check(hash == hashes[pick] && frames == 3, "keyframes the last schedule set is used, as it was when set",
              "%016llx vs %016llx", (unsigned long long)hash, (unsigned long long)hashes[pick]);
        tf_close(&ctx);
    }

    /* Arguments, checked by tf_set_keyframes itself (counts too large for any array: keyframes-count). */
    if (tf_open(&ctx, s) == TF_OK) {
        check_code("keyframes NULL with count > 0 -> EINVAL", tf_set_keyframes(ctx, NULL, 4), TF_EINVAL, ctx);
        check_ok("keyframes NULL with count 0", tf_set_keyframes(ctx, NULL, 0), ctx);
        send_clip(ctx, 3);
        hash = 0;
        if (tf_run(ctx, NULL, NULL) == TF_OK) hash = drain_hash(ctx, &frames);
        check(hash == seeded, "keyframes a refused schedule leaves the seeded one", "%016llx vs %016llx",
              (unsigned long long)hash, (unsigned long long)seeded);
        tf_close(&ctx);
    }

    /* Schedules that do not fit the clip: tf_run refuses them before editing. */
    static const int32_t three[] = {0, 2, 0};            /* not steps x batches */
    static const int32_t one_step[] = {0, 2};            /* 1 step, the method samples 2 */
    static const int32_t three_steps[] = {0, 2, 0, 2, 0, 2};
    static const int32_t outside[] = {2, 2, 0, 2};       /* 2 is not in batch 0 (frames 0-1) */
    static const int32_t negative[] = {-1, 2, 0, 2};
    static const int32_t past_end[] = {0, 3, 0, 2};      /* the clip has frames 0-2 */
    schedule_refused("keyframes count not steps x batches", s, three, 3);
    schedule_refused("keyframes for 1 step of 2", s, one_step, 2);
    schedule_refused("keyframes for 3 steps of 2", s, three_steps, 6);
    schedule_refused("keyframes outside its batch", s, outside, 4);
    schedule_refused("keyframes negative", s, negative, 4);
    schedule_refused("keyframes past the last frame", s, past_end, 4);

    /* The method's own step count: SDEdit at strength 0.5 samples 1 of the 2 steps; reconstruct has no keyframes. */
    set(s, "method", "sdedit");
    set(s, "strength", "0.5");
    static const int32_t sdedit_schedule[] = {1, 2};
    edit_with_keyframes(s, sdedit_schedule, 2, &code);
    check_ok("keyframes sdedit takes one keyframe per batch per sampled step", code, NULL);
    static const int32_t sdedit_too_long[] = {1, 2, 1, 2};
    schedule_refused("keyframes sdedit schedule for all 2 steps", s, sdedit_too_long, 4);
    set(s, "method", "reconstruct");
    schedule_refused("keyframes with method reconstruct", s, sdedit_schedule, 2);
    tf_settings_free(&s);
    return failures != 0;
}

/* Counts no array can have (more bytes than the address space) must be refused whatever the pointer: the
 * library must not read, run or free anything based on them. One count per process (c-api.sh runs each):
 * a library that takes such a count can hang in tf_run or crash. */
static int keyframes_count(const char *model, const char *which) {
    static const struct { const char *name; size_t count; } counts[] = {
        {"SIZE_MAX", (size_t)-1}, {"2^63", (size_t)1 << 63}, {"SIZE_MAX/4+1", SIZE_MAX / sizeof(int32_t) + 1}, {"2^40", (size_t)1 << 40}};
    size_t i = 0;
    while (i < sizeof counts / sizeof counts[0] && strcmp(counts[i].name, which) != 0) i++;
    if (i == sizeof counts / sizeof counts[0]) {
        fprintf(stderr, "unknown count %s\n", which);
        return 2;
    }
    TFSettings *s = keyframe_settings(model);
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) != TF_OK) {
        check(0, "keyframes-count open", "%s", tf_last_error(NULL));
        return 1;
    }
    tf_settings_free(&s);
    static const int32_t some[4] = {0, 2, 0, 2};
    char label[128];
    printf("  tf_set_keyframes(ctx, a 4-entry array, %s = %zu)\n", counts[i].name, counts[i].count);
    fflush(stdout);
    int code = tf_set_keyframes(ctx, some, counts[i].count);
    snprintf(label, sizeof label, "keyframes count %s -> EINVAL", counts[i].name);
    check_code(label, code, TF_EINVAL, ctx);
    if (code == TF_EINVAL) { /* refused: the clip edits with the seeded schedule */
        int frames = 0;
        uint64_t hash = 0;
        send_clip(ctx, 3);
        if (tf_run(ctx, NULL, NULL) == TF_OK) hash = drain_hash(ctx, &frames);
        snprintf(label, sizeof label, "keyframes count %s refused: the clip still edits", counts[i].name);
        check(hash != 0 && frames == 3, label, "%s", tf_last_error(ctx));
    }
    tf_close(&ctx); /* if the count was taken, running would hang or read beyond `some`: only close */
    snprintf(label, sizeof label, "keyframes count %s: the context closes", counts[i].name);
    check(1, label, "");
    return failures != 0;
}

/* ---- Threads ---- */

/* FNV-1a of a whole quick edit of 3 frames (malloc'd); 0 on failure. */
static void *edit_checksum(void *model) {
    uint64_t *hash = malloc(sizeof *hash);
    TFSettings *s = quick_settings(model);
    *hash = edit_hash(s, 3);
    tf_settings_free(&s);
    return hash;
}

/* Each thread's calls fail differently and must see their own messages: refused settings (own TFSettings
 * on each thread) and tf_open of a model that does not exist. */
static void *errors_of_this_thread(void *argument) {
    const char *tag = argument;
    int mismatches = 0;
    char value[64], model[64];
    snprintf(value, sizeof value, "%s-steps", tag);
    snprintf(model, sizeof model, "/nonexistent-%s", tag);
    TFSettings *s = quick_settings(model);
    for (int i = 0; i < 200; i++) {
        if (tf_settings_set(s, "steps", value) != TF_EINVAL || !strstr(tf_last_error(NULL), value)) mismatches++;
        TFContext *ctx = NULL;
        if (tf_open(&ctx, s) != TF_ENOENT || !strstr(tf_last_error(NULL), model)) mismatches++;
        if (tf_run(NULL, NULL, NULL) != TF_EINVAL || !strstr(tf_last_error(NULL), "tf_run")) mismatches++;
    }
    tf_settings_free(&s);
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
    check(*alone != 0 && hash_a == *alone && hash_b == *alone, "two contexts in parallel threads edit like one alone",
          "alone %016llx, threads %016llx %016llx", (unsigned long long)*alone, (unsigned long long)hash_a,
          (unsigned long long)hash_b);
    free(alone);
    free(result_a);
    free(result_b);

    pthread_create(&a, NULL, errors_of_this_thread, "first");
    pthread_create(&b, NULL, errors_of_this_thread, "second");
    pthread_join(a, &result_a);
    pthread_join(b, &result_b);
    check(result_a == NULL && result_b == NULL, "tf_last_error(NULL) is per thread",
          "%d and %d calls saw another thread's message", (int)(intptr_t)result_a, (int)(intptr_t)result_b);
    return failures != 0;
}

/* ---- Leaks ---- */

static int leaks(const char *model, const char *directory) {
    /* Settings: refused values, reads, the option table. */
    TFSettings *s = quick_settings(model);
    set(s, "threads", "1"); /* valgrind runs one thread at a time anyway */
    check_code("leaks refused setting", tf_settings_set(s, "steps", "0"), TF_EINVAL, NULL);
    check_code("leaks unknown setting", tf_settings_set(s, "bogus", "1"), TF_EINVAL, NULL);
    int reads_ok = 1;
    for (int round = 0; round < 3; round++)
        for (int i = 0; tf_option(i); i++) {
            const char *value = tf_settings_get(s, tf_option(i)->name);
            reads_ok &= value != NULL && strlen(value) < 100000;
        }
    const char *prompt = tf_settings_get(s, "prompt");
    tf_settings_get(s, "steps");
    reads_ok &= strcmp(prompt, "a marble statue") == 0;
    check(reads_ok, "leaks settings reads", "a value is NULL");
    TFSettings *spare = NULL;
    tf_settings_new(&spare);
    tf_settings_set(spare, "prompt", "freed without use");
    tf_settings_free(&spare);

    set(s, "steps", "3");
    open_fails("leaks open with inconsistent settings", s, TF_EINVAL);
    set(s, "steps", "2");
    set(s, "model", "/nonexistent");
    open_fails("leaks open with a missing model", s, TF_ENOENT);
    set(s, "model", model);

    TFContext *ctx = NULL;
    const TFFrame *out = NULL;
    check_ok("leaks open", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    check_code("leaks get before the end of the stream", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    send_clip(ctx, 3);
    static const int32_t keys[] = {0, 0, 0};
    tf_set_keyframes(ctx, keys, 3);
    tf_set_keyframes(ctx, keys, 2);
    struct progress_log log = {0};
    log.cancel_at = 5;
    check_code("leaks cancel", tf_run(ctx, on_progress, &log), TF_ECANCELED, ctx);
    tf_close(&ctx);

    check_ok("leaks open for a bad schedule", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    send_clip(ctx, 3);
    tf_set_keyframes(ctx, keys, 3);
    check_code("leaks bad schedule", tf_run(ctx, NULL, NULL), TF_EINVAL, ctx);
    tf_close(&ctx);

    /* Opaque values the library must hand back at tf_close (malloc'd, freed by the release function: a frame
     * never released would leak), in a window-4 stream closed mid-stream. */
    set(s, "batch_size", "2");
    set(s, "window", "4");
    check_ok("leaks open a windowed stream", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    tf_set_opaque_release(ctx, free);
    static uint8_t frame[STRIDE * H];
    int returned = 0;
    for (int i = 0; i < 6; i++) {
        make_frame(frame, i);
        tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), malloc(16));
        while (tf_get_frame(ctx, &out) == TF_OK) {
            free(out->opaque); /* returned: the host's again */
            returned++;
        }
    }
    check(returned == 4, "leaks windowed stream: window 0 returned", "%d frames", returned);
    tf_close(&ctx); /* frames 4 and 5: released */

    /* A stream whose latents are all in the temporary file, cancelled in the middle of the sampling sweep,
     * then closed. */
    set(s, "window", "0");
    set(s, "batch_size", "4");
    set(s, "latent_memory", "0");
    set(s, "temp_dir", directory);
    check_ok("leaks open a spilled stream", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    tf_set_opaque_release(ctx, free);
    memset(&log, 0, sizeof log);
    log.cancel_mid_sampling = 1;
    tf_set_progress_callback(ctx, on_progress, &log);
    for (int i = 0; i < FRAMES; i++) {
        make_frame(frame, i);
        tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), malloc(16));
    }
    tf_end_of_stream(ctx);
    check_code("leaks spilled stream cancelled mid-sampling", tf_get_frame(ctx, &out), TF_ECANCELED, ctx);
    check(log.cancelled && log.cancelled_at.stage == TF_STAGE_SAMPLING && log.cancelled_at.completed < log.cancelled_at.total,
          "leaks cancelled in the middle of the sampling sweep", "at stage %d, %d/%d", log.cancelled_at.stage,
          log.cancelled_at.completed, log.cancelled_at.total);
    tf_close(&ctx);
    char first[256] = "";
    check(directory_entries(directory, first, sizeof first) == 0, "leaks the temp_dir folder is empty after tf_close", "%s", first);
    set(s, "latent_memory", "1024");
    set(s, "temp_dir", "");

    /* Out of memory: a working tensor beyond memory_limit (a 256x256 working size needs 2 MiB tensors) is
     * TF_ENOMEM naming the limit; the context is then closed like any other. */
    set(s, "memory_limit", "1");
    set(s, "size", "256x256");
    check_ok("leaks open with a 1 MiB memory_limit", tf_open(&ctx, s), NULL);
    /* Frames are encoded as they are sent, so the first frame already needs the tensors. */
    check_code_mentions("leaks send beyond memory_limit is TF_ENOMEM", send_clip(ctx, 1), TF_ENOMEM, ctx, "memory_limit of 1 MiB");
    check_code("leaks run after the failure is refused", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    tf_close(&ctx);
    set(s, "memory_limit", "0");
    set(s, "size", "input");

    check_ok("leaks open again", tf_open(&ctx, s), NULL);
    tf_settings_free(&s); /* before the context is closed */
    if (!ctx) return 1;
    send_clip(ctx, 3);
    static const int32_t good[] = {1, 2}; /* 3 frames in one batch of 4, 2 steps */
    check_ok("leaks keyframes", tf_set_keyframes(ctx, good, 2), ctx);
    memset(&log, 0, sizeof log);
    check_ok("leaks run", tf_run(ctx, on_progress, &log), ctx);
    int count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 3, "leaks frames", "%d frames", count);
    tf_close(&ctx);
    return failures != 0;
}

/* ---- Out of memory under an address-space limit (run by c-api.sh under `ulimit -v`) ---- */

/* The model loads; a working size of 16384x16384 then needs tensors the limit cannot hold: tf_run must
 * return TF_ENOMEM with a message, the context must close, and a context at a small size must work. */
static int address_space(const char *model) {
    TFSettings *s = quick_settings(model);
    set(s, "threads", "1");
    set(s, "size", "16384x16384");
    TFContext *ctx = NULL;
    check_ok("enomem open", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    /* Frames are encoded as they are sent, so the first frame already needs the tensors. */
    check_code_mentions("enomem send at 16384x16384 is TF_ENOMEM", send_clip(ctx, 1), TF_ENOMEM, ctx, "out of memory");
    tf_close(&ctx);
    set(s, "size", "input");
    check_ok("enomem open after the failure", tf_open(&ctx, s), NULL);
    if (!ctx) return 1;
    send_clip(ctx, 2);
    check_ok("enomem a small edit still works", tf_run(ctx, NULL, NULL), ctx);
    tf_close(&ctx);
    tf_settings_free(&s);
    return failures != 0;
}

/* ---- Dump (compared with a caller built against an older header) ---- */

static int on_progress_dump(void *opaque, const TFProgress *p) {
    (void)opaque;
    printf("progress %d %s %d/%d\n", p->stage, p->stage_name, p->completed, p->total);
    return 0;
}

static int dump(const char *model) {
    for (int i = 0; tf_option(i); i++) {
        const TFOption *o = tf_option(i);
        printf("option %s type=%d default=\"%s\" min=%g max=%g choices=", o->name, o->type, o->default_value, o->min, o->max);
        for (int c = 0; o->choices && o->choices[c]; c++) printf("%s%s", c ? "," : "", o->choices[c]);
        printf(" help=%s\n", o->help);
    }
    /* A newer caller: every setting set explicitly, to the table's default, then the few the older caller sets. */
    TFSettings *s = NULL;
    tf_settings_new(&s);
    for (int i = 0; tf_option(i); i++) set(s, tf_option(i)->name, tf_option(i)->default_value);
    set(s, "model", model);
    set(s, "prompt", "a marble statue");
    set(s, "steps", "2");
    set(s, "inversion_steps", "2");
    set(s, "size", "input");
    for (int i = 0; tf_option(i); i++) printf("value %s=\"%s\"\n", tf_option(i)->name, tf_settings_get(s, tf_option(i)->name));
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) != TF_OK) {
        printf("open failed: %s\n", tf_last_error(NULL));
        return 1;
    }
    tf_settings_free(&s);
    tf_set_progress_callback(ctx, on_progress_dump, NULL);
    static uint8_t frame[STRIDE * H];
    const TFFrame *out = NULL;
    for (int i = 0; i <= 3; i++) { /* 3 frames, then the end of the stream; every frame the library has after each */
        if (i < 3) {
            make_frame(frame, i);
            if (tf_send_frame(ctx, frame, W, H, STRIDE, pts_of(i), NULL) != TF_OK) printf("send failed: %s\n", tf_last_error(ctx));
        } else if (tf_end_of_stream(ctx) != TF_OK) {
            printf("end of stream failed: %s\n", tf_last_error(ctx));
        }
        int code;
        while ((code = tf_get_frame(ctx, &out)) == TF_OK)
            printf("frame %dx%d stride %td pts %lld fnv %016llx\n", out->width, out->height, out->stride, (long long)out->pts,
                   (unsigned long long)frame_hash(out, FNV_OFFSET));
        if (code != TF_EAGAIN) printf("get failed: %s\n", tf_last_error(ctx));
    }
    tf_close(&ctx);
    fprintf(stderr, "sizes TFOption=%zu TFProgress=%zu TFFrame=%zu\n", sizeof(TFOption), sizeof(TFProgress), sizeof(TFFrame));
    return 0;
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
    if (argc == 2 && strcmp(argv[1], "settings") == 0) return settings_group();
    if (argc == 3 && strcmp(argv[1], "success") == 0) return success(argv[2]);
    if (argc == 3 && strcmp(argv[1], "misuse") == 0) return misuse(argv[2]);
    if (argc == 3 && strcmp(argv[1], "window") == 0) return window_group(argv[2]);
    if (argc == 3 && strcmp(argv[1], "opaque") == 0) return opaque_group(argv[2]);
    if (argc == 4 && strcmp(argv[1], "spill") == 0) return spill(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "keyframes") == 0) return keyframes(argv[2]);
    if (argc == 4 && strcmp(argv[1], "keyframes-count") == 0) return keyframes_count(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(argv[2]);
    if (argc == 4 && strcmp(argv[1], "leaks") == 0) return leaks(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "dump") == 0) return dump(argv[2]);
    if (argc == 3 && strcmp(argv[1], "enomem") == 0) return address_space(argv[2]);
    if (argc == 5 && strcmp(argv[1], "open-error") == 0) {
        TFSettings *s = quick_settings(strcmp(argv[3], "-") == 0 ? NULL : argv[3]);
        open_fails(argv[4], s, code_named(argv[2]));
        printf("  message: %s\n", tf_last_error(NULL));
        tf_settings_free(&s);
        return failures != 0;
    }
    if (argc == 4 && strcmp(argv[1], "open-ok") == 0) {
        TFSettings *s = quick_settings(strcmp(argv[2], "-") == 0 ? NULL : argv[2]);
        TFContext *ctx = NULL;
        check_ok(argv[3], tf_open(&ctx, s), NULL);
        tf_close(&ctx);
        tf_settings_free(&s);
        return failures != 0;
    }
    fprintf(stderr, "usage: %s settings | success MODEL | misuse MODEL | window MODEL | opaque MODEL | spill MODEL DIR | keyframes MODEL | "
                    "keyframes-count MODEL N | threads MODEL | leaks MODEL DIR | "
                    "dump MODEL | open-error CODE MODEL|- NAME | open-ok MODEL|- NAME\n", argv[0]);
    return 2;
}
