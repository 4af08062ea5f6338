/*
 * edit_clip: edits a clip with libtokenflow, loaded at run time with dlopen (no link-time dependency,
 * only the header). Shows the whole C API: the settings table, settings by name, open, progress, keyframes
 * (optional), the streaming loop (send a frame, get what is ready, ..., end of stream, get the rest), errors.
 *
 *   cc -I Include -o edit_clip Examples/edit_clip.c -ldl
 *   ./edit_clip .build/prefix/lib/libtokenflow.so -o out.rgb model=MODEL_DIR prompt="a marble statue" steps=20
 *   ./edit_clip .build/prefix/lib/libtokenflow.so --options          (lists every setting)
 *
 * Settings are NAME=VALUE arguments passed to tf_settings_set as they are, so every setting of the library
 * works here, including ones added after this program was written. Settings not given keep the library's
 * defaults; without model=, the library's default model is used ($TOKENFLOW_MODEL, then
 * <prefix>/share/tokenflow/model).
 * Input: a generated moving pattern (default), or raw packed RGB24 frames of -s WxH from -i FILE.
 * Output: raw packed RGB24 frames (-o FILE), or one PPM per frame (-o DIR/ with a trailing slash).
 * With window=N, edited frames are written while the input is still being read (every N frames).
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenflow.h"

/* The library's functions, resolved with dlsym. */
static struct {
    unsigned (*version)(void);
    const char *(*version_string)(void);
    const char *(*strerror)(int);
    const TFOption *(*option)(int);
    int (*settings_new)(TFSettings **);
    int (*settings_set)(TFSettings *, const char *, const char *);
    const char *(*settings_get)(TFSettings *, const char *);
    void (*settings_free)(TFSettings **);
    int (*open)(TFContext **, const TFSettings *);
    int (*set_progress_callback)(TFContext *, TFProgressCallback, void *);
    int (*set_keyframes)(TFContext *, const int32_t *, size_t);
    int (*send_frame)(TFContext *, const uint8_t *, int, int, ptrdiff_t, int64_t, void *);
    int (*end_of_stream)(TFContext *);
    int (*get_frame)(TFContext *, const TFFrame **);
    const char *(*last_error)(const TFContext *);
    void (*close)(TFContext **);
} tf;

static int load_library(const char *path) {
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "edit_clip: cannot load %s: %s\n", path, dlerror());
        return -1;
    }
    /* The version first: a library of another ABI may lack (or differ in) the other functions. */
    *(void **)&tf.version = dlsym(library, "tf_version");
    *(void **)&tf.version_string = dlsym(library, "tf_version_string");
    if (!tf.version || !tf.version_string) {
        fprintf(stderr, "edit_clip: %s has no tf_version: not a libtokenflow\n", path);
        return -1;
    }
    /* The ABI this program was compiled against: the same major version (and, before 1.0, the same minor). */
    unsigned version = tf.version();
    if ((version >> 16) != TOKENFLOW_VERSION_MAJOR ||
        (TOKENFLOW_VERSION_MAJOR == 0 && ((version >> 8) & 0xFF) != TOKENFLOW_VERSION_MINOR)) {
        fprintf(stderr, "edit_clip: %s is version %s, this program needs %d.%d.x\n", path, tf.version_string(),
                TOKENFLOW_VERSION_MAJOR, TOKENFLOW_VERSION_MINOR);
        return -1;
    }
    struct { void **slot; const char *name; } symbols[] = {
        {(void **)&tf.strerror, "tf_strerror"},         {(void **)&tf.option, "tf_option"},
        {(void **)&tf.settings_new, "tf_settings_new"}, {(void **)&tf.settings_set, "tf_settings_set"},
        {(void **)&tf.settings_get, "tf_settings_get"}, {(void **)&tf.settings_free, "tf_settings_free"},
        {(void **)&tf.open, "tf_open"},                 {(void **)&tf.set_keyframes, "tf_set_keyframes"},
        {(void **)&tf.set_progress_callback, "tf_set_progress_callback"},
        {(void **)&tf.send_frame, "tf_send_frame"},     {(void **)&tf.end_of_stream, "tf_end_of_stream"},
        {(void **)&tf.get_frame, "tf_get_frame"},       {(void **)&tf.last_error, "tf_last_error"},
        {(void **)&tf.close, "tf_close"},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(library, symbols[i].name);
        if (!*symbols[i].slot) {
            fprintf(stderr, "edit_clip: %s has no %s: not a libtokenflow %d.%d\n", path, symbols[i].name,
                    TOKENFLOW_VERSION_MAJOR, TOKENFLOW_VERSION_MINOR);
            return -1;
        }
    }
    return 0;
}

