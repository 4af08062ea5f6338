/*
 * gsttokenflow.c - GStreamer 1.x element "tokenflow": text-driven, temporally consistent video editing
 * (TokenFlow on a frozen Stable Diffusion model, CPU only) through libtokenflow's C API (tokenflow.h).
 *
 *   gst-launch-1.0 -e filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
 *       ! tokenflow model=/models/sd-2-1-base prompt="a marble sculpture" window=16 \
 *       ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4
 *
 * Data flow: every input frame is copied into the engine as soon as it arrives (tf_send_frame) and the
 * upstream buffer is released at once, so decoders with bounded pools never starve. When `window`
 * frames are queued (or at EOS, or before a caps change) the engine edits them (tf_run, on the streaming
 * thread) and the edited frames are pushed with the original timestamps, durations, offsets and flags.
 * Serialized events that arrive while frames are queued are kept in order with the frames.
 *
 * A libtokenflow context edits one clip: it is opened at READY->PAUSED (so a bad model or bad settings
 * fail the state change, not the stream), closed after each window and reopened for the next one.
 *
 * Threads and locks: the streaming thread owns the context, the queue and the negotiated video info (all
 * touched only with the sink pad's stream lock held, or while the pads are inactive). Properties are
 * read under the object lock and copied into a settings snapshot at READY->PAUSED. A run is cancelled
 * through the progress callback's return value when `stopping` (set in change_state before chaining up,
 * which deactivates the pads and therefore waits for the streaming thread) or `flushing` (FLUSH_START)
 * is set.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>

#include <gst/gst.h>
#include <gst/video/video.h>

#include <tokenflow.h>

#define GST_TOKENFLOW_STR_(x) #x
#define GST_TOKENFLOW_STR(x) GST_TOKENFLOW_STR_ (x)
#define GST_TOKENFLOW_PLUGIN_VERSION GST_TOKENFLOW_STR (TOKENFLOW_VERSION_MAJOR) "." \
    GST_TOKENFLOW_STR (TOKENFLOW_VERSION_MINOR) "." GST_TOKENFLOW_STR (TOKENFLOW_VERSION_PATCH)

GST_DEBUG_CATEGORY_STATIC (gst_token_flow_debug);
#define GST_CAT_DEFAULT gst_token_flow_debug

/* ------------------------------------------------------------------------------------------------ */
/* Method enum                                                                                      */

#define GST_TYPE_TOKEN_FLOW_METHOD (gst_token_flow_method_get_type ())
static GType
gst_token_flow_method_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {TF_METHOD_TOKENFLOW, "TokenFlow with plug-and-play feature/attention injection", "tokenflow"},
    {TF_METHOD_SDEDIT, "TokenFlow propagation on an SDEdit schedule (uses strength)", "sdedit"},
    {TF_METHOD_RECONSTRUCT, "Inversion then plain sampling: reproduces the input (a check)",
        "reconstruct"},
    {0, NULL, NULL}
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstTokenFlowMethod", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

/* ------------------------------------------------------------------------------------------------ */
/* Instance                                                                                         */

#define GST_TYPE_TOKEN_FLOW (gst_token_flow_get_type ())
G_DECLARE_FINAL_TYPE (GstTokenFlow, gst_token_flow, GST, TOKEN_FLOW, GstElement)

/* One entry of the output queue, in arrival order: either an input frame's metadata or a serialized
 * event that arrived between frames (pushed at the same position in the output). */
typedef struct
{
  GstEvent *event;              /* non-NULL: an event; else the fields below describe a frame */
  GstClockTime pts, dts, duration;
  guint64 offset, offset_end;
  GstBufferFlags flags;
} GstTokenFlowItem;

struct _GstTokenFlow
{
  GstElement parent;
  GstPad *sinkpad, *srcpad;

  /* Properties (object lock). */
  gchar *model, *prompt, *negative_prompt, *inversion_prompt, *size;
  gint method, steps, inversion_steps, batch_size, threads;
  gfloat guidance, pnp_attn_t, pnp_f_t, strength;
  guint window;
  guint64 seed;

  /* Settings snapshot taken at READY->PAUSED, used for every context until PAUSED->READY. */
  TFSettings settings;
  gchar *snap_model, *snap_prompt, *snap_negative_prompt, *snap_inversion_prompt;
  guint snap_window;

  /* Streaming state (sink stream lock, or pads inactive). */
  TFContext *ctx;
  GstVideoInfo info;
  gboolean have_info;
  GQueue items;                 /* of GstTokenFlowItem* */
  guint pending_frames;         /* frames sent to ctx and not yet edited */
  guint64 window_index;         /* windows started since READY->PAUSED */

  gint fps_n, fps_d;             /* negotiated frame rate (object lock), for the latency query */

  /* Last refused caps we explained on the bus (object lock), so a retrying upstream is not spammed. */
  gchar *last_refusal;

  gint stopping;                /* atomic: PAUSED->READY in progress (cancels a run) */
  gint flushing;                /* atomic: between FLUSH_START and FLUSH_STOP (cancels a run) */
};

