/*
 * edit_clip: edits a clip with libtokenflow, loaded at run time with dlopen (no link-time dependency,
 * only the header). Shows the whole C API: settings, open, send, run with progress, get, errors.
 *
 *   cc -I Include -o edit_clip Examples/edit_clip.c -ldl
 *   ./edit_clip .build/prefix/lib/libtokenflow.so -m MODEL_DIR -p "a marble statue" -o out.rgb
 *
 * Input: a generated moving pattern (default), or raw packed RGB24 frames of --size from -i FILE.
 * Output: raw packed RGB24 frames (-o FILE), or one PPM per frame (-o DIR/ with a trailing slash).
 * Without -m, the library's default model is used ($TOKENFLOW_MODEL, then <prefix>/share/tokenflow/model).
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
    void (*default_settings)(TFSettings *);
    int (*open)(TFContext **, const TFSettings *);
    int (*send_frame)(TFContext *, const uint8_t *, int, int, ptrdiff_t, int64_t);
    int (*run)(TFContext *, TFProgressCallback, void *);
    int (*get_frame)(TFContext *, TFFrame *);
    const char *(*last_error)(const TFContext *);
    void (*close)(TFContext **);
} tf;

static int load_library(const char *path) {
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "edit_clip: cannot load %s: %s\n", path, dlerror());
        return -1;
    }
    struct { void **slot; const char *name; } symbols[] = {
        {(void **)&tf.version, "tf_version"},       {(void **)&tf.version_string, "tf_version_string"},
        {(void **)&tf.strerror, "tf_strerror"},     {(void **)&tf.default_settings, "tf_default_settings"},
        {(void **)&tf.open, "tf_open"},             {(void **)&tf.send_frame, "tf_send_frame"},
        {(void **)&tf.run, "tf_run"},               {(void **)&tf.get_frame, "tf_get_frame"},
        {(void **)&tf.last_error, "tf_last_error"}, {(void **)&tf.close, "tf_close"},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(library, symbols[i].name);
        if (!*symbols[i].slot) {
            fprintf(stderr, "edit_clip: %s has no %s: not a libtokenflow\n", path, symbols[i].name);
            return -1;
        }
    }
    /* Same major version: the ABI this program was compiled against. */
    if ((tf.version() >> 16) != TOKENFLOW_VERSION_MAJOR) {
        fprintf(stderr, "edit_clip: %s is version %s, this program needs %d.x\n", path, tf.version_string(),
                TOKENFLOW_VERSION_MAJOR);
        return -1;
    }
    return 0;
}

