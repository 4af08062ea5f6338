/*
 * TokenFlow video filter: text-driven, temporally consistent editing of a clip with a frozen
 * Stable Diffusion model, through libtokenflow (CPU).
 *
 * Part of the TokenFlow engine project; compiled into FFmpeg (5.1) by ffmpeg-filter/build, which
 * copies it to libavfilter/. Like the rest of libavfilter, this file may be used under the terms of
 * the GNU Lesser General Public License, version 2.1 or later.
 *
 * It only uses libtokenflow's public header, tokenflow.h.
 *
 * How it works: the filter consumes frames until its window (`window` frames, or the whole stream
 * with window=0) is full or the input ends, hands them to the engine (tf_send_frame, with each
 * frame's pts), runs the edit (tf_run; this blocks the filter graph, so progress is logged once per
 * sampling step), then emits the edited frames, one per activation, with the original pts and frame
 * properties, and finally forwards EOF. The engine context is opened in init, so bad options and
 * missing or corrupt models fail before any frame is decoded. A context edits one clip, so each
 * further window opens a new one (the library keeps the model loaded, so this does not reload it).
 */

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include <tokenflow.h>

#include "libavutil/avstring.h"
#include "libavutil/imgutils.h"
#include "libavutil/mem.h"
#include "libavutil/opt.h"
#include "libavutil/parseutils.h"
#include "libavutil/time.h"
#include "avfilter.h"
#include "filters.h"
#include "formats.h"
#include "internal.h"
#include "video.h"

#if TOKENFLOW_VERSION_MAJOR != 0
#error "vf_tokenflow.c is written against the libtokenflow 0.x API"
#endif

typedef struct TokenFlowContext {
    const AVClass *class;

    /* options */
    char *model;
    char *prompt;
    char *negative_prompt;
    char *inversion_prompt;
    int method;
    int steps;
    int inversion_steps;
    float guidance;
    float pnp_attn_t;
    float pnp_f_t;
    float strength;
    int batch_size;
    int window;
    char *size;
    int64_t seed;
    int threads;

    /* state */
    TFSettings settings;   ///< filled in init, reused to open one context per window
    TFContext *tf;         ///< context of the window being filled or emitted (NULL between windows)
    int w, h;              ///< frame size of the stream (from the input link)
    AVFrame **props;       ///< per sent frame: its properties (no data), in order
    int nb_props;
    int props_allocated;
    uint8_t *tmp;          ///< contiguous copy of a bottom-up frame
    int emitting;          ///< the window has been edited; its frames are being output
    int nb_emitted;
    int eof;               ///< the input has ended (status acknowledged)
    int status;
    int64_t status_pts;
    int64_t frames_in;     ///< frames consumed so far
    int64_t window_first;  ///< stream index of the window's first frame
    int window_index;
    int failed;            ///< an error was reported

    /* progress of the running window */
    int64_t run_start;
    int64_t stage_start;
    int64_t last_report;
    int stage;
    int last_step_logged;
} TokenFlowContext;

#define OFFSET(x) offsetof(TokenFlowContext, x)
#define VF AV_OPT_FLAG_VIDEO_PARAM | AV_OPT_FLAG_FILTERING_PARAM

