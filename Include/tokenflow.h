/*
 * tokenflow.h - the stable C API of libtokenflow (text-driven, temporally consistent video editing
 * with a frozen Stable Diffusion model, on the CPU).
 *
 * This header is the library's only public ABI. Only the symbols declared here are exported.
 *
 * Usage (every call returns TF_OK (0) or a negative TF_E* code; see tf_strerror and tf_last_error):
 *
 *     TFSettings s;
 *     tf_default_settings(&s);
 *     s.model_path = "/models/stable-diffusion-2-1-base";
 *     s.prompt = "a marble sculpture of a woman running";
 *     TFContext *ctx = NULL;
 *     if (tf_open(&ctx, &s) < 0) { ... ctx is NULL; tf_last_error(NULL) says why ... }
 *     for each frame: tf_send_frame(ctx, rgb, width, height, stride, pts);
 *     tf_run(ctx, progress_cb, opaque);          (blocks; the callback may cancel)
 *     TFFrame out;
 *     while (tf_get_frame(ctx, &out) == TF_OK) { ... out.data, out.pts ... }   (then TF_EAGAIN)
 *     tf_close(&ctx);
 *
 * Frames are packed RGB24 (3 bytes per pixel, R G B), rows `stride` bytes apart. Output frames have the
 * input's size, count and order, and carry the pts that was sent with each input frame.
 *
 * Threads: a context is used by one thread at a time (calls on one context must not overlap).
 * Several contexts may run in parallel on different threads. tf_default_settings, tf_strerror,
 * tf_version and tf_version_string may be called from any thread at any time.
 *
 * Models: the library keeps the most recently opened model loaded (shared, read-only, by every context
 * that uses it) until a different model is opened or the process exits, so reopening a context per
 * window does not reload gigabytes of weights. A model changed on disk is loaded again.
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
#define TOKENFLOW_VERSION_MINOR 1
#define TOKENFLOW_VERSION_PATCH 0
/* Single number for compile-time checks: (major << 16) | (minor << 8) | patch. */
#define TOKENFLOW_VERSION ((TOKENFLOW_VERSION_MAJOR << 16) | (TOKENFLOW_VERSION_MINOR << 8) | TOKENFLOW_VERSION_PATCH)

/* Runtime version of the loaded library, encoded like TOKENFLOW_VERSION. */
TF_API unsigned tf_version(void);
/* Runtime version as "major.minor.patch". Static string. */
TF_API const char *tf_version_string(void);

/* Error codes: negative errno values. */
#define TF_OK         0
#define TF_EPERM     (-1)   /* call not allowed in the context's state (send after run, get before run, run twice) */
#define TF_ENOENT    (-2)   /* model directory or one of its files is missing */
#define TF_EIO       (-5)   /* model files unreadable or corrupt */
#define TF_EAGAIN    (-11)  /* tf_get_frame: every edited frame has been returned */
#define TF_ENOMEM    (-12)  /* out of memory */
#define TF_EINVAL    (-22)  /* invalid argument: NULL pointer, bad setting, bad frame, struct_size too small */
#define TF_ENOTSUP   (-95)  /* unsupported: model configuration, or a TFSettings newer than this library */
#define TF_ECANCELED (-125) /* the progress callback asked to stop */

/* Short static description of an error code ("invalid argument", ...). Never NULL. */
TF_API const char *tf_strerror(int code);

typedef enum TFMethod {
    TF_METHOD_TOKENFLOW = 0,   /* TokenFlow with plug-and-play injection (default) */
    TF_METHOD_SDEDIT = 1,      /* TokenFlow propagation on an SDEdit schedule (uses strength) */
    TF_METHOD_RECONSTRUCT = 2  /* inversion then plain sampling: reproduces the input (a check) */
} TFMethod;

/*
 * Settings. Always initialise with tf_default_settings (it sets struct_size and every default), then
 * change fields. struct_size lets newer libraries accept structs from older callers.
 */
