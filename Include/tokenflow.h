/*
 * tokenflow.h - the stable C API of libtokenflow (text-driven, temporally consistent video editing
 * with a frozen Stable Diffusion model, on the CPU).
 *
 * This header is the library's only public ABI. Only the symbols declared here are exported.
 *
 * Usage (every call returns TF_OK (0) or a negative TF_E* code; see tf_strerror and tf_last_error):
 *
 *     TFSettings *s = NULL;
 *     tf_settings_new(&s);
 *     tf_settings_set(s, "model", "/models/stable-diffusion-2-1-base");
 *     tf_settings_set(s, "prompt", "a marble sculpture of a woman running");
 *     TFContext *ctx = NULL;
 *     if (tf_open(&ctx, s) < 0) { ... ctx is NULL; tf_last_error(NULL) says why ... }
 *     tf_settings_free(&s);
 *     tf_set_progress_callback(ctx, progress_cb, opaque);   (optional; the callback may cancel)
 *     const TFFrame *out;
 *     for each frame {
 *         tf_send_frame(ctx, rgb, width, height, stride, pts, frame_opaque);
 *         while (tf_get_frame(ctx, &out) == TF_OK) { ... out->data, out->pts, out->opaque ... }
 *     }
 *     tf_end_of_stream(ctx);
 *     while (tf_get_frame(ctx, &out) == TF_OK) { ... }   (then TF_EAGAIN: every frame is out)
 *     tf_close(&ctx);
 *
 * A context takes a stream of any length: frames are encoded as they are sent and only their latents are
 * kept (memory up to the latent_memory setting, then an unlinked temporary file). With the window setting
 * 0 (default) the whole stream is one edit, made by the first tf_get_frame after tf_end_of_stream; with
 * window W, every W frames are edited (by the tf_get_frame that needs them) and output while the stream
 * goes on, each window attending to anchor frames of earlier windows so that all share one look.
 * tf_get_frame is where the long work happens; it reports progress through the callback. tf_run(ctx, cb,
 * opaque) is the whole-clip shortcut: end of stream and every edit done at once; tf_get_frame then only
 * decodes.
 *
 * Frames are packed RGB24 (3 bytes per pixel, R G B), rows `stride` bytes apart. Output frames have the
 * input's size, count and order, and carry the pts that was sent with each input frame.
 *
 * Threads: a context is used by one thread at a time (calls on one context must not overlap).
 * Several contexts may run in parallel on different threads, and so may several TFSettings. tf_option,
 * tf_strerror, tf_version and tf_version_string may be called from any thread at any time.
 *
 * Models: the library keeps the most recently opened model loaded (shared, read-only, by every context
 * that uses it) until a different model is opened or the process exits, so opening a context per stream
 * does not reload gigabytes of weights. A model changed on disk is loaded again.
 *
 * Ownership: every string and buffer passed in is copied (or only read during the call); the caller
 * keeps ownership. Memory returned by the library (TFFrame.data, tf_last_error strings) stays owned by
 * the library and is valid until the next call on the same context, or tf_close.
 */
#ifndef TOKENFLOW_H
#define TOKENFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TF_API __attribute__((visibility("default")))
#else
#define TF_API
#endif

#define TOKENFLOW_VERSION_MAJOR 0
#define TOKENFLOW_VERSION_MINOR 3
#define TOKENFLOW_VERSION_PATCH 0
/* Single number for compile-time checks: (major << 16) | (minor << 8) | patch. */
#define TOKENFLOW_VERSION ((TOKENFLOW_VERSION_MAJOR << 16) | (TOKENFLOW_VERSION_MINOR << 8) | TOKENFLOW_VERSION_PATCH)

/* Runtime version of the loaded library, encoded like TOKENFLOW_VERSION. Compatibility: from 1.0 a host
 * built against major version M works with every M.x library. Before 1.0 a minor version may change the
 * ABI (0.2 replaced 0.1's settings struct with named settings), so a host checks at run time that the
 * library's major and minor versions are the ones it was built against (as the FFmpeg filter, the
 * GStreamer element and Examples/edit_clip.c do). */
TF_API unsigned tf_version(void);
/* Runtime version as "major.minor.patch". Static string. */
TF_API const char *tf_version_string(void);

/* Error codes: negative errno values. */
#define TF_OK         0
#define TF_EPERM     (-1)   /* call not allowed in the context's state (send after the end of the stream, run
                                   twice, any call but close after a failure) */
#define TF_ENOENT    (-2)   /* model directory or one of its files is missing */
#define TF_EIO       (-5)   /* input/output error: model files unreadable or corrupt, or the temporary latent
                                   file cannot be created, written or read */
#define TF_EAGAIN    (-11)  /* tf_get_frame: no frame until more input (after the end of the stream: all out) */
#define TF_ENOMEM    (-12)  /* out of memory */
#define TF_EINVAL    (-22)  /* invalid argument: NULL pointer, bad setting, bad frame */
#define TF_ERANGE    (-34)  /* the model produced NaN or infinite values (broken weights, extreme settings) */
#define TF_ENOTSUP   (-95)  /* unsupported model configuration */
#define TF_ECANCELED (-125) /* the progress callback asked to stop */