static int on_progress(void *opaque, int stage, int completed, int total) {
    static const char *names[] = {"encoding", "inversion", "sampling", "decoding"};
    (void)opaque;
    fprintf(stderr, "\r%-9s %4d/%-4d", stage >= 0 && stage < 4 ? names[stage] : "?", completed, total);
    if (completed == total) fputc('\n', stderr);
    return 0; /* non-zero would cancel the run */
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

static void usage(const char *program) {
    fprintf(stderr,
            "usage: %s LIBTOKENFLOW.so -o OUTPUT [options]\n"
            "  -o FILE | DIR/      raw RGB24 output file, or a directory (trailing /) for frame-NNNN.ppm files\n"
            "  -m MODEL            diffusers Stable Diffusion folder (default: the library's default model)\n"
            "  -p PROMPT           edit prompt (default \"a marble statue\")\n"
            "  -q PROMPT           prompt describing the source (inversion prompt, default \"\")\n"
            "  -i FILE             raw RGB24 input of --size frames (default: a generated moving pattern)\n"
            "  -s WxH              frame size (default 64x48)\n"
            "  -n FRAMES           frames to generate (default 8; with -i, every frame of the file)\n"
            "  --steps N           sampling steps (default 50)\n"
            "  --inversion-steps N DDIM inversion steps (default 50)\n"
            "  --input-size        process at the input size (default: longer side 512)\n",
            program);
}

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

int main(int argc, char **argv) {
    const char *output = NULL, *input = NULL, *model = NULL;
    const char *prompt = "a marble statue", *inversion_prompt = "";
    int width = 64, height = 48, frames = 8, steps = 50, inversion_steps = 50, input_size = 0;
    static const struct option long_options[] = {
        {"steps", required_argument, NULL, 'S'},
        {"inversion-steps", required_argument, NULL, 'I'},
        {"input-size", no_argument, NULL, 'Z'},
        {"size", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    for (int option; (option = getopt_long(argc, argv, "o:m:p:q:i:s:n:", long_options, NULL)) != -1;) {
        switch (option) {
        case 'o': output = optarg; break;
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'q': inversion_prompt = optarg; break;
        case 'i': input = optarg; break;
        case 'n': frames = atoi(optarg); break;
        case 'S': steps = atoi(optarg); break;
        case 'I': inversion_steps = atoi(optarg); break;
        case 'Z': input_size = 1; break;
        case 's':
            if (sscanf(optarg, "%dx%d", &width, &height) != 2 || width < 1 || height < 1) {
                fprintf(stderr, "edit_clip: --size must be WxH, got %s\n", optarg);
                return 2;
            }
            break;
        default: usage(argv[0]); return 2;
        }
    }
    if (optind != argc - 1 || !output || frames < 1) {
        usage(argv[0]);
        return 2;
    }
    if (load_library(argv[optind]) < 0) return 1;
    fprintf(stderr, "libtokenflow %s\n", tf.version_string());

    TFSettings settings;
    tf.default_settings(&settings);
    settings.model_path = model;
    settings.prompt = prompt;
    settings.inversion_prompt = inversion_prompt;
    settings.steps = steps;
    settings.inversion_steps = inversion_steps;
    if (input_size) settings.working_width = settings.working_height = -1;

    TFContext *ctx = NULL;
    int code = tf.open(&ctx, &settings);
    if (code < 0) {
        fprintf(stderr, "edit_clip: cannot open the editor: %s (%s)\n", tf.last_error(NULL), tf.strerror(code));
        return 1;
    }

    size_t frame_bytes = (size_t)width * height * 3;
    uint8_t *rgb = malloc(frame_bytes);
    FILE *in = input ? fopen(input, "rb") : NULL;
    if (!rgb || (input && !in)) {
        fprintf(stderr, "edit_clip: cannot read %s: %s\n", input ? input : "(memory)", strerror(errno));
        return 1;
    }
    int sent = 0;
    for (; input ? fread(rgb, 1, frame_bytes, in) == frame_bytes : sent < frames; sent++) {
        if (!input) pattern_frame(rgb, width, height, sent);
        /* pts: here simply the frame number; a host passes its own timestamps, returned untouched. */
        code = tf.send_frame(ctx, rgb, width, height, (ptrdiff_t)width * 3, sent);
        if (code < 0) break;
    }
    if (in) fclose(in);
    free(rgb);
    if (code >= 0 && sent == 0) {
        fprintf(stderr, "edit_clip: %s holds no complete %dx%d frame\n", input, width, height);
        code = -1;
    } else if (code >= 0) {
        fprintf(stderr, "editing %d frames of %dx%d: \"%s\"\n", sent, width, height, prompt);
        code = tf.run(ctx, on_progress, NULL);
    }
    if (code < 0) {
        fprintf(stderr, "edit_clip: %s (%s)\n", tf.last_error(ctx), tf.strerror(code));
        tf.close(&ctx);
        return 1;
    }

    int to_directory = output[strlen(output) - 1] == '/';
    FILE *out = to_directory ? NULL : fopen(output, "wb");
    if (!to_directory && !out) {
        fprintf(stderr, "edit_clip: cannot write %s: %s\n", output, strerror(errno));
        tf.close(&ctx);
        return 1;
    }
    TFFrame frame;
    int written = 0, failed = 0;
    while (!failed && (code = tf.get_frame(ctx, &frame)) == TF_OK) {
        if (to_directory) {
            failed = write_ppm(output, written, &frame) < 0;
        } else {
            for (int y = 0; y < frame.height && !failed; y++)
                failed = fwrite(frame.data + y * frame.stride, 3, frame.width, out) != (size_t)frame.width;
        }
        written++;
    }
    if (out && fclose(out) != 0) failed = 1;
    if (!failed && code != TF_EAGAIN) fprintf(stderr, "edit_clip: %s (%s)\n", tf.last_error(ctx), tf.strerror(code));
    tf.close(&ctx);
    if (failed) fprintf(stderr, "edit_clip: writing %s failed\n", output);
    if (failed || code != TF_EAGAIN) return 1;
    fprintf(stderr, "wrote %d frames to %s\n", written, output);
    return 0;
}
