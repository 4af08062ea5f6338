/* Reference for the FFmpeg filter tests (Tests/Host/ffmpeg-filter.sh).
 *
 *   ffmpeg_filter_reference IN.rgb OUT.rgb WIDTH HEIGHT [NAME=VALUE ...]
 *
 * Edits raw RGB24 frames with the C API the way vf_tokenflow does: the library's defaults for every
 * setting not given, each NAME=VALUE passed to tf_settings_set as text, one context for the whole stream
 * (the library does the windowing: `window` frames per edit, anchored to earlier windows, or the whole
 * stream with window=0), each frame sent with tf_get_frame drained in between, then the end of the
 * stream and a last drain. Its bytes can be compared with ffmpeg's rawvideo output. pts are the frame
 * indices and the opaque values their index + 1; both are checked on the way out, and so is the count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tokenflow.h>

static int fail(const char *what, int code, const TFContext *ctx) {
    fprintf(stderr, "ffmpeg_filter_reference: %s: %s (%s)\n", what, tf_strerror(code), tf_last_error(ctx));
    return 1;
}

/* Copies every frame the context has ready into `frames` (at *done, in order) until TF_EAGAIN. */
static int drain(TFContext *ctx, unsigned char *frames, long count, long *done, int width, int height) {
    size_t frame_size = (size_t)width * height * 3;
    const TFFrame *out;
    int ret;
    while ((ret = tf_get_frame(ctx, &out)) == TF_OK) {
        long i = *done;
        if (i >= count || out->width != width || out->height != height || out->pts != i ||
            out->opaque != (void *)(intptr_t)(i + 1)) {
            fprintf(stderr, "ffmpeg_filter_reference: output frame %ld (of %ld) came back as %dx%d pts %lld opaque %p\n",
                    i, count, out->width, out->height, (long long)out->pts, out->opaque);
            return 1;
        }
        for (int y = 0; y < height; y++)
            memcpy(frames + i * frame_size + (size_t)y * width * 3, out->data + y * out->stride, (size_t)width * 3);
        (*done)++;
    }
    return ret == TF_EAGAIN ? 0 : fail("tf_get_frame", ret, ctx);
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

    TFContext *ctx = NULL;
    ret = tf_open(&ctx, settings);
    tf_settings_free(&settings);
    if (ret < 0) return fail("tf_open", ret, NULL);
    /* Edited frames overwrite their input in `frames`: frame i is sent before it can come back. */
    long done = 0;
    for (long i = 0; i < count; i++) {
        ret = tf_send_frame(ctx, frames + i * frame_size, width, height, (ptrdiff_t)width * 3, i, (void *)(intptr_t)(i + 1));
        if (ret < 0) { fail("tf_send_frame", ret, ctx); tf_close(&ctx); return 1; }
        if (drain(ctx, frames, count, &done, width, height)) { tf_close(&ctx); return 1; }
    }
    ret = tf_end_of_stream(ctx);
    if (ret < 0) { fail("tf_end_of_stream", ret, ctx); tf_close(&ctx); return 1; }
    if (drain(ctx, frames, count, &done, width, height)) { tf_close(&ctx); return 1; }
    tf_close(&ctx);
    if (done != count) {
        fprintf(stderr, "ffmpeg_filter_reference: %ld frames sent, %ld returned\n", count, done);
        return 1;
    }

    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(frames, 1, (size_t)bytes, out) != (size_t)bytes || fclose(out) != 0) { perror(argv[2]); return 1; }
    free(frames);
    printf("%ld frames, window %ld\n", count, window);
    return 0;
}
