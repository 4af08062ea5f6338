/*
 * gst_capi_reference.c - the C API's edit of a raw clip, streamed exactly as the GStreamer element
 * "tokenflow" drives it (one context for the stream; after each tf_send_frame every frame tf_get_frame
 * gives until TF_EAGAIN; then tf_end_of_stream and the rest), so the element's output can be compared
 * byte for byte. The library implements the window: with WINDOW W every W frames are edited while the
 * stream goes on (anchored to the earlier windows), with 0 the whole stream at the end.
 *
 *   gst_capi_reference MODEL WIDTH HEIGHT WINDOW STEPS INVERSION_STEPS PROMPT IN.rgb OUT.rgb [NAME=VALUE...]
 *
 * IN.rgb / OUT.rgb: packed RGB24 frames (stride 3 * WIDTH), back to back; the clip is edited at
 * size=input; NAME=VALUE: more settings (e.g. latent_memory=0). Checks that the frames come out in order
 * with their pts, and that with WINDOW W the frames of each full window come out before the end of the
 * stream. Prints how many frames came out before it. Exit status 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tokenflow.h>

/* tf_settings_set, reporting a refusal. */
static int
set (TFSettings *s, const char *name, const char *value)
{
    if (tf_settings_set (s, name, value) == TF_OK)
        return 0;
    fprintf (stderr, "tf_settings_set %s=%s: %s\n", name, value, tf_last_error (NULL));
    return 1;
}

/* Writes every frame tf_get_frame gives until TF_EAGAIN; *next is the index of the next frame expected. */
static int
drain (TFContext *ctx, int width, int height, int *next, FILE *out)
{
    const TFFrame *f;
    int r;
    while ((r = tf_get_frame (ctx, &f)) == TF_OK) {
        if (f->width != width || f->height != height || f->pts != *next
            || f->opaque != (void *) (size_t) (*next + 1)) {
            fprintf (stderr, "tf_get_frame: frame %dx%d pts %lld opaque %p, want %dx%d pts %d opaque %p\n",
                f->width, f->height, (long long) f->pts, f->opaque, width, height, *next,
                (void *) (size_t) (*next + 1));
            return 1;
        }
        for (int y = 0; y < height; y++)
            fwrite (f->data + y * f->stride, 1, (size_t) width * 3, out);
        (*next)++;
    }
    if (r != TF_EAGAIN) {
        fprintf (stderr, "tf_get_frame after %d frames: %s (%s)\n", *next, tf_strerror (r), tf_last_error (ctx));
        return 1;
    }
    return 0;
}

int
main (int argc, char **argv)
{
    if (argc < 10) {
        fprintf (stderr, "usage: %s MODEL WIDTH HEIGHT WINDOW STEPS INVERSION_STEPS PROMPT IN OUT [NAME=VALUE...]\n",
            argv[0]);
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
        || set (s, "inversion_steps", argv[6]) || set (s, "prompt", argv[7]) || set (s, "size", "input")
        || set (s, "window", argv[4]))
        return 1;
    for (int a = 10; a < argc; a++) {
        char *eq = strchr (argv[a], '=');
        if (eq == NULL) {
            fprintf (stderr, "%s: not NAME=VALUE\n", argv[a]);
            return 2;
        }
        *eq = '\0';
        if (set (s, argv[a], eq + 1))
            return 1;
    }
    TFContext *ctx = NULL;
    if (tf_open (&ctx, s) < 0) {
        fprintf (stderr, "tf_open: %s\n", tf_last_error (NULL));
        return 1;
    }
    tf_settings_free (&s);

    /* Frame i is sent with pts i and opaque i + 1 (non-NULL), as the element sends its metadata. */
    int next = 0;
    for (int i = 0; i < total; i++) {
        int r = tf_send_frame (ctx, frames + i * frame_size, width, height, (ptrdiff_t) width * 3, i,
            (void *) (size_t) (i + 1));
        if (r < 0) {
            fprintf (stderr, "tf_send_frame %d: %s\n", i, tf_last_error (ctx));
            return 1;
        }
        if (drain (ctx, width, height, &next, out))
            return 1;
        /* Window W: the frames of every full window are out as soon as its last frame is sent. */
        int want = window > 0 ? (i + 1) / window * window : 0;
        if (next != want) {
            fprintf (stderr, "after %d frames sent (window %d): %d frames out, want %d\n", i + 1, window,
                next, want);
            return 1;
        }
    }
    fprintf (stderr, "%d of %d frames out before the end of the stream\n", next, total);
    int r = tf_end_of_stream (ctx);
    if (r < 0) {
        fprintf (stderr, "tf_end_of_stream: %s\n", tf_last_error (ctx));
        return 1;
    }
    if (drain (ctx, width, height, &next, out))
        return 1;
    if (next != total) {
        fprintf (stderr, "%d of %d frames out after the end of the stream\n", next, total);
        return 1;
    }
    tf_close (&ctx);
    free (frames);
    fclose (in);
    return fclose (out) == 0 ? 0 : 1;
}