/* Short static description of an error code ("invalid argument", ...). Never NULL. */
TF_API const char *tf_strerror(int code);

/*
 * Settings: an opaque set of named values, like FFmpeg's AVOptions. The library declares every setting
 * once (name, type, default, range or allowed values, help, methods that use it); hosts list them with
 * tf_option and set them by name with tf_settings_set, so a setting added to the library appears in
 * every host without a change to the host.
 *
 * Growth: the caller never allocates a library struct. Settings grow by name (a caller built against an
 * older header sets the names it knows; the others keep their defaults); the structs the library hands
 * out (TFOption, TFProgress, TFFrame) are owned by the library and only grow at the end, so a caller built
 * against an older header reads the fields it knows.
 */
typedef struct TFSettings TFSettings;

typedef enum TFOptionType {
    TF_OPTION_STRING = 0,  /* UTF-8 text */
    TF_OPTION_INT = 1,     /* decimal integer in [min, max] */
    TF_OPTION_FLOAT = 2,   /* decimal number in [min, max] (finite) */
    TF_OPTION_CHOICE = 3,  /* one of `choices` by name, or its index as a decimal integer */
    TF_OPTION_SIZE = 4     /* working size: "WxH" (multiples of 8), "input" (the input size rounded to a
                              multiple of 8), a number (the longer side, aspect kept), "" = "512" */
} TFOptionType;

/* One setting. Owned by the library, static. */
typedef struct TFOption {
    const char *name;           /* e.g. "negative_prompt": the spelling every host uses */
    const char *help;           /* one sentence */
    int type;                   /* a TFOptionType */
    const char *default_value;  /* the default, as text tf_settings_set accepts */
    double min, max;            /* TF_OPTION_INT / TF_OPTION_FLOAT: allowed range (inclusive); else 0 */
    const char *const *choices;      /* TF_OPTION_CHOICE: NULL-terminated allowed values; else NULL */
    const char *const *choice_help;  /* TF_OPTION_CHOICE: one sentence per choice; else NULL */
    const char *methods;        /* methods that use it, comma-separated ("tokenflow,sdedit"); "" = all */
} TFOption;

/* The index-th setting (0-based), or NULL past the last one. */
TF_API const TFOption *tf_option(int index);

/* Creates settings holding every default. On failure *out is NULL (TF_EINVAL: out is NULL; TF_ENOMEM). */
TF_API int tf_settings_new(TFSettings **out);

/* Parses and sets one setting. value is text in the option's grammar (see TFOptionType; NULL = "").
 * On failure the settings are unchanged and tf_last_error(NULL) names the setting, the value and what is
 * allowed. Errors: TF_EINVAL (NULL settings/name, unknown name, value not allowed). */
TF_API int tf_settings_set(TFSettings *settings, const char *name, const char *value);

/* The current value of a setting as text (in the grammar tf_settings_set accepts), or NULL for an
 * unknown name. Owned by settings, valid until the same setting is read again or settings is freed. */
TF_API const char *tf_settings_get(TFSettings *settings, const char *name);

/* Frees settings and sets *settings to NULL. NULL and *settings == NULL are ignored. */
TF_API void tf_settings_free(TFSettings **settings);

typedef struct TFContext TFContext;

/*
 * Checks the settings against each other and the model, and loads the model. The settings are copied
 * (free them when you like). On success *out is a new context; on failure *out is NULL and
 * tf_last_error(NULL) describes the problem (on this thread).
 * Errors: TF_EINVAL (NULL out/settings, inconsistent settings), TF_ENOTSUP (unsupported model config),
 *         TF_ENOENT (no model given and none installed, missing model files), TF_EIO (corrupt files),
 *         TF_ENOMEM.
 */
TF_API int tf_open(TFContext **out, const TFSettings *settings);

/*
 * Adds one input frame to the stream: it is resampled to the working size and VAE-encoded now, and only
 * its latents are kept (in memory up to the latent_memory setting, beyond it in an unlinked temporary file
 * in temp_dir), so a stream of any length fits. All frames of a stream must have one size (>= 1x1);
 * stride >= 3 * width. pts and opaque are returned unchanged with the edited frame (the library never
 * dereferences opaque; see tf_set_opaque_release for frames that are never returned).
 * Errors: TF_EINVAL (NULL ctx/rgb, bad size or stride, size differs from earlier frames),
 *         TF_EPERM (after tf_end_of_stream or tf_run), TF_ENOMEM, TF_EIO (the temporary file cannot be
 *         written). After a TF_ENOMEM or TF_EIO the context can only be closed.
 */
TF_API int tf_send_frame(TFContext *ctx, const uint8_t *rgb, int width, int height, ptrdiff_t stride, int64_t pts,
                         void *opaque);