G_DEFINE_TYPE (GstTokenFlow, gst_token_flow, GST_TYPE_ELEMENT);

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_PROMPT,
  PROP_NEGATIVE_PROMPT,
  PROP_INVERSION_PROMPT,
  PROP_METHOD,
  PROP_STEPS,
  PROP_INVERSION_STEPS,
  PROP_GUIDANCE,
  PROP_PNP_ATTN_T,
  PROP_PNP_F_T,
  PROP_STRENGTH,
  PROP_BATCH_SIZE,
  PROP_WINDOW,
  PROP_SIZE,
  PROP_SEED,
  PROP_THREADS
};

#define DEFAULT_WINDOW 0
#define DEFAULT_SIZE ""
#define MAX_STEPS 1000
#define MAX_BATCH_SIZE 4096
#define MAX_THREADS 1024
#define MAX_GUIDANCE 100.0f

/* Library defaults, read once in class_init (so the element always documents what the library does). */
static TFSettings gst_token_flow_defaults;

#define TOKENFLOW_CAPS GST_VIDEO_CAPS_MAKE ("RGB")

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (TOKENFLOW_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (TOKENFLOW_CAPS));

static gboolean
is_cancelled (GstTokenFlow * self)
{
  return g_atomic_int_get (&self->stopping) || g_atomic_int_get (&self->flushing);
}

static void
item_free (gpointer data)
{
  GstTokenFlowItem *item = data;
  if (item->event)
    gst_event_unref (item->event);
  g_free (item);
}

/* Drops the queue and the context (the next frame reopens one). Stream lock held or pads inactive. */
static void
gst_token_flow_reset_stream (GstTokenFlow * self)
{
  g_queue_clear_full (&self->items, item_free);
  self->pending_frames = 0;
  tf_close (&self->ctx);
}

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                           */

/* Posts an ERROR message for a libtokenflow failure; text and debug are taken (freed by GStreamer). */
static void
post_library_error (GstTokenFlow * self, int code, gchar * text, gchar * debug,
    const gchar * function, gint line)
{
  GQuark domain;
  gint error;

  switch (code) {
    case TF_ENOENT:
      domain = GST_RESOURCE_ERROR;
      error = GST_RESOURCE_ERROR_NOT_FOUND;
      break;
    case TF_EIO:
      domain = GST_RESOURCE_ERROR;
      error = GST_RESOURCE_ERROR_READ;
      break;
    case TF_EINVAL:
    case TF_ENOTSUP:
      domain = GST_LIBRARY_ERROR;
      error = GST_LIBRARY_ERROR_SETTINGS;
      break;
    case TF_ENOMEM:
      domain = GST_RESOURCE_ERROR;
      error = GST_RESOURCE_ERROR_NO_SPACE_LEFT;
      break;
    default:
      domain = GST_LIBRARY_ERROR;
      error = GST_LIBRARY_ERROR_FAILED;
      break;
  }
  GST_ERROR_OBJECT (self, "%s", text);
  gst_element_message_full (GST_ELEMENT (self), GST_MESSAGE_ERROR, domain, error, text, debug,
      __FILE__, function, line);
}

/* ------------------------------------------------------------------------------------------------ */
/* Settings                                                                                         */

/* Parses the size property into the working size fields (as the FFmpeg filter does): "" or "default"
 * = the default longer side; "input"; "WxH"; "N" = longer side N. */
static gboolean
parse_size (const gchar * size, TFSettings * s)
{
  gint w, h;
  gchar *end = NULL;
  guint64 n;

  if (size == NULL || size[0] == '\0' || g_ascii_strcasecmp (size, "default") == 0) {
    s->working_width = s->working_height = 0;
    return TRUE;
  }
  if (g_ascii_strcasecmp (size, "input") == 0) {
    s->working_width = s->working_height = -1;
    return TRUE;
  }
  if (strchr (size, 'x') != NULL || strchr (size, 'X') != NULL) {
    gchar tail;
    if (sscanf (size, "%d%*[xX]%d%c", &w, &h, &tail) != 2 || w <= 0 || h <= 0)
      return FALSE;
    s->working_width = w;
    s->working_height = h;
    return TRUE;
  }
  n = g_ascii_strtoull (size, &end, 10);
  if (end == size || *end != '\0' || n == 0 || n > G_MAXINT)
    return FALSE;
  s->working_width = s->working_height = 0;
  s->working_longer_side = (int) n;
  return TRUE;
}

static void
clear_snapshot (GstTokenFlow * self)
{
  g_clear_pointer (&self->snap_model, g_free);
  g_clear_pointer (&self->snap_prompt, g_free);
  g_clear_pointer (&self->snap_negative_prompt, g_free);
  g_clear_pointer (&self->snap_inversion_prompt, g_free);
}