typedef struct TFSettings {
    size_t struct_size;            /* sizeof(TFSettings) of the caller; set by tf_default_settings */
    const char *model_path;        /* diffusers folder; NULL: $TOKENFLOW_MODEL, then the install's default model */
    const char *prompt;            /* edit prompt (UTF-8); NULL = "" */
    const char *negative_prompt;   /* default "ugly, blurry, low res, unrealistic, unaesthetic" */
    const char *inversion_prompt;  /* describes the source clip; NULL = "" */
    int method;                    /* a TFMethod; default TF_METHOD_TOKENFLOW */
    int steps;                     /* sampling steps, 1..1000; default 50 */
    int inversion_steps;           /* DDIM inversion steps, 1..1000, a multiple of steps; default 50 */
    float guidance_scale;          /* classifier-free guidance; default 7.5 */
    int batch_size;                /* frames per batch (one keyframe each), >= 1; default 8 */
    float pnp_attn_t;              /* fraction of steps with query/key injection, [0,1]; default 0.5 */
    float pnp_f_t;                 /* fraction of steps with feature injection, [0,1]; default 0.8 */
    float strength;                /* SDEdit: fraction of the schedule run, [0,1]; default 0.8 */
    uint64_t seed;                 /* keyframe choice; default 1 */
    int working_width;             /* processing size, multiples of 8; 0 x 0 = longer side working_longer_side; */
    int working_height;            /*   -1 x -1 = the input size rounded to a multiple of 8; default 0 x 0 */
    int working_longer_side;       /* used when working size is 0 x 0; default 512 */
    int threads;                   /* worker threads, 0 = one per core (process-wide setting); default 0 */
    const int32_t *keyframes;      /* optional explicit keyframes: steps x batches absolute frame indices, */
    size_t keyframes_count;        /*   row-major (step-major); NULL/0 = drawn with seed. Copied by tf_open. */
    uint8_t reserved[64];          /* must be zero */
} TFSettings;

/* Fills *settings with the defaults above and struct_size = sizeof(TFSettings). NULL is ignored. */
TF_API void tf_default_settings(TFSettings *settings);

typedef struct TFContext TFContext;

/*
 * Validates the settings and loads the model. On success *out is a new context; on failure *out is NULL
 * and tf_last_error(NULL) describes the problem (on this thread).
 * Errors: TF_EINVAL (NULL out/settings, struct_size too small, a setting out of range),
 *         TF_ENOTSUP (struct_size larger than this library knows, unsupported model config),
 *         TF_ENOENT (no model path given and none installed, missing model files), TF_EIO (corrupt files).
 */
TF_API int tf_open(TFContext **out, const TFSettings *settings);

/*
 * Queues one input frame (copied). All frames of a clip must have one size (>= 1x1);
 * stride >= 3 * width. pts is returned unchanged with the edited frame.
 * Errors: TF_EINVAL (NULL ctx/rgb, bad size or stride, size differs from earlier frames),
 *         TF_EPERM (called after tf_run).
 */
TF_API int tf_send_frame(TFContext *ctx, const uint8_t *rgb, int width, int height, ptrdiff_t stride, int64_t pts);

typedef enum TFStage {
    TF_STAGE_ENCODING = 0,  /* VAE encoding, per frame */
    TF_STAGE_INVERSION = 1, /* DDIM inversion, per UNet call */
    TF_STAGE_SAMPLING = 2,  /* editing, per UNet call */
    TF_STAGE_DECODING = 3   /* VAE decoding, per frame */
} TFStage;

/* Progress: called at least once per UNet call with the stage and the units done/total in that stage.
 * Return 0 to continue, non-zero to cancel (tf_run then returns TF_ECANCELED and no frame is output). */
typedef int (*TFProgressCallback)(void *opaque, int stage, int completed, int total);

/*
 * Edits every frame sent so far. Blocks until done. callback may be NULL.
 * Errors: TF_EINVAL (NULL ctx, no frames sent, keyframe schedule that does not fit the clip),
 *         TF_EPERM (run already called), TF_ECANCELED, TF_ENOMEM.
 * After an error the context can only be closed.
 */
TF_API int tf_run(TFContext *ctx, TFProgressCallback callback, void *opaque);

/* An edited frame. data is packed RGB24 owned by the context, valid until the next tf_get_frame or tf_close. */
typedef struct TFFrame {
    const uint8_t *data;
    int width;
    int height;
    ptrdiff_t stride;
    int64_t pts;
} TFFrame;

/*
 * Returns the next edited frame, in input order.
 * Errors: TF_EAGAIN (all frames returned), TF_EPERM (tf_run has not completed successfully),
 *         TF_EINVAL (NULL ctx/frame).
 */
TF_API int tf_get_frame(TFContext *ctx, TFFrame *frame);

/* Message describing the last error on ctx (or, for ctx == NULL, the last failure on this thread of
 * tf_open or of a call given a NULL ctx); "" if none. Owned by the library. */
TF_API const char *tf_last_error(const TFContext *ctx);

/* Frees the context and sets *ctx to NULL. NULL and *ctx == NULL are ignored (so closing twice is safe). */
TF_API void tf_close(TFContext **ctx);

#ifdef __cplusplus
}
#endif

#endif /* TOKENFLOW_H */