static const AVOption tokenflow_options[] = {
    { "model", "diffusers Stable Diffusion folder (default: $TOKENFLOW_MODEL, then the model installed with libtokenflow)",
        OFFSET(model), AV_OPT_TYPE_STRING, { .str = NULL }, 0, 0, VF },
    { "prompt", "edit prompt: what the edited clip shows",
        OFFSET(prompt), AV_OPT_TYPE_STRING, { .str = NULL }, 0, 0, VF },
    { "negative_prompt", "negative prompt for classifier-free guidance (default: \"ugly, blurry, low res, unrealistic, unaesthetic\")",
        OFFSET(negative_prompt), AV_OPT_TYPE_STRING, { .str = NULL }, 0, 0, VF },
    { "inversion_prompt", "prompt describing the source clip, used for the DDIM inversion",
        OFFSET(inversion_prompt), AV_OPT_TYPE_STRING, { .str = NULL }, 0, 0, VF },
    { "method", "editing method",
        OFFSET(method), AV_OPT_TYPE_INT, { .i64 = TF_METHOD_TOKENFLOW }, TF_METHOD_TOKENFLOW, TF_METHOD_RECONSTRUCT, VF, "method" },
        { "tokenflow",   "TokenFlow with plug-and-play feature and attention injection",
            0, AV_OPT_TYPE_CONST, { .i64 = TF_METHOD_TOKENFLOW },   0, 0, VF, "method" },
        { "sdedit",      "TokenFlow propagation on an SDEdit schedule (uses strength)",
            0, AV_OPT_TYPE_CONST, { .i64 = TF_METHOD_SDEDIT },      0, 0, VF, "method" },
        { "reconstruct", "inversion then plain sampling: reproduces the input (a check)",
            0, AV_OPT_TYPE_CONST, { .i64 = TF_METHOD_RECONSTRUCT }, 0, 0, VF, "method" },
    { "steps", "sampling steps",
        OFFSET(steps), AV_OPT_TYPE_INT, { .i64 = 50 }, 1, 1000, VF },
    { "inversion_steps", "DDIM inversion steps (a multiple of steps)",
        OFFSET(inversion_steps), AV_OPT_TYPE_INT, { .i64 = 50 }, 1, 1000, VF },
    { "guidance", "classifier-free guidance scale",
        OFFSET(guidance), AV_OPT_TYPE_FLOAT, { .dbl = 7.5 }, 0, 100, VF },
    { "pnp_attn_t", "fraction of the sampling steps with self-attention query/key injection",
        OFFSET(pnp_attn_t), AV_OPT_TYPE_FLOAT, { .dbl = 0.5 }, 0, 1, VF },
    { "pnp_f_t", "fraction of the sampling steps with convolution feature injection",
        OFFSET(pnp_f_t), AV_OPT_TYPE_FLOAT, { .dbl = 0.8 }, 0, 1, VF },
    { "strength", "sdedit: fraction of the sampling schedule that is run",
        OFFSET(strength), AV_OPT_TYPE_FLOAT, { .dbl = 0.8 }, 0, 1, VF },
    { "batch_size", "frames per batch (each batch has one keyframe per step)",
        OFFSET(batch_size), AV_OPT_TYPE_INT, { .i64 = 8 }, 1, 4096, VF },
    { "window", "frames edited together per run (0 = the whole stream; memory grows with it)",
        OFFSET(window), AV_OPT_TYPE_INT, { .i64 = 0 }, 0, INT_MAX, VF },
    { "size", "working size: WxH (multiples of 8), \"input\" (input size rounded to a multiple of 8), a number (longer side), or empty (longer side 512)",
        OFFSET(size), AV_OPT_TYPE_STRING, { .str = NULL }, 0, 0, VF },
    { "seed", "seed of the keyframe choice",
        OFFSET(seed), AV_OPT_TYPE_INT64, { .i64 = 1 }, 0, INT64_MAX, VF },
    { "threads", "worker threads (0 = one per core; process-wide)",
        OFFSET(threads), AV_OPT_TYPE_INT, { .i64 = 0 }, 0, 1024, VF },
    { NULL }
};

AVFILTER_DEFINE_CLASS(tokenflow);

/*
 * Frames dropped by the last tokenflow instance closed before its input ended, in this process.
 * The ffmpeg CLI rebuilds a filter graph, without draining it, when its input's resolution or pixel
 * format changes: the frames the filter holds (up to a window) are lost and the new instance would go
 * on with the rest. The filter cannot fail the old graph from uninit, so the new instance refuses to
 * start instead (this filter is only linked into our ffmpeg/ffprobe executables, not into a player
 * that rebuilds graphs on seeks).
 */
static atomic_int dropped_in_process;

/* TF_E* are negative errno values; map them explicitly so the AVERROR codes stay right on every OS. */
static int tf_to_averror(int code)
{
    switch (code) {
    case TF_OK:        return 0;
    case TF_EPERM:     return AVERROR(EPERM);
    case TF_ENOENT:    return AVERROR(ENOENT);
    case TF_EIO:       return AVERROR(EIO);
    case TF_EAGAIN:    return AVERROR(EAGAIN);
    case TF_ENOMEM:    return AVERROR(ENOMEM);
    case TF_EINVAL:    return AVERROR(EINVAL);
    case TF_ENOTSUP:   return AVERROR(ENOTSUP);
    case TF_ECANCELED: return AVERROR(ECANCELED);
    default:           return AVERROR_EXTERNAL;
    }
}