/* Copies the properties into self->settings (strings owned by self->snap_*). */
static gboolean
take_settings_snapshot (GstTokenFlow * self)
{
  TFSettings *s = &self->settings;
  gchar *size;
  gboolean ok;

  clear_snapshot (self);
  tf_default_settings (s);

  GST_OBJECT_LOCK (self);
  self->snap_model = (self->model && self->model[0]) ? g_strdup (self->model) : NULL;
  self->snap_prompt = g_strdup (self->prompt ? self->prompt : "");
  self->snap_negative_prompt = self->negative_prompt ? g_strdup (self->negative_prompt) : NULL;
  self->snap_inversion_prompt = g_strdup (self->inversion_prompt ? self->inversion_prompt : "");
  s->method = self->method;
  s->steps = self->steps;
  s->inversion_steps = self->inversion_steps;
  s->guidance_scale = self->guidance;
  s->batch_size = self->batch_size;
  s->pnp_attn_t = self->pnp_attn_t;
  s->pnp_f_t = self->pnp_f_t;
  s->strength = self->strength;
  s->seed = self->seed;
  s->threads = self->threads;
  self->snap_window = self->window;
  size = g_strdup (self->size);
  GST_OBJECT_UNLOCK (self);

  s->model_path = self->snap_model;
  s->prompt = self->snap_prompt;
  if (self->snap_negative_prompt)
    s->negative_prompt = self->snap_negative_prompt;    /* else keep the library's default */
  s->inversion_prompt = self->snap_inversion_prompt;

  ok = parse_size (size, s);
  if (!ok) {
    GST_ELEMENT_ERROR (self, LIBRARY, SETTINGS,
        ("Invalid size \"%s\": expected \"WxH\" (multiples of 8), \"input\", a longer side "
            "such as \"512\", or \"\" for the default", size), (NULL));
  }
  g_free (size);
  return ok;
}

/* Opens a context with the snapshot settings. On failure posts an error naming the problem. */
static gboolean
gst_token_flow_open (GstTokenFlow * self)
{
  TFContext *ctx = NULL;
  gint64 start = g_get_monotonic_time ();
  int r;

  g_assert (self->ctx == NULL);
  r = tf_open (&ctx, &self->settings);
  if (r < 0) {
    /* tf_last_error(NULL) is per thread: read it right away on this thread. */
    const char *why = tf_last_error (NULL);
    const gchar *model = self->settings.model_path;
    post_library_error (self, r,
        g_strdup_printf ("Could not open the TokenFlow engine (model %s%s%s): %s",
            model ? "\"" : "", model ? model : "from $TOKENFLOW_MODEL or the installed default",
            model ? "\"" : "", (why && why[0]) ? why : tf_strerror (r)),
        g_strdup_printf ("tf_open returned %d (%s)", r, tf_strerror (r)), GST_FUNCTION, __LINE__);
    return FALSE;
  }
  GST_INFO_OBJECT (self, "engine context opened in %.3f s",
      (g_get_monotonic_time () - start) / 1e6);
  self->ctx = ctx;
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Editing                                                                                          */

static const gchar *
stage_name (int stage)
{
  switch (stage) {
    case TF_STAGE_ENCODING:
      return "encoding";
    case TF_STAGE_INVERSION:
      return "inversion";
    case TF_STAGE_SAMPLING:
      return "sampling";
    case TF_STAGE_DECODING:
      return "decoding";
    default:
      return "unknown";
  }
}

/* Progress from tf_run (on the thread that runs it): an element message and a log line; returning
 * non-zero cancels the run. */
static int
progress_cb (void *opaque, int stage, int completed, int total)
{
  GstTokenFlow *self = opaque;
  GstStructure *s;

  GST_INFO_OBJECT (self, "window %" G_GUINT64_FORMAT ": %s %d/%d", self->window_index,
      stage_name (stage), completed, total);
  s = gst_structure_new ("tokenflow-progress",
      "stage", G_TYPE_STRING, stage_name (stage),
      "completed", G_TYPE_INT, completed,
      "total", G_TYPE_INT, total,
      "window", G_TYPE_UINT64, self->window_index,
      "frames", G_TYPE_UINT, self->pending_frames, NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
  return is_cancelled (self) ? 1 : 0;
}

static GstBuffer *
make_output_buffer (GstTokenFlow * self, const TFFrame * frame, const GstTokenFlowItem * item)
{
  GstBuffer *out;
  GstVideoFrame vframe;
  guint8 *dst;
  gint dst_stride, y, row_bytes, pad;

  out = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&self->info), NULL);
  if (out == NULL)
    return NULL;
  if (!gst_video_frame_map (&vframe, &self->info, out, GST_MAP_WRITE)) {
    gst_buffer_unref (out);
    return NULL;
  }
  dst = GST_VIDEO_FRAME_PLANE_DATA (&vframe, 0);
  dst_stride = GST_VIDEO_FRAME_PLANE_STRIDE (&vframe, 0);
  row_bytes = frame->width * 3;
  pad = dst_stride - row_bytes;
  for (y = 0; y < frame->height; y++) {
    memcpy (dst + (gsize) y * dst_stride, frame->data + (gsize) y * frame->stride, row_bytes);
    if (pad > 0)
      memset (dst + (gsize) y * dst_stride + row_bytes, 0, pad);
  }
  gst_video_frame_unmap (&vframe);

  GST_BUFFER_PTS (out) = item->pts;
  GST_BUFFER_DTS (out) = item->dts;
  GST_BUFFER_DURATION (out) = item->duration;
  GST_BUFFER_OFFSET (out) = item->offset;
  GST_BUFFER_OFFSET_END (out) = item->offset_end;
  GST_BUFFER_FLAGS (out) = item->flags;
  return out;
}

/* Pushes queued events that follow the last frame (or all of them when no frame is queued). */
static void
push_queued_events (GstTokenFlow * self)
{
  GstTokenFlowItem *item;
  while ((item = g_queue_pop_head (&self->items)) != NULL) {
    g_assert (item->event != NULL);
    gst_pad_push_event (self->srcpad, item->event);
    item->event = NULL;
    item_free (item);
  }
}

/* Edits the queued frames and pushes them (with the events queued between them). Runs on the
 * streaming thread with the sink stream lock held and no other lock. */