/* --options: the library's settings table, as a host would build its own options from it. */
static void list_options(void) {
    static const char *const types[] = {"text", "integer", "number", "choice", "size"};
    for (int i = 0; tf.option(i); i++) {
        const TFOption *o = tf.option(i);
        printf("%-17s %-7s default \"%s\"", o->name, o->type >= 0 && o->type <= 4 ? types[o->type] : "?", o->default_value);
        if (o->type == TF_OPTION_INT || o->type == TF_OPTION_FLOAT) printf(", %.10g to %.10g", o->min, o->max);
        if (o->methods[0]) printf(" (methods: %s)", o->methods);
        printf("\n    %s\n", o->help);
        for (int c = 0; o->type == TF_OPTION_CHOICE && o->choices[c]; c++)
            printf("    %d = %-12s %s\n", c, o->choices[c], o->choice_help[c]);
    }
}

/* Called by tf_get_frame while it edits (a window, or the whole stream at its end). */
static int on_progress(void *opaque, const TFProgress *p) {
    int windowed = *(const int *)opaque;
    if (windowed) fprintf(stderr, "\rwindow %d: ", p->window);
    else fputc('\r', stderr);
    fprintf(stderr, "%-9s %4d/%-4d step %d/%d", p->stage_name, p->completed, p->total, p->step, p->steps);
    if (p->completed == p->total) fputc('\n', stderr);
    return 0; /* non-zero would cancel the edit: tf_get_frame returns TF_ECANCELED */
}

/* Frame i of a pattern that moves right and down: stripes, a gradient and a bouncing square. */
static void pattern_frame(uint8_t *rgb, int width, int height, int i) {
    int square = height / 3, room = width > square ? width - square : 1;
    int sx = (i * 4) % room, sy = height / 3 + (i % 2);
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++) {
            uint8_t *p = rgb + 3 * ((size_t)y * width + x);
            int inside = x >= sx && x < sx + square && y >= sy && y < sy + square;
            p[0] = inside ? 230 : (uint8_t)(((x + 2 * i) / 6 % 2) * 120 + 40);
            p[1] = inside ? 60 : (uint8_t)(255 * y / height);
            p[2] = inside ? 40 : (uint8_t)(255 - 255 * x / width);
        }
}

/* "0,9,3,12" -> the schedule; 0 if malformed or longer than `capacity`. */
static size_t parse_keyframes(const char *text, int32_t *schedule, size_t capacity) {
    size_t count = 0;
    for (const char *p = text; count < capacity; p++) {
        char *end;
        long key = strtol(p, &end, 10);
        if (end == p) return 0;
        schedule[count++] = (int32_t)key;
        if (*end == '\0') return count;
        if (*end != ',') return 0;
        p = end;
    }
    return 0;
}

static void usage(const char *program) {
    fprintf(stderr,
            "usage: %s LIBTOKENFLOW.so -o OUTPUT [options] [NAME=VALUE...]\n"
            "       %s LIBTOKENFLOW.so --options\n"
            "  -o FILE | DIR/      raw RGB24 output file, or a directory (trailing /) for frame-NNNN.ppm files\n"
            "  -i FILE             raw RGB24 input of -s frames (default: a generated moving pattern)\n"
            "  -s WxH              frame size (default 64x48)\n"
            "  -n FRAMES           frames to generate (default 8; with -i, every frame of the file)\n"
            "  -k K,K,...          explicit keyframe schedule (frame indices, step-major; default: drawn with seed)\n"
            "  --options           list the library's settings\n"
            "  NAME=VALUE          a library setting, e.g. model=DIR prompt=\"a marble statue\" steps=20 size=input\n",
            program, program);
}