static int report_tf_error(AVFilterContext *ctx, const char *what, int code, const char *message)
{
    TokenFlowContext *s = ctx->priv;
    s->failed = 1;
    av_log(ctx, AV_LOG_ERROR, "%s failed (%s): %s\n", what, tf_strerror(code),
           message && *message ? message : "no details");
    return tf_to_averror(code);
}

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

static int parse_size(AVFilterContext *ctx, TFSettings *settings)
{
    TokenFlowContext *s = ctx->priv;
    const char *size = s->size;
    int w, h;

    if (!size || !*size || !strcmp(size, "default"))
        return 0;  /* the library's default: longer side 512 */
    if (!strcmp(size, "input")) {
        settings->working_width = settings->working_height = -1;
        return 0;
    }
    if (strspn(size, "0123456789") == strlen(size)) {
        long side = strtol(size, NULL, 10);
        if (side < 8 || side > 16384) {
            av_log(ctx, AV_LOG_ERROR, "Invalid size '%s': the longer side must be 8..16384.\n", size);
            return AVERROR(EINVAL);
        }
        settings->working_longer_side = (int)side;
        return 0;
    }
    if (av_parse_video_size(&w, &h, size) < 0) {
        av_log(ctx, AV_LOG_ERROR, "Invalid size '%s': use WxH (multiples of 8), \"input\", "
               "a number (the longer side) or nothing (longer side 512).\n", size);
        return AVERROR(EINVAL);
    }
    settings->working_width = w;
    settings->working_height = h;
    return 0;
}

static int open_engine(AVFilterContext *ctx)
{
    TokenFlowContext *s = ctx->priv;
    int ret = tf_open(&s->tf, &s->settings);
    if (ret < 0) {
        s->tf = NULL;
        ret = report_tf_error(ctx, "Opening the TokenFlow engine", ret, tf_last_error(NULL));
        if (ret == AVERROR(ENOENT) && !s->settings.model_path)
            av_log(ctx, AV_LOG_ERROR, "Give the filter a model: tokenflow=model=/path/to/stable-diffusion-folder:..., "
                   "or set the TOKENFLOW_MODEL environment variable.\n");
        return ret;
    }
    return 0;
}

static av_cold int init(AVFilterContext *ctx)
{
    TokenFlowContext *s = ctx->priv;
    TFSettings *settings = &s->settings;
    unsigned version = tf_version();
    int ret;

    if ((version >> 16) != TOKENFLOW_VERSION_MAJOR ||
        (version >> 16 == 0 && ((version >> 8) & 0xff) < TOKENFLOW_VERSION_MINOR)) {
        av_log(ctx, AV_LOG_ERROR, "libtokenflow %s is loaded, but this filter was built for %d.%d.x.\n",
               tf_version_string(), TOKENFLOW_VERSION_MAJOR, TOKENFLOW_VERSION_MINOR);
        return AVERROR(ENOSYS);
    }

    if ((ret = atomic_load(&dropped_in_process)) > 0) {
        av_log(ctx, AV_LOG_ERROR, "The filter graph was rebuilt mid-stream and the previous tokenflow instance "
               "dropped %d unedited frame(s). ffmpeg rebuilds filter graphs when the input's resolution or "
               "pixel format changes; tokenflow edits windows of frames of one size. Pass -reinit_filter 0 "
               "before -i and put scale=W:H before tokenflow.\n", ret);
        return AVERROR(EINVAL);
    }

    tf_default_settings(settings);
    settings->model_path = nonempty(s->model);  /* NULL: $TOKENFLOW_MODEL, then the installed model */
    settings->prompt = s->prompt;
    if (s->negative_prompt)
        settings->negative_prompt = s->negative_prompt;
    settings->inversion_prompt = s->inversion_prompt;
    settings->method = s->method;
    settings->steps = s->steps;
    settings->inversion_steps = s->inversion_steps;
    settings->guidance_scale = s->guidance;
    settings->batch_size = s->batch_size;
    settings->pnp_attn_t = s->pnp_attn_t;
    settings->pnp_f_t = s->pnp_f_t;
    settings->strength = s->strength;
    settings->seed = (uint64_t)s->seed;
    /* `threads=N` in a filter string sets the generic AVFilterContext option, not ours. */
    settings->threads = s->threads > 0 ? s->threads : ctx->nb_threads > 0 ? ctx->nb_threads : 0;
    if ((ret = parse_size(ctx, settings)) < 0)
        return ret;

    av_log(ctx, AV_LOG_VERBOSE, "libtokenflow %s; model %s\n", tf_version_string(),
           settings->model_path ? settings->model_path : "(default: $TOKENFLOW_MODEL or the installed model)");

    /* Validates every setting and loads the model now, before any output is written. */
    return open_engine(ctx);
}