static GstFlowReturn
gst_token_flow_drain (GstTokenFlow * self)
{
  GstFlowReturn ret = GST_FLOW_OK;
  GstTokenFlowItem *item;
  gint64 start;
  guint frames = self->pending_frames, pushed = 0;
  int r;

  if (frames == 0) {
    push_queued_events (self);
    return GST_FLOW_OK;
  }
  if (is_cancelled (self)) {
    gst_token_flow_reset_stream (self);
    return GST_FLOW_FLUSHING;
  }

  GST_INFO_OBJECT (self, "editing window %" G_GUINT64_FORMAT " (%u frames, %dx%d)",
      self->window_index, frames, GST_VIDEO_INFO_WIDTH (&self->info),
      GST_VIDEO_INFO_HEIGHT (&self->info));
  start = g_get_monotonic_time ();
  r = tf_run (self->ctx, progress_cb, self);
  if (r < 0) {
    if (r == TF_ECANCELED && is_cancelled (self)) {
      GST_INFO_OBJECT (self, "window %" G_GUINT64_FORMAT " cancelled after %.3f s",
          self->window_index, (g_get_monotonic_time () - start) / 1e6);
      ret = GST_FLOW_FLUSHING;
    } else {
      const char *why = tf_last_error (self->ctx);
      post_library_error (self, r,
          g_strdup_printf ("TokenFlow could not edit %u frames: %s", frames,
              (why && why[0]) ? why : tf_strerror (r)),
          g_strdup_printf ("tf_run returned %d (%s)", r, tf_strerror (r)), GST_FUNCTION, __LINE__);
      ret = GST_FLOW_ERROR;
    }
    self->window_index++;
    gst_token_flow_reset_stream (self);
    return ret;
  }
  GST_INFO_OBJECT (self, "window %" G_GUINT64_FORMAT " edited in %.3f s", self->window_index,
      (g_get_monotonic_time () - start) / 1e6);
  self->window_index++;

  while ((item = g_queue_pop_head (&self->items)) != NULL) {
    if (item->event) {
      if (ret == GST_FLOW_OK)
        gst_pad_push_event (self->srcpad, item->event);
      else
        gst_event_unref (item->event);
      item->event = NULL;
    } else if (ret == GST_FLOW_OK) {
      TFFrame frame;
      GstBuffer *out;

      r = tf_get_frame (self->ctx, &frame);
      if (r < 0 || frame.width != GST_VIDEO_INFO_WIDTH (&self->info)
          || frame.height != GST_VIDEO_INFO_HEIGHT (&self->info)) {
        post_library_error (self, r < 0 ? r : TF_EINVAL,
            g_strdup_printf ("TokenFlow returned %u of %u edited frames: %s", pushed, frames,
                r < 0 ? tf_last_error (self->ctx) : "wrong frame size"),
            g_strdup_printf ("tf_get_frame returned %d (%s)", r, tf_strerror (r)),
            GST_FUNCTION, __LINE__);
        ret = GST_FLOW_ERROR;
      } else {
        if (frame.pts != (int64_t) item->pts)
          GST_WARNING_OBJECT (self, "engine returned pts %" G_GINT64_FORMAT ", expected %"
              GST_TIME_FORMAT, (gint64) frame.pts, GST_TIME_ARGS (item->pts));
        out = make_output_buffer (self, &frame, item);
        if (out == NULL) {
          GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
              ("Could not allocate an output frame"), (NULL));
          ret = GST_FLOW_ERROR;
        } else {
          ret = gst_pad_push (self->srcpad, out);
          pushed++;
          if (ret != GST_FLOW_OK)
            GST_INFO_OBJECT (self, "downstream returned %s after %u of %u frames",
                gst_flow_get_name (ret), pushed, frames);
        }
      }
    }
    item_free (item);
  }
  self->pending_frames = 0;
  tf_close (&self->ctx);        /* one context per clip; the next frame opens a new one */
  return ret;
}