/* No more frames: the next tf_get_frame edits what is left (the last partial window, or the whole stream).
 * Errors: TF_EINVAL (NULL ctx, a keyframe schedule that does not fit the stream), TF_EPERM (called twice,
 * or after tf_run). */
TF_API int tf_end_of_stream(TFContext *ctx);

/* A function the context calls, at tf_close, with the opaque value of every frame sent and never returned
 * (NULL opaque values are skipped), so a host need not track them. NULL (default): none. */
TF_API int tf_set_opaque_release(TFContext *ctx, void (*release)(void *opaque));

/*
 * Optional per-clip input, before the end of the stream: an explicit keyframe schedule (instead of the one
 * drawn with the seed), for reproducing a run exactly; only for whole-stream edits (window 0). `count` absolute frame indices, step-major: for each sampling step
 * of the method, one keyframe per batch of batch_size frames. Copied. count 0 clears it.
 * Errors: TF_EINVAL (NULL ctx, NULL keyframes with count > 0), TF_EPERM (after the end of the stream). The
 * schedule is checked against the clip by tf_end_of_stream or tf_run (TF_EINVAL).
 */
TF_API int tf_set_keyframes(TFContext *ctx, const int32_t *keyframes, size_t count);

/* The stages of an edit. tf_run reports inversion and sampling; frames are VAE-encoded by tf_send_frame
 * and decoded by tf_get_frame, one at a time, so the library keeps latents, never a clip's pixels. */
typedef enum TFStage {
    TF_STAGE_ENCODING = 0,  /* VAE encoding, per frame (in tf_send_frame: not reported) */
    TF_STAGE_INVERSION = 1, /* DDIM inversion, per UNet call */
    TF_STAGE_SAMPLING = 2,  /* editing, per UNet call */
    TF_STAGE_DECODING = 3   /* VAE decoding, per frame (in tf_get_frame: not reported) */
} TFStage;

/* A progress report. Owned by the library, valid during the callback. */
typedef struct TFProgress {
    int stage;               /* a TFStage */
    const char *stage_name;  /* "encoding", "inversion", "sampling" or "decoding" */
    int completed, total;    /* units (frames, or UNet calls) done in this stage, and the stage's total */
    int step, steps;         /* inversion/sampling: denoising steps done and the stage's step count;
                                encoding/decoding: equal to completed/total */
    int window;              /* the window being edited, from 0 (always 0 with window = 0) */
} TFProgress;

/* Called at least once per UNet call of an edit (in tf_run or tf_get_frame). Return 0 to continue,
 * non-zero to cancel: the call returns TF_ECANCELED and the context can only be closed. */
typedef int (*TFProgressCallback)(void *opaque, const TFProgress *progress);

/* The progress callback of the edits tf_get_frame makes (NULL: none). Errors: TF_EINVAL (NULL ctx). */
TF_API int tf_set_progress_callback(TFContext *ctx, TFProgressCallback callback, void *opaque);

/*
 * The whole-clip shortcut: ends the stream and edits every frame sent so far now (every window, in order),
 * with callback (may be NULL) as the progress callback; tf_get_frame then only decodes. Blocks until done.
 * Errors: TF_EINVAL (NULL ctx, no frames sent, keyframe schedule that does not fit the clip),
 *         TF_EPERM (run already called, or the end of the stream signalled), TF_ECANCELED, TF_ENOMEM, TF_EIO.
 * After an error the context can only be closed.
 */
TF_API int tf_run(TFContext *ctx, TFProgressCallback callback, void *opaque);

/* An edited frame, owned by the context: data is packed RGB24, valid until the next tf_get_frame or
 * tf_close. */
typedef struct TFFrame {
    const uint8_t *data;
    int width;
    int height;
    ptrdiff_t stride;
    int64_t pts;
    void *opaque;            /* as given to tf_send_frame */
} TFFrame;

/*
 * Sets *frame to the next edited frame, in input order, decoding it now; when the frame belongs to a
 * window (or whole stream) not edited yet, edits it first (the long work; progress through the callback).
 * Errors: TF_EAGAIN (no frame until more frames are sent or the end of the stream is signalled; after the
 *         end of the stream: every frame has been returned), TF_EPERM (an earlier call failed),
 *         TF_EINVAL (NULL ctx/frame), TF_ECANCELED, TF_ENOMEM, TF_EIO.
 */
TF_API int tf_get_frame(TFContext *ctx, const TFFrame **frame);

/* Message describing the last error on ctx (or, for ctx == NULL, the last failure on this thread of
 * a call that has no context: tf_settings_*, tf_open, or a call given a NULL ctx); "" if none. Owned by
 * the library. */
TF_API const char *tf_last_error(const TFContext *ctx);

/* Frees the context and sets *ctx to NULL. NULL and *ctx == NULL are ignored (so closing twice is safe). */
TF_API void tf_close(TFContext **ctx);

#ifdef __cplusplus
}
#endif

#endif /* TOKENFLOW_H */
