/*
 * gst_capi_reference.c - the C API's edit of a raw clip, window by window, exactly as the GStreamer
 * element "tokenflow" drives it (one context per window of `window` frames, 0 = one window), so the
 * element's output can be compared byte for byte.
 *
 *   gst_capi_reference MODEL WIDTH HEIGHT WINDOW STEPS INVERSION_STEPS PROMPT IN.rgb OUT.rgb
 *
 * IN.rgb / OUT.rgb: packed RGB24 frames (stride 3 * WIDTH), back to back; the clip is edited at
 * size=input. Exit status 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tokenflow.h>

static int
edit_window (const TFSettings *s, const unsigned char *frames, int count, int width, int height,
    FILE *out)
{
    TFContext *ctx = NULL;
    const TFFrame *f;
    size_t frame_size = (size_t) width * height * 3;
    int r = tf_open (&ctx, s);
    if (r < 0) {
        fprintf (stderr, "tf_open: %s\n", tf_last_error (NULL));
        return 1;
    }
    for (int i = 0; i < count; i++) {
        r = tf_send_frame (ctx, frames + i * frame_size, width, height, (ptrdiff_t) width * 3, i);
        if (r < 0) {
            fprintf (stderr, "tf_send_frame: %s\n", tf_last_error (ctx));
            tf_close (&ctx);
            return 1;
        }
    }
    r = tf_run (ctx, NULL, NULL);
    if (r < 0) {
        fprintf (stderr, "tf_run: %s\n", tf_last_error (ctx));
        tf_close (&ctx);
        return 1;
    }
    for (int i = 0; i < count; i++) {
        if (tf_get_frame (ctx, &f) < 0 || f->width != width || f->height != height || f->pts != i) {
            fprintf (stderr, "tf_get_frame %d: %s\n", i, tf_last_error (ctx));
            tf_close (&ctx);
            return 1;
        }
        for (int y = 0; y < height; y++)
            fwrite (f->data + y * f->stride, 1, (size_t) width * 3, out);
    }
    tf_close (&ctx);
    return 0;
}

/* tf_settings_set, reporting a refusal. */
static int
set (TFSettings *s, const char *name, const char *value)
{
    if (tf_settings_set (s, name, value) == TF_OK)
        return 0;
    fprintf (stderr, "tf_settings_set %s=%s: %s\n", name, value, tf_last_error (NULL));
    return 1;
}

int
main (int argc, char **argv)
{
    if (argc != 10) {
        fprintf (stderr, "usage: %s MODEL WIDTH HEIGHT WINDOW STEPS INVERSION_STEPS PROMPT IN OUT\n", argv[0]);
        return 2;
    }
    int width = atoi (argv[2]), height = atoi (argv[3]), window = atoi (argv[4]);
    size_t frame_size = (size_t) width * height * 3;
    FILE *in = fopen (argv[8], "rb"), *out = fopen (argv[9], "wb");
    if (!in || !out || frame_size == 0) {
        fprintf (stderr, "cannot open %s or %s\n", argv[8], argv[9]);
        return 1;
    }
    fseek (in, 0, SEEK_END);
    long bytes = ftell (in);
    fseek (in, 0, SEEK_SET);
    int total = (int) (bytes / (long) frame_size);
    unsigned char *frames = malloc ((size_t) bytes + 1);
    if (total == 0 || fread (frames, 1, (size_t) bytes, in) != (size_t) bytes) {
        fprintf (stderr, "no frames in %s\n", argv[8]);
        return 1;
    }

    TFSettings *s = NULL;
    if (tf_settings_new (&s) != TF_OK || set (s, "model", argv[1]) || set (s, "steps", argv[5])
        || set (s, "inversion_steps", argv[6]) || set (s, "prompt", argv[7]) || set (s, "size", "input"))
        return 1;
    if (window <= 0)
        window = total;
    for (int start = 0; start < total; start += window) {
        int count = total - start < window ? total - start : window;
        if (edit_window (s, frames + start * frame_size, count, width, height, out))
            return 1;
    }
    tf_settings_free (&s);
    free (frames);
    fclose (in);
    return fclose (out) == 0 ? 0 : 1;
}