static GstFlowReturn
gst_token_flow_chain (GstPad * pad, GstObject * parent, GstBuffer * buf)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);
  GstTokenFlowItem *item;
  GstVideoFrame vframe;
  int r;

  if (!self->have_info) {
    gst_buffer_unref (buf);
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("No caps before the first frame"),
        ("tokenflow needs %s", TOKENFLOW_CAPS));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  if (is_cancelled (self)) {
    gst_buffer_unref (buf);
    return GST_FLOW_FLUSHING;
  }
  if (self->ctx == NULL && !gst_token_flow_open (self)) {
    gst_buffer_unref (buf);
    return GST_FLOW_ERROR;
  }

  if (!gst_video_frame_map (&vframe, &self->info, buf, GST_MAP_READ)) {
    gst_buffer_unref (buf);
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("Could not map an input frame"),
        ("buffer of %" G_GSIZE_FORMAT " bytes for %dx%d RGB", gst_buffer_get_size (buf),
            GST_VIDEO_INFO_WIDTH (&self->info), GST_VIDEO_INFO_HEIGHT (&self->info)));
    return GST_FLOW_ERROR;
  }
  r = tf_send_frame (self->ctx, GST_VIDEO_FRAME_PLANE_DATA (&vframe, 0),
      GST_VIDEO_FRAME_WIDTH (&vframe), GST_VIDEO_FRAME_HEIGHT (&vframe),
      GST_VIDEO_FRAME_PLANE_STRIDE (&vframe, 0), (int64_t) GST_BUFFER_PTS (buf));
  gst_video_frame_unmap (&vframe);
  if (r < 0) {
    post_library_error (self, r,
        g_strdup_printf ("TokenFlow refused a frame: %s", tf_last_error (self->ctx)),
        g_strdup_printf ("tf_send_frame returned %d (%s)", r, tf_strerror (r)),
        GST_FUNCTION, __LINE__);
    gst_buffer_unref (buf);
    return GST_FLOW_ERROR;
  }

  item = g_new0 (GstTokenFlowItem, 1);
  item->pts = GST_BUFFER_PTS (buf);
  item->dts = GST_BUFFER_DTS (buf);
  item->duration = GST_BUFFER_DURATION (buf);
  item->offset = GST_BUFFER_OFFSET (buf);
  item->offset_end = GST_BUFFER_OFFSET_END (buf);
  item->flags = GST_BUFFER_FLAGS (buf) & ~GST_BUFFER_FLAG_TAG_MEMORY;
  g_queue_push_tail (&self->items, item);
  self->pending_frames++;
  gst_buffer_unref (buf);       /* the engine has its copy: give the buffer back to upstream now */

  GST_LOG_OBJECT (self, "queued frame %u, pts %" GST_TIME_FORMAT, self->pending_frames,
      GST_TIME_ARGS (item->pts));
  if (self->snap_window > 0 && self->pending_frames >= self->snap_window)
    return gst_token_flow_drain (self);
  return GST_FLOW_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* Caps                                                                                             */

/* Explains on the bus (once per caps) why caps are refused. */
static void
explain_refused_caps (GstTokenFlow * self, GstCaps * caps, const gchar * how)
{
  GstStructure *st;
  GstCapsFeatures *features;
  const gchar *format = NULL;
  gchar *caps_str, *what;
  gboolean repeated;

  if (caps == NULL || gst_caps_is_empty (caps) || gst_caps_is_any (caps))
    return;
  caps_str = gst_caps_to_string (caps);
  GST_OBJECT_LOCK (self);
  repeated = g_strcmp0 (self->last_refusal, caps_str) == 0;
  if (!repeated) {
    g_free (self->last_refusal);
    self->last_refusal = g_strdup (caps_str);
  }
  GST_OBJECT_UNLOCK (self);
  if (repeated) {
    g_free (caps_str);
    return;
  }

  st = gst_caps_get_structure (caps, 0);
  features = gst_caps_get_features (caps, 0);
  if (gst_structure_has_name (st, "video/x-raw"))
    format = gst_structure_get_string (st, "format");
  if (!gst_structure_has_name (st, "video/x-raw"))
    what = g_strdup_printf ("%s", gst_structure_get_name (st));
  else if (features && !gst_caps_features_is_equal (features,
          GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY))
    what = gst_caps_features_to_string (features);
  else if (format)
    what = g_strdup_printf ("format %s", format);
  else
    what = g_strdup ("an unknown format");

  GST_WARNING_OBJECT (self, "%s caps %s", how, caps_str);
  GST_ELEMENT_WARNING (self, CORE, NEGOTIATION,
      ("tokenflow only handles packed RGB video in system memory (video/x-raw,format=RGB), "
          "not %s: put videoconvert before tokenflow", what), ("%s caps: %s", how, caps_str));
  g_free (what);
  g_free (caps_str);
}

static gboolean
gst_token_flow_sink_query (GstPad * pad, GstObject * parent, GstQuery * query)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);

  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_ACCEPT_CAPS:{
      GstCaps *caps, *templ;
      gboolean ok;

      gst_query_parse_accept_caps (query, &caps);
      templ = gst_pad_get_pad_template_caps (pad);
      ok = gst_caps_is_subset (caps, templ);
      gst_caps_unref (templ);
      if (!ok) {
        if (gst_caps_is_fixed (caps))
          explain_refused_caps (self, caps, "refused");
      } else {
        /* Same caps on both sides: downstream must accept them too. */
        ok = gst_pad_peer_query_accept_caps (self->srcpad, caps);
      }
      gst_query_set_accept_caps_result (query, ok);
      return TRUE;
    }
    case GST_QUERY_CAPS:{
      GstCaps *filter = NULL, *result;
      gboolean res = gst_pad_query_default (pad, parent, query);        /* proxied, template-filtered */
      gst_query_parse_caps (query, &filter);
      if (res && filter) {
        gst_query_parse_caps_result (query, &result);
        if (result && gst_caps_is_empty (result)) {
          GstCaps *templ = gst_pad_get_pad_template_caps (pad);
          if (!gst_caps_can_intersect (filter, templ))
            explain_refused_caps (self, filter, "upstream offers only");
          gst_caps_unref (templ);
        }
      }
      return res;
    }
    default:
      return gst_pad_query_default (pad, parent, query);
  }
}

