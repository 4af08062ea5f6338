/* Reference for the FFmpeg filter tests (Tests/Host/ffmpeg-filter.sh): edits raw RGB24 frames with the C
 * API the way vf_tokenflow does (library defaults for every setting not given, one context per window of
 * WINDOW frames, 0 = all frames in one run), so its bytes can be compared with ffmpeg's rawvideo output.
 *
 *   ffmpeg_filter_reference IN.rgb OUT.rgb WIDTH HEIGHT WINDOW MODEL PROMPT STEPS INVERSION_STEPS SIZE
 *
 * SIZE: "input" (working size = input rounded to multiples of 8) or WxH. pts are the frame indices and
 * are checked on the way out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tokenflow.h>

static int fail(const char *what, int code, const TFContext *ctx) {
    fprintf(stderr, "ffmpeg_filter_reference: %s: %s (%s)\n", what, tf_strerror(code), tf_last_error(ctx));
    return 1;
}

/* Edits frames [first, first + count) of `frames` in place. */
static int edit_window(const TFSettings *settings, unsigned char *frames, long first, long count,
                       int width, int height) {
    size_t frame_size = (size_t)width * height * 3;
    TFContext *ctx = NULL;
    int ret = tf_open(&ctx, settings);
    if (ret < 0) return fail("tf_open", ret, NULL);
    for (long i = 0; i < count; i++) {
        ret = tf_send_frame(ctx, frames + (first + i) * frame_size, width, height, (ptrdiff_t)width * 3, first + i);
        if (ret < 0) { fail("tf_send_frame", ret, ctx); tf_close(&ctx); return 1; }
    }
    ret = tf_run(ctx, NULL, NULL);
    if (ret < 0) { fail("tf_run", ret, ctx); tf_close(&ctx); return 1; }
    for (long i = 0; i < count; i++) {
        TFFrame out;
        ret = tf_get_frame(ctx, &out);
        if (ret < 0) { fail("tf_get_frame", ret, ctx); tf_close(&ctx); return 1; }
        if (out.width != width || out.height != height || out.pts != first + i) {
            fprintf(stderr, "ffmpeg_filter_reference: frame %ld came back as %dx%d pts %lld\n",
                    first + i, out.width, out.height, (long long)out.pts);
            tf_close(&ctx);
            return 1;
        }
        for (int y = 0; y < height; y++)
            memcpy(frames + (first + i) * frame_size + (size_t)y * width * 3, out.data + y * out.stride, (size_t)width * 3);
    }
    tf_close(&ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s IN.rgb OUT.rgb WIDTH HEIGHT WINDOW MODEL PROMPT STEPS INVERSION_STEPS SIZE\n", argv[0]);
        return 2;
    }
    int width = atoi(argv[3]), height = atoi(argv[4]);
    long window = atol(argv[5]);
    TFSettings settings;
    tf_default_settings(&settings);
    settings.model_path = argv[6];
    settings.prompt = argv[7];
    settings.steps = atoi(argv[8]);
    settings.inversion_steps = atoi(argv[9]);
    if (strcmp(argv[10], "input") == 0) {
        settings.working_width = settings.working_height = -1;
    } else if (sscanf(argv[10], "%dx%d", &settings.working_width, &settings.working_height) != 2) {
        fprintf(stderr, "bad size %s\n", argv[10]);
        return 2;
    }

    FILE *in = fopen(argv[1], "rb");
    if (!in) { perror(argv[1]); return 1; }
    fseek(in, 0, SEEK_END);
    long bytes = ftell(in);
    fseek(in, 0, SEEK_SET);
    size_t frame_size = (size_t)width * height * 3;
    if (width <= 0 || height <= 0 || bytes <= 0 || bytes % (long)frame_size != 0) {
        fprintf(stderr, "%s: %ld bytes is not a whole number of %dx%d RGB24 frames\n", argv[1], bytes, width, height);
        return 1;
    }
    long count = bytes / (long)frame_size;
    unsigned char *frames = malloc((size_t)bytes);
    if (!frames || fread(frames, 1, (size_t)bytes, in) != (size_t)bytes) { perror("read"); return 1; }
    fclose(in);

    if (window <= 0) window = count;
    for (long first = 0; first < count; first += window) {
        long n = count - first < window ? count - first : window;
        if (edit_window(&settings, frames, first, n, width, height)) return 1;
    }

    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(frames, 1, (size_t)bytes, out) != (size_t)bytes || fclose(out) != 0) { perror(argv[2]); return 1; }
    free(frames);
    printf("%ld frames in %ld-frame windows\n", count, window);
    return 0;
}