static int config_input(AVFilterLink *inlink)
{
    TokenFlowContext *s = inlink->dst->priv;
    s->w = inlink->w;
    s->h = inlink->h;
    return 0;
}

static void free_props(TokenFlowContext *s)
{
    for (int i = 0; i < s->nb_props; i++)
        av_frame_free(&s->props[i]);
    s->nb_props = 0;
}

static av_cold void uninit(AVFilterContext *ctx)
{
    TokenFlowContext *s = ctx->priv;
    int unprocessed = s->emitting ? s->nb_props - s->nb_emitted : s->nb_props;

    if (unprocessed > 0 && !s->failed)
        av_log(ctx, AV_LOG_WARNING, "%d frame(s) held by the filter were dropped: the filter graph was "
               "closed before they were output.\n", unprocessed);
    if (unprocessed > 0 && !s->failed && !s->eof)
        atomic_store(&dropped_in_process, unprocessed);
    tf_close(&s->tf);
    free_props(s);
    av_freep(&s->props);
    av_freep(&s->tmp);
}

static const char *stage_name(int stage)
{
    switch (stage) {
    case TF_STAGE_ENCODING:  return "encoding";
    case TF_STAGE_INVERSION: return "inversion";
    case TF_STAGE_SAMPLING:  return "sampling";
    case TF_STAGE_DECODING:  return "decoding";
    default:                 return "working";
    }
}

/* Steps of a stage whose units are UNet calls, for "step k/n" lines; 0 if it has no steps. */
static int stage_steps(const TokenFlowContext *s, int stage)
{
    if (stage == TF_STAGE_INVERSION)
        return s->inversion_steps;
    if (stage != TF_STAGE_SAMPLING)
        return 0;
    switch (s->method) {
    case TF_METHOD_RECONSTRUCT: return s->inversion_steps;
    case TF_METHOD_SDEDIT: {
        int n = (int)((float)s->steps * s->strength);
        return n < s->steps ? n : s->steps;
    }
    default: return s->steps;
    }
}

/* Called by tf_run at least once per UNet call: logs one line per inversion/sampling step (ffmpeg's
 * own status line is frozen while the engine runs) and per encoding/decoding pass over the frames. */
static int progress_callback(void *opaque, int stage, int completed, int total)
{
    AVFilterContext *ctx = opaque;
    TokenFlowContext *s = ctx->priv;
    int64_t now = av_gettime_relative();
    int steps = stage_steps(s, stage), step = 0, log_now;
    double stage_elapsed, eta;

    if (stage != s->stage) {
        s->stage = stage;
        s->stage_start = s->last_report;
        s->last_step_logged = 0;
    }
    s->last_report = now;
    if (total <= 0 || completed <= 0)
        return 0;

    if (steps > 0 && total % steps == 0) {
        int per_step = total / steps;
        log_now = completed % per_step == 0;
        step = completed / per_step;
    } else if (steps > 0) {
        step = (int)((int64_t)completed * steps / total);
        log_now = step > s->last_step_logged || completed == total;
    } else {
        log_now = completed == total;
    }
    if (!log_now)
        return 0;
    s->last_step_logged = step;

    stage_elapsed = (now - s->stage_start) / 1e6;
    eta = stage_elapsed / completed * (total - completed);
    if (steps > 0)
        av_log(ctx, AV_LOG_INFO, "window %d: %s step %d/%d (%d/%d UNet calls), %.1f s elapsed, stage ETA %.1f s\n",
               s->window_index, stage_name(stage), step, steps, completed, total,
               (now - s->run_start) / 1e6, eta);
    else
        av_log(ctx, AV_LOG_INFO, "window %d: %s %d/%d frames done, %.1f s elapsed\n",
               s->window_index, stage_name(stage), completed, total, (now - s->run_start) / 1e6);
    return 0;  /* never cancel */
}