static gboolean
gst_token_flow_src_query (GstPad * pad, GstObject * parent, GstQuery * query)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);

  switch (GST_QUERY_TYPE (query)) {
    case GST_QUERY_LATENCY:{
      gboolean live;
      GstClockTime min, max, lat;
      guint window;
      gint fps_n = 0, fps_d = 1;

      if (!gst_pad_peer_query (self->sinkpad, query))
        return FALSE;
      gst_query_parse_latency (query, &live, &min, &max);
      /* Never the stream lock here: a run holds it for as long as it takes. */
      GST_OBJECT_LOCK (self);
      window = self->window;
      fps_n = self->fps_n;
      fps_d = self->fps_d;
      GST_OBJECT_UNLOCK (self);
      if (window == 0) {
        max = GST_CLOCK_TIME_NONE;      /* whole clip: unbounded */
      } else if (fps_n > 0 && fps_d > 0) {
        /* A window is held back before it is edited (editing time itself is not included). */
        lat = gst_util_uint64_scale (window, (guint64) fps_d * GST_SECOND, fps_n);
        min += lat;
        if (GST_CLOCK_TIME_IS_VALID (max))
          max += lat;
      }
      gst_query_set_latency (query, live, min, max);
      return TRUE;
    }
    default:
      return gst_pad_query_default (pad, parent, query);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Events                                                                                           */

/* Pushes a serialized event now, or queues it behind the frames that are waiting for the engine. */
static gboolean
push_or_queue_event (GstTokenFlow * self, GstEvent * event)
{
  if (g_queue_is_empty (&self->items))
    return gst_pad_push_event (self->srcpad, event);
  GstTokenFlowItem *item = g_new0 (GstTokenFlowItem, 1);
  item->event = event;
  g_queue_push_tail (&self->items, item);
  GST_LOG_OBJECT (self, "queued %s behind %u frames", GST_EVENT_TYPE_NAME (event),
      self->pending_frames);
  return TRUE;
}

static gboolean
gst_token_flow_sink_event (GstPad * pad, GstObject * parent, GstEvent * event)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);
  GstFlowReturn ret;

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_CAPS:{
      GstCaps *caps;
      GstVideoInfo info;

      gst_event_parse_caps (event, &caps);
      if (!gst_video_info_from_caps (&info, caps)) {
        GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("Invalid video caps"),
            ("%" GST_PTR_FORMAT, caps));
        gst_event_unref (event);
        return FALSE;
      }
      if (self->have_info && self->pending_frames > 0
          && (GST_VIDEO_INFO_WIDTH (&info) != GST_VIDEO_INFO_WIDTH (&self->info)
              || GST_VIDEO_INFO_HEIGHT (&info) != GST_VIDEO_INFO_HEIGHT (&self->info))) {
        /* One clip has one frame size: edit what is queued before switching. (Other changes,
         * e.g. the frame rate, travel in order with the frames.) */
        GST_INFO_OBJECT (self, "caps change: editing the %u queued frames first",
            self->pending_frames);
        ret = gst_token_flow_drain (self);
        if (ret != GST_FLOW_OK && ret != GST_FLOW_NOT_LINKED) {
          gst_event_unref (event);
          return FALSE;
        }
      }
      GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT, caps);
      self->info = info;
      self->have_info = TRUE;
      GST_OBJECT_LOCK (self);
      self->fps_n = GST_VIDEO_INFO_FPS_N (&info);
      self->fps_d = GST_VIDEO_INFO_FPS_D (&info);
      GST_OBJECT_UNLOCK (self);
      return push_or_queue_event (self, event);
    }
    case GST_EVENT_EOS:
      ret = gst_token_flow_drain (self);
      if (ret != GST_FLOW_OK && ret != GST_FLOW_NOT_LINKED && ret != GST_FLOW_EOS) {
        gst_event_unref (event);
        return FALSE;
      }
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_FLUSH_START:
      /* Not serialized: a run may be going on; it stops at its next progress callback. */
      g_atomic_int_set (&self->flushing, 1);
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_FLUSH_STOP:
      /* The stream lock is held here: the streaming thread has left chain. */
      GST_DEBUG_OBJECT (self, "flush: dropping %u queued frames", self->pending_frames);
      gst_token_flow_reset_stream (self);
      g_atomic_int_set (&self->flushing, 0);
      return gst_pad_push_event (self->srcpad, event);
    default:
      if (GST_EVENT_IS_SERIALIZED (event))
        return push_or_queue_event (self, event);
      return gst_pad_event_default (pad, parent, event);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* State changes                                                                                    */

static GstStateChangeReturn
gst_token_flow_change_state (GstElement * element, GstStateChange transition)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (element);
  GstStateChangeReturn ret;

  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      g_atomic_int_set (&self->stopping, 0);
      g_atomic_int_set (&self->flushing, 0);
      self->window_index = 0;
      self->have_info = FALSE;
      /* Validate the settings and load the model now, so a bad model fails the pipeline early. */
      if (!take_settings_snapshot (self) || !gst_token_flow_open (self))
        return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* Before chaining up: deactivating the pads waits for the streaming thread, which may be in
       * tf_run; this makes the run return at its next progress callback. */
      g_atomic_int_set (&self->stopping, 1);
      break;
    default:
      break;
  }

  ret = GST_ELEMENT_CLASS (gst_token_flow_parent_class)->change_state (element, transition);

  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      if (ret == GST_STATE_CHANGE_FAILURE)
        gst_token_flow_reset_stream (self);
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      gst_token_flow_reset_stream (self);       /* pads are inactive: no streaming thread left */
      self->have_info = FALSE;
      GST_OBJECT_LOCK (self);
      g_clear_pointer (&self->last_refusal, g_free);
      GST_OBJECT_UNLOCK (self);
      break;
    default:
      break;
  }
  return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* Properties                                                                                       */

