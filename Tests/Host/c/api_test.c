/*
 * C-host tests of libtokenflow's API (Include/tokenflow.h), linked like a real host links it.
 *
 *     api_test GROUP [ARG...]     prints "PASS <name>" / "FAIL <name>: <why>" lines; exit 1 on any failure
 *
 * Groups (Tests/Host/c-api.sh runs each with the environment it needs):
 *     settings                 the settings table (tf_option) and every type's grammar in tf_settings_set/get
 *     success MODEL            a full edit on the tiny model: count, size, stride, pts, progress, drain
 *     misuse MODEL             NULL arguments, inconsistent settings, state machine, cancellation, ...
 *     keyframes MODEL          tf_set_keyframes: reproducing the seeded schedule, bad schedules, state
 *     keyframes-count MODEL N  tf_set_keyframes with a count no array can have: N = SIZE_MAX, 2^63,
 *                              SIZE_MAX/4+1 or 2^40 (a process each: a library that takes it may crash)
 *     threads MODEL            contexts editing in parallel; error messages kept per thread
 *     leaks MODEL              one pass over the success and error paths, small enough for valgrind
 *     dump MODEL               no checks: prints the options, progress and frames of a small edit, with every
 *                              setting set explicitly to its default (c-api.sh compares it with a caller
 *                              built against an older header, which sets only a few settings)
 *     open-error CODE MODEL NAME   tf_open with model MODEL ("-" = not set) must fail with CODE (ENOENT, ...)
 *     open-ok MODEL NAME           tf_open with model MODEL ("-" = not set) must succeed (default lookup)
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* FNV-1a over the pixels of every remaining output frame (drains the context); 0 if tf_get_frame fails
 * with anything but TF_EAGAIN. */
static uint64_t drain_hash(TFContext *ctx, int *count) {
    uint64_t hash = 1469598103934665603u;
    const TFFrame *out = NULL;
    int code;
    *count = 0;
    while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
        for (int y = 0; y < out->height; y++)
            for (int x = 0; x < 3 * out->width; x++) hash = (hash ^ out->data[y * out->stride + x]) * 1099511628211u;
        (*count)++;
    }
    return code == TF_EAGAIN ? hash : 0;
}

/* ---- Progress reports ---- */

static const char *const stage_names[] = {"encoding", "inversion", "sampling", "decoding"};

struct progress_log {
    int calls, cancel_at, last_stage, problems;
    char problem[256];          /* the first problem seen */
    int seen[4];
    TFProgress last[4];         /* each stage's last report */
};

static void progress_problem(struct progress_log *log, const char *format, ...) {
    if (log->problems++ == 0) {
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(log->problem, sizeof log->problem, format, arguments);
        va_end(arguments);
    }
}

/* Checks each report on its own and against the previous one of its stage. */
static int on_progress(void *opaque, const TFProgress *p) {
    struct progress_log *log = opaque;
    log->calls++;
    if (!p) {
        progress_problem(log, "report %d is NULL", log->calls);
        return 1;
    }
    int stage = p->stage;
    if (stage < TF_STAGE_ENCODING || stage > TF_STAGE_DECODING) {
        progress_problem(log, "report %d has stage %d", log->calls, stage);
        return log->cancel_at > 0 && log->calls >= log->cancel_at;
    }
    if (!p->stage_name || strcmp(p->stage_name, stage_names[stage]) != 0)
        progress_problem(log, "stage %d is named \"%s\", expected \"%s\"", stage, p->stage_name ? p->stage_name : "(NULL)",
                         stage_names[stage]);
    if (log->calls > 1 && stage < log->last_stage)
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
    return log->cancel_at > 0 && log->calls >= log->cancel_at;
}

/* After a complete run: the stages tf_run works through (inversion and sampling: frames are encoded by
 * tf_send_frame and decoded by tf_get_frame, so tf_run never reports those two) reported, each stage's last
 * report complete, and the expected sizes. */
