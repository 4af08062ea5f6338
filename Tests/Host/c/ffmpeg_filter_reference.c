/* Reference for the FFmpeg filter tests (Tests/Host/ffmpeg-filter.sh).
 *
 *   ffmpeg_filter_reference IN.rgb OUT.rgb WIDTH HEIGHT [NAME=VALUE ...]
 *
 * Edits raw RGB24 frames with the C API the way vf_tokenflow does: the library's defaults for every
 * setting not given, each NAME=VALUE passed to tf_settings_set as text, and one context per window of
 * `window` frames (read back with tf_settings_get; 0 = all frames in one run), so its bytes can be compared
 * with ffmpeg's rawvideo output. pts are the frame indices and are checked on the way out. */
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
        const TFFrame *out;
        ret = tf_get_frame(ctx, &out);
        if (ret < 0) { fail("tf_get_frame", ret, ctx); tf_close(&ctx); return 1; }
        if (out->width != width || out->height != height || out->pts != first + i) {
            fprintf(stderr, "ffmpeg_filter_reference: frame %ld came back as %dx%d pts %lld\n",
                    first + i, out->width, out->height, (long long)out->pts);
            tf_close(&ctx);
            return 1;
        }
        for (int y = 0; y < height; y++)
            memcpy(frames + (first + i) * frame_size + (size_t)y * width * 3, out->data + y * out->stride, (size_t)width * 3);
    }
    tf_close(&ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s IN.rgb OUT.rgb WIDTH HEIGHT [NAME=VALUE ...]\n", argv[0]);
        return 2;
    }
    int width = atoi(argv[3]), height = atoi(argv[4]);
    TFSettings *settings = NULL;
    int ret = tf_settings_new(&settings);
    if (ret < 0) return fail("tf_settings_new", ret, NULL);
    for (int i = 5; i < argc; i++) {
        char *equals = strchr(argv[i], '=');
        if (!equals) { fprintf(stderr, "ffmpeg_filter_reference: %s is not NAME=VALUE\n", argv[i]); return 2; }
        *equals = '\0';
        ret = tf_settings_set(settings, argv[i], equals + 1);
        if (ret < 0) return fail(argv[i], ret, NULL);
    }
    const char *window_text = tf_settings_get(settings, "window");
    long window = window_text ? atol(window_text) : 0;

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
        if (edit_window(settings, frames, first, n, width, height)) return 1;
    }
    tf_settings_free(&settings);

    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(frames, 1, (size_t)bytes, out) != (size_t)bytes || fclose(out) != 0) { perror(argv[2]); return 1; }
    free(frames);
    printf("%ld frames in %ld-frame windows\n", count, window);
    return 0;
}