static void
gst_token_flow_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      break;
    case PROP_PROMPT:
      g_free (self->prompt);
      self->prompt = g_value_dup_string (value);
      break;
    case PROP_NEGATIVE_PROMPT:
      g_free (self->negative_prompt);
      self->negative_prompt = g_value_dup_string (value);
      break;
    case PROP_INVERSION_PROMPT:
      g_free (self->inversion_prompt);
      self->inversion_prompt = g_value_dup_string (value);
      break;
    case PROP_METHOD:
      self->method = g_value_get_enum (value);
      break;
    case PROP_STEPS:
      self->steps = g_value_get_int (value);
      break;
    case PROP_INVERSION_STEPS:
      self->inversion_steps = g_value_get_int (value);
      break;
    case PROP_GUIDANCE:
      self->guidance = g_value_get_float (value);
      break;
    case PROP_PNP_ATTN_T:
      self->pnp_attn_t = g_value_get_float (value);
      break;
    case PROP_PNP_F_T:
      self->pnp_f_t = g_value_get_float (value);
      break;
    case PROP_STRENGTH:
      self->strength = g_value_get_float (value);
      break;
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_int (value);
      break;
    case PROP_WINDOW:
      self->window = g_value_get_uint (value);
      break;
    case PROP_SIZE:{
      const gchar *size = g_value_get_string (value);
      TFSettings probe = gst_token_flow_defaults;
      if (!parse_size (size, &probe))
        GST_WARNING_OBJECT (self, "invalid size \"%s\" (will fail at READY->PAUSED)", size);
      g_free (self->size);
      self->size = g_strdup (size ? size : "");
      break;
    }
    case PROP_SEED:
      self->seed = g_value_get_uint64 (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_int (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_token_flow_get_property (GObject * object, guint prop_id, GValue * value, GParamSpec * pspec)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_PROMPT:
      g_value_set_string (value, self->prompt);
      break;
    case PROP_NEGATIVE_PROMPT:
      g_value_set_string (value, self->negative_prompt);
      break;
    case PROP_INVERSION_PROMPT:
      g_value_set_string (value, self->inversion_prompt);
      break;
    case PROP_METHOD:
      g_value_set_enum (value, self->method);
      break;
    case PROP_STEPS:
      g_value_set_int (value, self->steps);
      break;
    case PROP_INVERSION_STEPS:
      g_value_set_int (value, self->inversion_steps);
      break;
    case PROP_GUIDANCE:
      g_value_set_float (value, self->guidance);
      break;
    case PROP_PNP_ATTN_T:
      g_value_set_float (value, self->pnp_attn_t);
      break;
    case PROP_PNP_F_T:
      g_value_set_float (value, self->pnp_f_t);
      break;
    case PROP_STRENGTH:
      g_value_set_float (value, self->strength);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_int (value, self->batch_size);
      break;
    case PROP_WINDOW:
      g_value_set_uint (value, self->window);
      break;
    case PROP_SIZE:
      g_value_set_string (value, self->size);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, self->seed);
      break;
    case PROP_THREADS:
      g_value_set_int (value, self->threads);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* ------------------------------------------------------------------------------------------------ */
/* GObject                                                                                          */

static void
gst_token_flow_finalize (GObject * object)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);

  gst_token_flow_reset_stream (self);
  clear_snapshot (self);
  g_free (self->model);
  g_free (self->prompt);
  g_free (self->negative_prompt);
  g_free (self->inversion_prompt);
  g_free (self->size);
  g_free (self->last_refusal);
  G_OBJECT_CLASS (gst_token_flow_parent_class)->finalize (object);
}

static void
gst_token_flow_init (GstTokenFlow * self)
{
  const TFSettings *d = &gst_token_flow_defaults;

  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_token_flow_chain));
  gst_pad_set_event_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_token_flow_sink_event));
  gst_pad_set_query_function (self->sinkpad, GST_DEBUG_FUNCPTR (gst_token_flow_sink_query));
  GST_PAD_SET_PROXY_CAPS (self->sinkpad);
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  gst_pad_set_query_function (self->srcpad, GST_DEBUG_FUNCPTR (gst_token_flow_src_query));
  GST_PAD_SET_PROXY_CAPS (self->srcpad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->model = NULL;
  self->prompt = g_strdup ("");
  self->negative_prompt = g_strdup (d->negative_prompt ? d->negative_prompt : "");
  self->inversion_prompt = g_strdup ("");
  self->size = g_strdup (DEFAULT_SIZE);
  self->method = d->method;
  self->steps = d->steps;
  self->inversion_steps = d->inversion_steps;
  self->guidance = d->guidance_scale;
  self->pnp_attn_t = d->pnp_attn_t;
  self->pnp_f_t = d->pnp_f_t;
  self->strength = d->strength;
  self->batch_size = d->batch_size;
  self->window = DEFAULT_WINDOW;
  self->seed = d->seed;
  self->threads = d->threads;
  g_queue_init (&self->items);
}