static void check_progress(const char *prefix, const struct progress_log *log, int frames, int inversion_steps,
                           int sampling_steps) {
    char name[160];
    snprintf(name, sizeof name, "%s progress reports are consistent (names, order, completed <= total, step <= steps)", prefix);
    check(log->calls > 0 && log->problems == 0, name, "%d calls, %d problems; first: %s", log->calls, log->problems,
          log->problem);
    int all_seen = 1, complete = 1;
    char detail[512] = "";
    for (int stage = 0; stage < 4; stage++) {
        const TFProgress *p = &log->last[stage];
        int reported_by_run = stage == TF_STAGE_INVERSION || stage == TF_STAGE_SAMPLING;
        if (log->seen[stage] != reported_by_run) all_seen = 0;
        else if (reported_by_run && (p->completed != p->total || p->step != p->steps)) complete = 0;
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
    static const char *const documented[] = {"model", "prompt", "negative_prompt", "inversion_prompt", "method", "steps",
                                             "inversion_steps", "guidance", "pnp_attn_t", "pnp_f_t", "strength",
                                             "batch_size", "seed", "size", "threads", "window"};
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
    check_ok("success send frames", send_clip(ctx, FRAMES), ctx);

    struct progress_log log = {0};
    code = tf_run(ctx, on_progress, &log);
    check_ok("success run", code, ctx);
    check_progress("success", &log, FRAMES, 2, 2);

    uint8_t input[STRIDE * H];
    int count = 0, sizes_ok = 1, pts_ok = 1, differs = 0, same_struct = 1;
    const TFFrame *out = NULL, *first = NULL;
    while ((code = tf_get_frame(ctx, &out)) == TF_OK) {
        if (!out || out->width != W || out->height != H || out->stride < 3 * W || out->data == NULL) {
            sizes_ok = 0;
            break;
        }
        if (!first) first = out;
        else if (out != first) same_struct = 0;
        if (out->pts != pts_of(count)) pts_ok = 0;
        make_frame(input, count);
        for (int y = 0; y < H; y++)
            if (memcmp(out->data + y * out->stride, input + y * STRIDE, 3 * W) != 0) differs++;
        count++;
    }
    check(count == FRAMES, "success frame count", "%d frames out, %d in", count, FRAMES);
    check(sizes_ok, "success frame size and stride", "an output frame is not 64x48 RGB24");
    check(pts_ok, "success pts carried through in order", "an output pts differs from its input's");
    check(differs > 0, "success output differs from input", "the edit returned the input unchanged");
    (void)same_struct; /* the header lets the library hand out a new TFFrame each time: not checked */
    check_code("success drained -> EAGAIN", code, TF_EAGAIN, ctx);
    check_code("success EAGAIN again", tf_get_frame(ctx, &out), TF_EAGAIN, ctx);
    tf_close(&ctx);
    check(ctx == NULL, "success close sets ctx to NULL", "ctx not NULL");

    /* The other methods run too, with their own number of sampling steps. */
    s = quick_settings(model);
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
        check_progress("success sdedit", &log, 3, 4, 2);
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

static TFContext *open_quick(const char *model) {
    TFSettings *s = quick_settings(model);
    TFContext *ctx = NULL;
    if (tf_open(&ctx, s) != TF_OK) {
        printf("FAIL open %s: %s\n", model, tf_last_error(NULL));
        failures++;
    }
    tf_settings_free(&s);
    return ctx;
}

/* Opens `s`, edits `frames` frames of the test clip, returns the FNV of the output (0 on failure). */
static uint64_t edit_hash(const TFSettings *s, int frames) {
    TFContext *ctx = NULL;
    int count = 0;
    uint64_t hash = 0;
    if (tf_open(&ctx, s) == TF_OK && send_clip(ctx, frames) == TF_OK && tf_run(ctx, NULL, NULL) == TF_OK)
        hash = drain_hash(ctx, &count);
    if (!hash) printf("  edit failed: %s\n", ctx ? tf_last_error(ctx) : tf_last_error(NULL));
    tf_close(&ctx);
    return count == frames ? hash : 0;
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
    check_code("send_frame NULL ctx -> EINVAL", tf_send_frame(NULL, frame, W, H, STRIDE, 0), TF_EINVAL, NULL);
    check_code("set_keyframes NULL ctx -> EINVAL", tf_set_keyframes(NULL, keys, 2), TF_EINVAL, NULL);
    check_code("run NULL ctx -> EINVAL", tf_run(NULL, NULL, NULL), TF_EINVAL, NULL);
    check_code("get_frame NULL ctx -> EINVAL", tf_get_frame(NULL, &out), TF_EINVAL, NULL);
    tf_close(NULL);
    TFContext *null_ctx = NULL;
    tf_close(&null_ctx);
    check(1, "close NULL and *ctx NULL are ignored", "");

    /* Frame arguments and the state machine on a real context. */
    ctx = open_quick(model);
    if (!ctx) return 1;
    check(tf_last_error(ctx) != NULL && tf_last_error(ctx)[0] == '\0', "last_error is empty on a fresh context", "not empty");
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
    check_code("set_keyframes after run -> EPERM", tf_set_keyframes(ctx, keys, 2), TF_EPERM, ctx);
    check_code("set_keyframes (clearing) after run -> EPERM", tf_set_keyframes(ctx, NULL, 0), TF_EPERM, ctx);
    check_code("run twice -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
    int count = 0;
    while (tf_get_frame(ctx, &out) == TF_OK) count++;
    check(count == 2, "only the accepted frames are edited", "%d frames", count);
    tf_close(&ctx);
    tf_close(&ctx);
    check(ctx == NULL, "double close", "ctx not NULL");

    ctx = open_quick(model);
    if (!ctx) return 1;
    check_code("run without frames -> EINVAL", tf_run(ctx, NULL, NULL), TF_EINVAL, ctx);
    check_code("get_frame after a failed run -> EPERM", tf_get_frame(ctx, &out), TF_EPERM, ctx);
    check_code("send_frame after a failed run -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0), TF_EPERM, ctx);
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
    check_code("send_frame after cancel -> EPERM", tf_send_frame(ctx, frame, W, H, STRIDE, 0), TF_EPERM, ctx);
    check_code("set_keyframes after cancel -> EPERM", tf_set_keyframes(ctx, NULL, 0), TF_EPERM, ctx);
    check_code("run after cancel -> EPERM", tf_run(ctx, NULL, NULL), TF_EPERM, ctx);
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

/* tf_run with this schedule must fail with TF_EINVAL before any work (no progress report). */
static void schedule_refused(const char *name, const TFSettings *s, const int32_t *keys, size_t count) {
    TFContext *ctx = NULL;
    const TFFrame *out = NULL;
    if (tf_open(&ctx, s) != TF_OK) {
        check(0, name, "tf_open: %s", tf_last_error(NULL));
        return;
    }
    send_clip(ctx, 3);
    char label[256];
    snprintf(label, sizeof label, "%s: set_keyframes takes it (tf_run checks it against the clip)", name);
    check_ok(label, tf_set_keyframes(ctx, keys, count), ctx);
    struct progress_log log = {0};
    snprintf(label, sizeof label, "%s: run -> EINVAL", name);
    check_code(label, tf_run(ctx, on_progress, &log), TF_EINVAL, ctx);
    snprintf(label, sizeof label, "%s: refused before any work", name);
    check(log.calls == 0, label, "%d progress reports", log.calls);
    snprintf(label, sizeof label, "%s: then get_frame -> EPERM", name);
    check_code(label, tf_get_frame(ctx, &out), TF_EPERM, ctx);
    tf_close(&ctx);
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

    /* Per-clip state: count 0 clears, a second call replaces, the array is copied. */
    static const int32_t wrong_shape[] = {0, 2, 0};
    TFContext *ctx = NULL;
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

static int leaks(const char *model) {
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
    check_code("leaks get before run", tf_get_frame(ctx, &out), TF_EPERM, ctx);
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
    send_clip(ctx, 3);
    if (tf_run(ctx, on_progress_dump, NULL) != TF_OK) printf("run failed: %s\n", tf_last_error(ctx));
    const TFFrame *out = NULL;
    while (tf_get_frame(ctx, &out) == TF_OK) {
        uint64_t hash = 1469598103934665603u;
        for (int y = 0; y < out->height; y++)
            for (int x = 0; x < 3 * out->width; x++) hash = (hash ^ out->data[y * out->stride + x]) * 1099511628211u;
        printf("frame %dx%d stride %td pts %lld fnv %016llx\n", out->width, out->height, out->stride, (long long)out->pts,
               (unsigned long long)hash);
    }
    tf_close(&ctx);
    fprintf(stderr, "sizes TFOption=%zu TFProgress=%zu\n", sizeof(TFOption), sizeof(TFProgress));
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
    if (argc == 3 && strcmp(argv[1], "keyframes") == 0) return keyframes(argv[2]);
    if (argc == 4 && strcmp(argv[1], "keyframes-count") == 0) return keyframes_count(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(argv[2]);
    if (argc == 3 && strcmp(argv[1], "leaks") == 0) return leaks(argv[2]);
    if (argc == 3 && strcmp(argv[1], "dump") == 0) return dump(argv[2]);
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
    fprintf(stderr, "usage: %s settings | success MODEL | misuse MODEL | keyframes MODEL | keyframes-count MODEL N | threads MODEL | leaks MODEL | "
                    "dump MODEL | open-error CODE MODEL|- NAME | open-ok MODEL|- NAME\n", argv[0]);
    return 2;
}