/* Where edited frames go: a raw RGB24 file, or a directory of PPM files. */
struct output {
    const char *path;
    FILE *file;   /* NULL: path is a directory */
    int written;
};

static int write_ppm(const char *directory, int index, const TFFrame *frame) {
    char path[4096];
    snprintf(path, sizeof path, "%sframe-%04d.ppm", directory, index);
    FILE *file = fopen(path, "wb");
    if (!file) {
        fprintf(stderr, "edit_clip: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(file, "P6\n%d %d\n255\n", frame->width, frame->height);
    for (int y = 0; y < frame->height; y++) fwrite(frame->data + y * frame->stride, 3, frame->width, file);
    return fclose(file) == 0 ? 0 : -1;
}

/* Not a library code (those are <= 0): a failure this program has already reported. */
enum { REPORTED = 1 };

/* Gets and writes every edited frame the library has now. TF_EAGAIN: no more for now (before the end of the
 * stream) or none left (after it); REPORTED: writing failed; else the library's error. */
static int write_ready_frames(TFContext *ctx, struct output *out) {
    const TFFrame *frame; /* owned by the context, valid until the next tf_get_frame */
    int code;
    while ((code = tf.get_frame(ctx, &frame)) == TF_OK) {
        int failed = 0;
        if (!out->file) {
            failed = write_ppm(out->path, out->written, frame) < 0;
        } else {
            for (int y = 0; y < frame->height && !failed; y++)
                failed = fwrite(frame->data + y * frame->stride, 3, frame->width, out->file) != (size_t)frame->width;
        }
        if (failed) {
            fprintf(stderr, "edit_clip: writing %s failed\n", out->path);
            return REPORTED;
        }
        /* frame->pts is the pts sent with its input frame (frame->opaque likewise). */
        out->written++;
    }
    return code;
}

int main(int argc, char **argv) {
    const char *output = NULL, *input = NULL, *keys = NULL;
    int width = 64, height = 48, frames = 8, options = 0;
    static const struct option long_options[] = {{"options", no_argument, NULL, 'O'}, {NULL, 0, NULL, 0}};
    for (int option; (option = getopt_long(argc, argv, "o:i:s:n:k:", long_options, NULL)) != -1;) {
        switch (option) {
        case 'o': output = optarg; break;
        case 'i': input = optarg; break;
        case 'n': frames = atoi(optarg); break;
        case 'k': keys = optarg; break;
        case 'O': options = 1; break;
        case 's':
            if (sscanf(optarg, "%dx%d", &width, &height) != 2 || width < 1 || height < 1) {
                fprintf(stderr, "edit_clip: -s must be WxH, got %s\n", optarg);
                return 2;
            }
            break;
        default: usage(argv[0]); return 2;
        }
    }
    /* The first argument left is the library; the others are settings. */
    if (optind >= argc || (!options && (!output || frames < 1))) {
        usage(argv[0]);
        return 2;
    }
    if (load_library(argv[optind]) < 0) return 1;
    fprintf(stderr, "libtokenflow %s\n", tf.version_string());
    if (options) {
        list_options();
        return 0;
    }

    /* Settings by name, from text: the library checks each value (and says what it allows). */
    TFSettings *settings = NULL;
    if (tf.settings_new(&settings) < 0) {
        fprintf(stderr, "edit_clip: %s\n", tf.last_error(NULL));
        return 1;
    }
    tf.settings_set(settings, "prompt", "a marble statue"); /* this example's default; prompt= replaces it */
    for (int i = optind + 1; i < argc; i++) {
        char *equals = strchr(argv[i], '=');
        if (!equals) {
            fprintf(stderr, "edit_clip: %s is not NAME=VALUE\n", argv[i]);
            usage(argv[0]);
            return 2;
        }
        *equals = '\0';
        if (tf.settings_set(settings, argv[i], equals + 1) < 0) {
            fprintf(stderr, "edit_clip: %s\n", tf.last_error(NULL));
            return 2;
        }
        fprintf(stderr, "set %s=%s\n", argv[i], tf.settings_get(settings, argv[i]));
    }

    TFContext *ctx = NULL;
    int code = tf.open(&ctx, settings);
    if (code < 0) {
        fprintf(stderr, "edit_clip: cannot open the editor: %s (%s)\n", tf.last_error(NULL), tf.strerror(code));
        tf.settings_free(&settings);
        return 1;
    }
    char prompt[256], method[64];
    snprintf(prompt, sizeof prompt, "%s", tf.settings_get(settings, "prompt"));
    snprintf(method, sizeof method, "%s", tf.settings_get(settings, "method"));
    int windowed = atoi(tf.settings_get(settings, "window")) > 0;
    tf.settings_free(&settings); /* the context has its own copy */
    tf.set_progress_callback(ctx, on_progress, &windowed);

    if (keys) { /* before the end of the stream; checked against the clip when it ends */
        int32_t schedule[1024];
        size_t count = parse_keyframes(keys, schedule, sizeof schedule / sizeof schedule[0]);
        if (count == 0) {
            fprintf(stderr, "edit_clip: -k takes frame indices separated by commas, got %s\n", keys);
            tf.close(&ctx);
            return 2;
        }
        fprintf(stderr, "keyframe schedule: %zu keyframes\n", count);
        if ((code = tf.set_keyframes(ctx, schedule, count)) < 0) {
            fprintf(stderr, "edit_clip: %s (%s)\n", tf.last_error(ctx), tf.strerror(code));
            tf.close(&ctx);
            return 1;
        }
    }

    size_t frame_bytes = (size_t)width * height * 3;
    uint8_t *rgb = malloc(frame_bytes);
    FILE *in = input ? fopen(input, "rb") : NULL;
    if (!rgb || (input && !in)) {
        fprintf(stderr, "edit_clip: cannot read %s: %s\n", input ? input : "(memory)", strerror(errno));
        free(rgb);
        tf.close(&ctx);
        return 1;
    }
    struct output out = {output, NULL, 0};
    if (output[strlen(output) - 1] != '/' && !(out.file = fopen(output, "wb"))) {
        fprintf(stderr, "edit_clip: cannot write %s: %s\n", output, strerror(errno));
        if (in) fclose(in);
        free(rgb);
        tf.close(&ctx);
        return 1;
    }

    /* The streaming loop: send a frame, then write the edited frames that are ready (with window=N, N frames
     * every N frames; with the whole stream as one edit, none before the end). Then end the stream: the next
     * tf_get_frame edits what is left, and the rest comes out. */
    fprintf(stderr, "editing %dx%d frames with %s: \"%s\"\n", width, height, method, prompt);
    int sent = 0;
    code = TF_EAGAIN; /* nothing ready: the loop's normal state */
    while (code == TF_EAGAIN && (input ? fread(rgb, 1, frame_bytes, in) == frame_bytes : sent < frames)) {
        if (!input) pattern_frame(rgb, width, height, sent);
        /* pts: here simply the frame number; a host passes its own timestamps (and, as the last argument, any
         * pointer of its own), returned untouched with the edited frame. */
        code = tf.send_frame(ctx, rgb, width, height, (ptrdiff_t)width * 3, sent++, NULL);
        if (code == TF_OK) code = write_ready_frames(ctx, &out);
    }
    if (in) fclose(in);
    free(rgb);
    if (code == TF_EAGAIN && sent == 0) {
        fprintf(stderr, "edit_clip: %s holds no complete %dx%d frame\n", input, width, height);
        code = REPORTED;
    } else if (code == TF_EAGAIN) {
        code = tf.end_of_stream(ctx);
        if (code == TF_OK) code = write_ready_frames(ctx, &out); /* TF_EAGAIN: every frame is out */
    }
    if (code != TF_EAGAIN && code != REPORTED) fprintf(stderr, "edit_clip: %s (%s)\n", tf.last_error(ctx), tf.strerror(code));
    tf.close(&ctx);
    if (out.file && fclose(out.file) != 0 && code == TF_EAGAIN) {
        fprintf(stderr, "edit_clip: writing %s failed\n", output);
        code = REPORTED;
    }
    if (code != TF_EAGAIN) {
        /* A failed edit leaves no partial output file behind (frames already written to a folder are
         * complete files and stay). */
        if (out.file) remove(output);
        return 1;
    }
    fprintf(stderr, "wrote %d frames to %s\n", out.written, output);
    return 0;
}