static int run_window(AVFilterContext *ctx)
{
    TokenFlowContext *s = ctx->priv;
    int ret;

    s->window_index++;
    s->run_start = s->stage_start = s->last_report = av_gettime_relative();
    s->stage = -1;
    av_log(ctx, AV_LOG_INFO, "window %d: editing frames %"PRId64"-%"PRId64" (%dx%d); the filter graph "
           "waits until this is done\n", s->window_index, s->window_first,
           s->window_first + s->nb_props - 1, s->w, s->h);

    ret = tf_run(s->tf, progress_callback, ctx);
    if (ret < 0)
        return report_tf_error(ctx, "Editing", ret, tf_last_error(s->tf));

    av_log(ctx, AV_LOG_INFO, "window %d: %d frames edited in %.1f s\n", s->window_index, s->nb_props,
           (av_gettime_relative() - s->run_start) / 1e6);
    s->emitting = 1;
    s->nb_emitted = 0;
    return 0;
}

static int send_frame(AVFilterContext *ctx, AVFrame *in)
{
    TokenFlowContext *s = ctx->priv;
    const uint8_t *data = in->data[0];
    ptrdiff_t stride = in->linesize[0];
    AVFrame *props;
    int ret;

    if (in->width != s->w || in->height != s->h) {
        s->failed = 1;
        av_log(ctx, AV_LOG_ERROR, "The input resolution changed mid-stream, from %dx%d to %dx%d at frame %"PRId64
               ": tokenflow edits frames of one size. Scale the input to a fixed size before it "
               "(e.g. scale=%d:%d,tokenflow=...; with the ffmpeg CLI also pass -reinit_filter 0 before -i).\n",
               s->w, s->h, in->width, in->height, s->frames_in, s->w, s->h);
        return AVERROR(EINVAL);
    }
    if (!s->tf && (ret = open_engine(ctx)) < 0)
        return ret;
    if (s->nb_props == 0)
        s->window_first = s->frames_in;

    if (stride < 0) {  /* bottom-up frame: the engine wants rows top-down with a positive stride */
        int row = 3 * s->w;
        if (!s->tmp && !(s->tmp = av_malloc((size_t)row * s->h)))
            return AVERROR(ENOMEM);
        av_image_copy_plane(s->tmp, row, data, (int)stride, row, s->h);
        data = s->tmp;
        stride = row;
    }
    ret = tf_send_frame(s->tf, data, s->w, s->h, stride, in->pts);
    if (ret < 0)
        return report_tf_error(ctx, "Sending a frame", ret, tf_last_error(s->tf));

    /* Keep only the frame's properties (pts, duration, side data, ...) to put on the edited frame. */
    if (s->nb_props == s->props_allocated) {
        int n = s->props_allocated ? 2 * s->props_allocated : 16;
        AVFrame **grown = av_realloc_array(s->props, n, sizeof(*s->props));
        if (!grown)
            return AVERROR(ENOMEM);
        s->props = grown;
        s->props_allocated = n;
    }
    if (!(props = av_frame_alloc()))
        return AVERROR(ENOMEM);
    if ((ret = av_frame_copy_props(props, in)) < 0) {
        av_frame_free(&props);
        return ret;
    }
    s->props[s->nb_props++] = props;
    s->frames_in++;
    return 0;
}