static void
gst_token_flow_class_init (GstTokenFlowClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  const TFSettings *d = &gst_token_flow_defaults;

  tf_default_settings (&gst_token_flow_defaults);

  gobject_class->set_property = gst_token_flow_set_property;
  gobject_class->get_property = gst_token_flow_get_property;
  gobject_class->finalize = gst_token_flow_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Stable Diffusion model folder (diffusers layout: model_index.json, unet/, vae/, "
          "text_encoder/, tokenizer/, scheduler/). NULL: $TOKENFLOW_MODEL, then the model "
          "installed with libtokenflow (<prefix>/share/tokenflow/model)", NULL, flags));
  g_object_class_install_property (gobject_class, PROP_PROMPT,
      g_param_spec_string ("prompt", "Prompt", "Edit prompt: what the video should become (UTF-8)",
          "", flags));
  g_object_class_install_property (gobject_class, PROP_NEGATIVE_PROMPT,
      g_param_spec_string ("negative-prompt", "Negative prompt",
          "Negative prompt for classifier-free guidance",
          d->negative_prompt ? d->negative_prompt : "", flags));
  g_object_class_install_property (gobject_class, PROP_INVERSION_PROMPT,
      g_param_spec_string ("inversion-prompt", "Inversion prompt",
          "Prompt describing the source video, used for DDIM inversion and the source branch",
          "", flags));
  g_object_class_install_property (gobject_class, PROP_METHOD,
      g_param_spec_enum ("method", "Method", "Editing method", GST_TYPE_TOKEN_FLOW_METHOD,
          d->method, flags));
  g_object_class_install_property (gobject_class, PROP_STEPS,
      g_param_spec_int ("steps", "Steps", "Sampling (denoising) steps", 1, MAX_STEPS, d->steps,
          flags));
  g_object_class_install_property (gobject_class, PROP_INVERSION_STEPS,
      g_param_spec_int ("inversion-steps", "Inversion steps",
          "DDIM inversion steps (a multiple of steps)", 1, MAX_STEPS, d->inversion_steps, flags));
  g_object_class_install_property (gobject_class, PROP_GUIDANCE,
      g_param_spec_float ("guidance", "Guidance scale", "Classifier-free guidance scale",
          0.0f, MAX_GUIDANCE, d->guidance_scale, flags));
  g_object_class_install_property (gobject_class, PROP_PNP_ATTN_T,
      g_param_spec_float ("pnp-attn-t", "PnP attention injection",
          "Fraction of the sampling steps with self-attention query/key injection",
          0.0f, 1.0f, d->pnp_attn_t, flags));
  g_object_class_install_property (gobject_class, PROP_PNP_F_T,
      g_param_spec_float ("pnp-f-t", "PnP feature injection",
          "Fraction of the sampling steps with convolution feature injection",
          0.0f, 1.0f, d->pnp_f_t, flags));
  g_object_class_install_property (gobject_class, PROP_STRENGTH,
      g_param_spec_float ("strength", "SDEdit strength",
          "method=sdedit: fraction of the noise schedule that is run", 0.0f, 1.0f, d->strength,
          flags));
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_int ("batch-size", "Batch size",
          "Frames per batch (one keyframe is drawn in each batch)", 1, MAX_BATCH_SIZE,
          d->batch_size, flags));
  g_object_class_install_property (gobject_class, PROP_WINDOW,
      g_param_spec_uint ("window", "Window",
          "Frames edited together (the element holds them back until the window is full); "
          "0 = the whole stream, edited at EOS", 0, G_MAXINT, DEFAULT_WINDOW, flags));
  g_object_class_install_property (gobject_class, PROP_SIZE,
      g_param_spec_string ("size", "Processing size",
          "Size the frames are edited at (output keeps the input size): \"WxH\" (multiples of 8), "
          "\"input\" (the input size rounded to multiples of 8), a longer side such as \"768\", "
          "or \"\" for the default (longer side 512, aspect kept)", DEFAULT_SIZE, flags));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed", "Random seed for the keyframe choice", 0, G_MAXUINT64,
          d->seed, flags));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_int ("threads", "Threads",
          "Worker threads (a process-wide setting of libtokenflow); 0 = one per core",
          0, MAX_THREADS, d->threads, flags));

  gst_element_class_set_static_metadata (element_class, "TokenFlow video editor",
      "Filter/Effect/Video",
      "Text-driven, temporally consistent video editing with a frozen Stable Diffusion model "
      "(TokenFlow), on the CPU",
      "TokenFlow engine developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_token_flow_change_state);

  gst_type_mark_as_plugin_api (GST_TYPE_TOKEN_FLOW_METHOD, 0);
}

/* ------------------------------------------------------------------------------------------------ */
/* Plugin                                                                                           */

static gboolean
plugin_init (GstPlugin * plugin)
{
  GST_DEBUG_CATEGORY_INIT (gst_token_flow_debug, "tokenflow", 0, "TokenFlow video editing");
  if ((tf_version () >> 16) != TOKENFLOW_VERSION_MAJOR) {
    GST_ERROR ("libtokenflow %s is loaded, this plugin was built for %s (major version differs)",
        tf_version_string (), GST_TOKENFLOW_PLUGIN_VERSION);
    return FALSE;
  }
  GST_INFO ("libtokenflow %s", tf_version_string ());
  return gst_element_register (plugin, "tokenflow", GST_RANK_NONE, GST_TYPE_TOKEN_FLOW);
}

#ifndef PACKAGE
#define PACKAGE "tokenflow"
#endif

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, tokenflow,
    "TokenFlow text-driven video editing (libtokenflow)", plugin_init,
    GST_TOKENFLOW_PLUGIN_VERSION, "unknown", PACKAGE, "TokenFlow engine, Examples/gstreamer")