/* Outputs the next edited frame; at the end of the window, closes its context. */
static int emit_frame(AVFilterContext *ctx)
{
    TokenFlowContext *s = ctx->priv;
    AVFilterLink *outlink = ctx->outputs[0];
    TFFrame edited;
    AVFrame *out;
    int ret;

    if (s->nb_emitted < s->nb_props) {
        ret = tf_get_frame(s->tf, &edited);
        if (ret < 0)
            return report_tf_error(ctx, "Getting an edited frame", ret, tf_last_error(s->tf));
        if (edited.width != s->w || edited.height != s->h || edited.stride < 3 * edited.width) {
            av_log(ctx, AV_LOG_ERROR, "The engine returned a %dx%d frame (stride %td) for a %dx%d stream.\n",
                   edited.width, edited.height, edited.stride, s->w, s->h);
            s->failed = 1;
            return AVERROR_BUG;
        }
        out = ff_get_video_buffer(outlink, s->w, s->h);
        if (!out)
            return AVERROR(ENOMEM);
        ret = av_frame_copy_props(out, s->props[s->nb_emitted]);
        if (ret < 0) {
            av_frame_free(&out);
            return ret;
        }
        av_image_copy_plane(out->data[0], out->linesize[0], edited.data, (int)edited.stride, 3 * s->w, s->h);
        out->pts = edited.pts;
        av_frame_free(&s->props[s->nb_emitted]);
        s->nb_emitted++;
        ret = ff_filter_frame(outlink, out);
        if (ret < 0)
            return ret;
    }
    if (s->nb_emitted == s->nb_props) {
        tf_close(&s->tf);
        free_props(s);
        s->emitting = 0;
        s->nb_emitted = 0;
    }
    ff_filter_set_ready(ctx, 100);
    return 0;
}

static int activate(AVFilterContext *ctx)
{
    AVFilterLink *inlink = ctx->inputs[0];
    AVFilterLink *outlink = ctx->outputs[0];
    TokenFlowContext *s = ctx->priv;
    AVFrame *frame;
    int ret, status;
    int64_t pts;

    FF_FILTER_FORWARD_STATUS_BACK(outlink, inlink);

    if (s->emitting)
        return emit_frame(ctx);

    if (!s->eof) {
        while (!s->window || s->nb_props < s->window) {
            ret = ff_inlink_consume_frame(inlink, &frame);
            if (ret < 0)
                return ret;
            if (ret == 0)
                break;
            ret = send_frame(ctx, frame);
            av_frame_free(&frame);
            if (ret < 0)
                return ret;
        }
        if (s->window && s->nb_props >= s->window) {
            if ((ret = run_window(ctx)) < 0)
                return ret;
            ff_filter_set_ready(ctx, 100);
            return 0;
        }
        if (ff_inlink_acknowledge_status(inlink, &status, &pts)) {
            /* EOF (or an upstream error): edit the last, possibly partial, window, then forward it. */
            s->eof = 1;
            s->status = status;
            s->status_pts = pts;
            if (s->nb_props > 0) {
                if ((ret = run_window(ctx)) < 0)
                    return ret;
                ff_filter_set_ready(ctx, 100);
                return 0;
            }
        }
    }

    if (s->eof) {
        ff_outlink_set_status(outlink, s->status, s->status_pts);
        return 0;
    }

    FF_FILTER_FORWARD_WANTED(outlink, inlink);
    return FFERROR_NOT_READY;
}

static const AVFilterPad tokenflow_inputs[] = {
    {
        .name         = "default",
        .type         = AVMEDIA_TYPE_VIDEO,
        .config_props = config_input,
    },
};

static const AVFilterPad tokenflow_outputs[] = {
    {
        .name = "default",
        .type = AVMEDIA_TYPE_VIDEO,
    },
};

const AVFilter ff_vf_tokenflow = {
    .name          = "tokenflow",
    .description   = NULL_IF_CONFIG_SMALL("Edit a video from a text prompt with TokenFlow (frozen Stable Diffusion, CPU)."),
    .priv_size     = sizeof(TokenFlowContext),
    .priv_class    = &tokenflow_class,
    .init          = init,
    .uninit        = uninit,
    .activate      = activate,
    FILTER_INPUTS(tokenflow_inputs),
    FILTER_OUTPUTS(tokenflow_outputs),
    FILTER_SINGLE_PIXFMT(AV_PIX_FMT_RGB24),
};
