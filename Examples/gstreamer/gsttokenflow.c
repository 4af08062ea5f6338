/*
 * gsttokenflow.c - GStreamer 1.x element "tokenflow": text-driven, temporally consistent video editing
 * (TokenFlow on a frozen Stable Diffusion model, CPU only) through libtokenflow's C API (tokenflow.h).
 *
 *   gst-launch-1.0 -e filesrc location=in.mp4 ! decodebin ! videoconvert ! video/x-raw,format=RGB \
 *       ! tokenflow model=/models/sd-2-1-base prompt="a marble sculpture" window=16 \
 *       ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4
 *
 * Properties: the library owns the table of settings (tf_option). class_init installs one property per
 * option, with the option's name ('_' shows as '-', e.g. negative-prompt), help, default and range or
 * allowed values, so gst-inspect-1.0 documents exactly what the library accepts and a setting added to
 * the library appears here without a change to this file. Values are kept as GValues and handed to the
 * library as text (tf_settings_set), which parses and validates them like every other host does.
 *
 * Data flow: the library owns buffering, windows and the end of the stream (tokenflow.h), so the element
 * is thin. Every input frame goes into the engine as soon as it arrives (tf_send_frame encodes it and
 * keeps only its latents: in memory up to latent_memory, then in an unlinked file in temp_dir) with its
 * metadata (timestamps, duration, offsets, flags) as the frame's opaque value, and the upstream buffer is
 * released at once, so decoders with bounded pools never starve. Then every frame tf_get_frame gives is
 * pushed with that metadata, until TF_EAGAIN: with window W the library edits each W frames when the W-th
 * arrives (later windows share the look of the earlier ones) and they come out while the stream goes on;
 * with window 0 the whole stream comes out at EOS (tf_end_of_stream, then every frame). Serialized events
 * that arrive while frames are in the engine are queued, tagged with the number of frames sent before
 * them, and pushed once that many frames have been output, so they keep their place between frames.
 * Metadata of frames never output (a flush, a stop, an error) is freed by the library at tf_close
 * (tf_set_opaque_release).
 *
 * One libtokenflow context serves one stream: it is opened at READY->PAUSED (so a bad model or bad
 * settings fail the state change, not the stream) and, after an EOS, a flush or a change of frame size
 * ended its stream, opened again at the next frame.
 *
 * Threads and locks: the streaming thread owns the context, the event queue and the negotiated video
 * info (all touched only with the sink pad's stream lock held, or while the pads are inactive). Property
 * values are kept under the object lock and copied into a TFSettings snapshot at READY->PAUSED. An edit
 * (inside tf_get_frame) is cancelled through the progress callback's return value when `stopping` (set
 * in change_state before chaining up, which deactivates the pads and therefore waits for the streaming
 * thread) or `flushing` (FLUSH_START) is set.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

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

/* The setting the element reads back (the library implements it) for the latency it adds and the frame
 * count of the progress messages: frames edited together; 0 = the whole stream at EOS. */
#define WINDOW_SETTING "window"
/* Named in the error message when a context cannot be opened (if the library has such a setting). */
#define MODEL_SETTING "model"

/* ------------------------------------------------------------------------------------------------ */
/* The settings table                                                                               */

/* One library option and the property that stands for it (property id = index + 1). Filled once in
 * class_init; the TFOption is static in the library. */
typedef struct
{
  const TFOption *option;
  GParamSpec *pspec;            /* NULL: the option could not become a property (logged in class_init) */
} GstTokenFlowSetting;

static GstTokenFlowSetting *gst_token_flow_settings;
static guint gst_token_flow_n_settings;

/* ------------------------------------------------------------------------------------------------ */
/* Instance                                                                                         */

#define GST_TYPE_TOKEN_FLOW (gst_token_flow_get_type ())
G_DECLARE_FINAL_TYPE (GstTokenFlow, gst_token_flow, GST, TOKEN_FLOW, GstElement)

/* An input frame's metadata: the opaque value sent with the frame (tf_send_frame), returned with the
 * edited frame (TFFrame.opaque) and freed then; the library frees (g_free) those of frames never
 * returned at tf_close. */
typedef struct
{
  GstClockTime pts, dts, duration;
  guint64 offset, offset_end;
  GstBufferFlags flags;
} GstTokenFlowFrameMeta;

/* A serialized event that arrived while frames were in the engine: pushed once `after` frames of the
 * stream have been output (it arrived after the after-th frame). */
typedef struct
{
  GstEvent *event;
  guint64 after;
} GstTokenFlowEvent;

struct _GstTokenFlow
{
  GstElement parent;
  GstPad *sinkpad, *srcpad;

  /* Property values (object lock): values[i] is option i's, of its pspec's value type. */
  GValue *values;

  /* Settings snapshot taken at READY->PAUSED, used for every context until PAUSED->READY. */
  TFSettings *settings;
  gchar *model;                 /* the snapshot's model setting, for error messages ("" = default) */
  guint window;                 /* the snapshot's window; written under the object lock (for the
                                 * latency query) while the pads are inactive, so the streaming
                                 * thread reads it without the lock */

  /* Streaming state (sink stream lock, or pads inactive). */
  TFContext *ctx;               /* the current stream's context; NULL: opened at the next frame */
  GstVideoInfo info;
  gboolean have_info;
  guint64 frames_in;            /* frames of the current stream sent to ctx */
  guint64 frames_out;           /* of those, frames tf_get_frame returned (pushed) */
  GQueue events;                /* of GstTokenFlowEvent*, in arrival order */
  gint edited_window;           /* set by the progress callback: the window edited in this call */

  gint fps_n, fps_d;             /* negotiated frame rate (object lock), for the latency query */

  /* Last refused caps we explained on the bus (object lock), so a retrying upstream is not spammed. */
  gchar *last_refusal;

  gint stopping;                /* atomic: PAUSED->READY in progress (cancels an edit) */
  gint flushing;                /* atomic: between FLUSH_START and FLUSH_STOP (cancels an edit) */
};

G_DEFINE_TYPE (GstTokenFlow, gst_token_flow, GST_TYPE_ELEMENT);

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

/* What becomes of the queued events when a stream is dropped. */
typedef enum
{
  EVENTS_DROP,                  /* all dropped (an error, a state change) */
  EVENTS_PUSH,                  /* all pushed, in order (the stream is over; downstream wanted no more frames) */
  EVENTS_PUSH_STICKY            /* a flush: caps, tags, stream-start... pushed (upstream does not send them
                                 * again), segments and the rest dropped */
} GstTokenFlowEvents;

/* Drops the current stream: closes the context (which frees the metadata of the frames it holds; the
 * next frame opens a new one) and empties the event queue. Stream lock held or pads inactive. */
static void
gst_token_flow_reset_stream (GstTokenFlow * self, GstTokenFlowEvents events)
{
  GstTokenFlowEvent *item;

  tf_close (&self->ctx);
  while ((item = g_queue_pop_head (&self->events)) != NULL) {
    GstEventType type = GST_EVENT_TYPE (item->event);
    if (events == EVENTS_PUSH || (events == EVENTS_PUSH_STICKY && GST_EVENT_IS_STICKY (item->event)
            && type != GST_EVENT_SEGMENT && type != GST_EVENT_EOS))
      gst_pad_push_event (self->srcpad, item->event);
    else
      gst_event_unref (item->event);
    g_free (item);
  }
  self->frames_in = 0;
  self->frames_out = 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Errors                                                                                           */

/* Posts an ERROR message for a libtokenflow failure; text and debug are taken (freed by GStreamer).
 * TF_EIO is a model file that cannot be read (tf_open) or, once streaming, the temporary latent file. */
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
      error = self->ctx != NULL ? GST_RESOURCE_ERROR_WRITE : GST_RESOURCE_ERROR_READ;
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

/* tf_last_error(ctx) when it says something, else the code's description. */
static const gchar *
why (const TFContext * ctx, int code)
{
  const char *message = tf_last_error (ctx);
  return (message && message[0]) ? message : tf_strerror (code);
}

/* ------------------------------------------------------------------------------------------------ */
/* Settings                                                                                         */

/* A property value as text in the library's grammar, or NULL for a NULL string (which keeps the
 * library's default). Numbers are formatted without the locale (a decimal comma would be refused). */
static gchar *
value_to_text (const GValue * value)
{
  if (G_VALUE_HOLDS_STRING (value))
    return g_value_dup_string (value);
  if (G_VALUE_HOLDS_INT (value))
    return g_strdup_printf ("%d", g_value_get_int (value));
  if (G_VALUE_HOLDS_INT64 (value))
    return g_strdup_printf ("%" G_GINT64_FORMAT, g_value_get_int64 (value));
  if (G_VALUE_HOLDS_DOUBLE (value)) {
    gchar buf[G_ASCII_DTOSTR_BUF_SIZE];
    /* 17 significant digits: the library parses back exactly the double the property holds. */
    return g_strdup (g_ascii_formatd (buf, sizeof buf, "%.17g", g_value_get_double (value)));
  }
  if (G_VALUE_HOLDS_ENUM (value)) {
    /* The enum's nicks are the option's choices; the library takes the choice by name. */
    GEnumClass *klass = g_type_class_ref (G_VALUE_TYPE (value));
    GEnumValue *v = g_enum_get_value (klass, g_value_get_enum (value));
    gchar *text = v ? g_strdup (v->value_nick) : g_strdup_printf ("%d", g_value_get_enum (value));
    g_type_class_unref (klass);
    return text;
  }
  g_return_val_if_reached (NULL);
}

/* Builds self->settings from the property values (and reads back what the host implements). On
 * failure posts an error naming the property and returns FALSE. */
static gboolean
take_settings_snapshot (GstTokenFlow * self)
{
  TFSettings *s = NULL;
  GValue *values;
  const gchar *text;
  gboolean ok = TRUE;
  guint i;
  int r;

  tf_settings_free (&self->settings);
  g_clear_pointer (&self->model, g_free);

  r = tf_settings_new (&s);
  if (r < 0) {
    post_library_error (self, r, g_strdup_printf ("Could not create TokenFlow settings: %s",
            why (NULL, r)), g_strdup_printf ("tf_settings_new returned %d (%s)", r, tf_strerror (r)),
        GST_FUNCTION, __LINE__);
    return FALSE;
  }

  /* Copy the values under the lock; the library is called without it. */
  values = g_new0 (GValue, gst_token_flow_n_settings);
  GST_OBJECT_LOCK (self);
  for (i = 0; i < gst_token_flow_n_settings; i++) {
    if (gst_token_flow_settings[i].pspec == NULL)
      continue;
    g_value_init (&values[i], G_VALUE_TYPE (&self->values[i]));
    g_value_copy (&self->values[i], &values[i]);
  }
  GST_OBJECT_UNLOCK (self);

  for (i = 0; ok && i < gst_token_flow_n_settings; i++) {
    const GstTokenFlowSetting *setting = &gst_token_flow_settings[i];
    gchar *value;

    if (setting->pspec == NULL)
      continue;
    value = value_to_text (&values[i]);
    if (value != NULL) {
      r = tf_settings_set (s, setting->option->name, value);
      if (r < 0) {
        /* tf_last_error(NULL) is per thread: read it right away on this thread. It names the
         * setting, the value and what is allowed. */
        GST_ELEMENT_ERROR (self, LIBRARY, SETTINGS,
            ("Invalid value for property \"%s\": %s", g_param_spec_get_name (setting->pspec),
                why (NULL, r)), ("tf_settings_set (\"%s\", \"%s\") returned %d (%s)",
                setting->option->name, value, r, tf_strerror (r)));
        ok = FALSE;
      }
    }
    g_free (value);
  }
  for (i = 0; i < gst_token_flow_n_settings; i++) {
    if (G_IS_VALUE (&values[i]))
      g_value_unset (&values[i]);
  }
  g_free (values);
  if (!ok) {
    tf_settings_free (&s);
    return FALSE;
  }

  /* The window (the library implements it; the element reports the latency it adds). A library
   * without the setting: the whole stream. */
  text = tf_settings_get (s, WINDOW_SETTING);
  GST_OBJECT_LOCK (self);
  self->window = text ? (guint) MIN (g_ascii_strtoull (text, NULL, 10), G_MAXUINT) : 0;
  GST_OBJECT_UNLOCK (self);
  text = tf_settings_get (s, MODEL_SETTING);
  self->model = g_strdup (text ? text : "");
  self->settings = s;
  GST_DEBUG_OBJECT (self, "settings snapshot taken (window %u)", self->window);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */
/* Editing                                                                                          */

/* Progress of an edit (inside tf_get_frame, on the streaming thread): an element message and a log
 * line; returning non-zero cancels the edit. */
static int
progress_cb (void *opaque, const TFProgress * p)
{
  GstTokenFlow *self = opaque;
  const gchar *stage = p->stage_name ? p->stage_name : "unknown";
  guint64 frames = self->frames_in;
  GstStructure *s;

  /* The frames of the window being edited: windows are complete when full, the last one at EOS. */
  if (self->window > 0) {
    guint64 first = (guint64) MAX (p->window, 0) * self->window;
    frames = first < frames ? MIN (frames - first, self->window) : 0;
  }
  self->edited_window = p->window;
  GST_INFO_OBJECT (self, "window %d (%" G_GUINT64_FORMAT " frames): %s %d/%d (step %d/%d)", p->window,
      frames, stage, p->completed, p->total, p->step, p->steps);
  s = gst_structure_new ("tokenflow-progress",
      "stage", G_TYPE_STRING, stage,
      "completed", G_TYPE_INT, p->completed,
      "total", G_TYPE_INT, p->total,
      "step", G_TYPE_INT, p->step,
      "steps", G_TYPE_INT, p->steps,
      "window", G_TYPE_INT, p->window,
      "frames", G_TYPE_UINT, (guint) MIN (frames, G_MAXUINT), NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
  return is_cancelled (self) ? 1 : 0;
}

/* Opens a context for a new stream with the snapshot settings. On failure posts an error naming the
 * problem. */
static gboolean
gst_token_flow_open (GstTokenFlow * self)
{
  TFContext *ctx = NULL;
  gint64 start = g_get_monotonic_time ();
  int r;

  g_assert (self->ctx == NULL);
  r = tf_open (&ctx, self->settings);
  if (r < 0) {
    /* tf_last_error(NULL) is per thread: read it right away on this thread. */
    const gchar *message = why (NULL, r);
    gboolean named = self->model && self->model[0];
    post_library_error (self, r,
        g_strdup_printf ("Could not open the TokenFlow engine (model %s%s%s): %s",
            named ? "\"" : "", named ? self->model : "from $TOKENFLOW_MODEL or the installed default",
            named ? "\"" : "", message),
        g_strdup_printf ("tf_open returned %d (%s)", r, tf_strerror (r)), GST_FUNCTION, __LINE__);
    return FALSE;
  }
  tf_set_progress_callback (ctx, progress_cb, self);
  tf_set_opaque_release (ctx, g_free);  /* metadata of frames never output */
  GST_INFO_OBJECT (self, "engine context opened in %.3f s",
      (g_get_monotonic_time () - start) / 1e6);
  self->ctx = ctx;
  self->frames_in = 0;
  self->frames_out = 0;
  return TRUE;
}

static GstBuffer *
make_output_buffer (GstTokenFlow * self, const TFFrame * frame, const GstTokenFlowFrameMeta * meta)
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

  GST_BUFFER_PTS (out) = meta->pts;
  GST_BUFFER_DTS (out) = meta->dts;
  GST_BUFFER_DURATION (out) = meta->duration;
  GST_BUFFER_OFFSET (out) = meta->offset;
  GST_BUFFER_OFFSET_END (out) = meta->offset_end;
  GST_BUFFER_FLAGS (out) = meta->flags;
  return out;
}

/* Pushes the queued events whose frames have all been output. */
static void
push_due_events (GstTokenFlow * self)
{
  GstTokenFlowEvent *item;

  while ((item = g_queue_peek_head (&self->events)) != NULL && item->after <= self->frames_out) {
    g_queue_pop_head (&self->events);
    gst_pad_push_event (self->srcpad, item->event);
    g_free (item);
  }
}

/* Pushes every edited frame the engine can give now (tf_get_frame until TF_EAGAIN), each followed by the
 * events that arrived after it. tf_get_frame edits a window when its first frame is asked for: this is
 * where the long work happens. Streaming thread, sink stream lock held, no other lock. */
static GstFlowReturn
gst_token_flow_push_ready (GstTokenFlow * self)
{
  for (;;) {
    const TFFrame *frame = NULL;
    GstTokenFlowFrameMeta *meta;
    GstBuffer *out;
    GstFlowReturn ret;
    gint64 start = g_get_monotonic_time ();
    int r;

    self->edited_window = -1;
    r = tf_get_frame (self->ctx, &frame);
    if (self->edited_window >= 0)
      GST_INFO_OBJECT (self, "window %d %s in %.3f s", self->edited_window,
          r == TF_OK ? "edited" : "stopped", (g_get_monotonic_time () - start) / 1e6);
    if (r == TF_EAGAIN)
      return GST_FLOW_OK;
    if (r == TF_ECANCELED && is_cancelled (self)) {
      /* The flush or the state change that cancelled the edit drops the stream. */
      GST_INFO_OBJECT (self, "edit cancelled (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
          " frames output)", self->frames_out, self->frames_in);
      return GST_FLOW_FLUSHING;
    }
    if (r < 0 || frame->width != GST_VIDEO_INFO_WIDTH (&self->info)
        || frame->height != GST_VIDEO_INFO_HEIGHT (&self->info)) {
      if (r == TF_OK)
        g_free (frame->opaque);
      post_library_error (self, r < 0 ? r : TF_EINVAL,
          g_strdup_printf ("TokenFlow could not edit the stream (%" G_GUINT64_FORMAT " of %"
              G_GUINT64_FORMAT " frames output): %s", self->frames_out, self->frames_in,
              r < 0 ? why (self->ctx, r) : "wrong frame size"),
          r < 0 ? g_strdup_printf ("tf_get_frame returned %d (%s)", r, tf_strerror (r)) :
          g_strdup_printf ("tf_get_frame returned %dx%d, the caps say %dx%d", frame->width,
              frame->height, GST_VIDEO_INFO_WIDTH (&self->info),
              GST_VIDEO_INFO_HEIGHT (&self->info)), GST_FUNCTION, __LINE__);
      gst_token_flow_reset_stream (self, EVENTS_DROP);
      return GST_FLOW_ERROR;
    }

    meta = frame->opaque;
    if (frame->pts != (int64_t) meta->pts)
      GST_WARNING_OBJECT (self, "engine returned pts %" G_GINT64_FORMAT ", expected %"
          GST_TIME_FORMAT, (gint64) frame->pts, GST_TIME_ARGS (meta->pts));
    out = make_output_buffer (self, frame, meta);
    g_free (meta);
    self->frames_out++;
    if (out == NULL) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT, ("Could not allocate an output frame"),
          (NULL));
      gst_token_flow_reset_stream (self, EVENTS_DROP);
      return GST_FLOW_ERROR;
    }
    GST_LOG_OBJECT (self, "pushing frame %" G_GUINT64_FORMAT ", pts %" GST_TIME_FORMAT,
        self->frames_out - 1, GST_TIME_ARGS (GST_BUFFER_PTS (out)));
    ret = gst_pad_push (self->srcpad, out);
    push_due_events (self);
    if (ret != GST_FLOW_OK) {
      GST_INFO_OBJECT (self, "downstream returned %s after %" G_GUINT64_FORMAT " frames",
          gst_flow_get_name (ret), self->frames_out);
      return ret;
    }
  }
}

/* Ends the current stream: the engine edits what is left (the last window, or the whole stream), every
 * frame is pushed, then the context is closed (the next frame opens one for a new stream). */
static GstFlowReturn
gst_token_flow_finish_stream (GstTokenFlow * self)
{
  GstFlowReturn ret;
  int r;

  if (self->ctx == NULL || self->frames_in == 0) {
    push_due_events (self);
    return GST_FLOW_OK;
  }
  if (is_cancelled (self))
    return GST_FLOW_FLUSHING;
  GST_INFO_OBJECT (self, "end of stream after %" G_GUINT64_FORMAT " frames (%" G_GUINT64_FORMAT
      " output)", self->frames_in, self->frames_out);
  r = tf_end_of_stream (self->ctx);
  if (r < 0) {
    post_library_error (self, r,
        g_strdup_printf ("TokenFlow could not end the stream of %" G_GUINT64_FORMAT " frames: %s",
            self->frames_in, why (self->ctx, r)),
        g_strdup_printf ("tf_end_of_stream returned %d (%s)", r, tf_strerror (r)), GST_FUNCTION,
        __LINE__);
    gst_token_flow_reset_stream (self, EVENTS_DROP);
    return GST_FLOW_ERROR;
  }
  ret = gst_token_flow_push_ready (self);
  /* Every frame is out, or downstream takes no more: the stream is over. (A cancelled edit is dropped
   * by the flush or the state change; an error has dropped it already.) */
  if (ret == GST_FLOW_OK || ret == GST_FLOW_NOT_LINKED || ret == GST_FLOW_EOS)
    gst_token_flow_reset_stream (self, EVENTS_PUSH);
  return ret;
}

static GstFlowReturn
gst_token_flow_chain (GstPad * pad, GstObject * parent, GstBuffer * buf)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);
  GstTokenFlowFrameMeta *meta;
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
  meta = g_new (GstTokenFlowFrameMeta, 1);
  meta->pts = GST_BUFFER_PTS (buf);
  meta->dts = GST_BUFFER_DTS (buf);
  meta->duration = GST_BUFFER_DURATION (buf);
  meta->offset = GST_BUFFER_OFFSET (buf);
  meta->offset_end = GST_BUFFER_OFFSET_END (buf);
  meta->flags = GST_BUFFER_FLAGS (buf) & ~GST_BUFFER_FLAG_TAG_MEMORY;
  r = tf_send_frame (self->ctx, GST_VIDEO_FRAME_PLANE_DATA (&vframe, 0),
      GST_VIDEO_FRAME_WIDTH (&vframe), GST_VIDEO_FRAME_HEIGHT (&vframe),
      GST_VIDEO_FRAME_PLANE_STRIDE (&vframe, 0), (int64_t) meta->pts, meta);
  gst_video_frame_unmap (&vframe);
  gst_buffer_unref (buf);       /* the engine has encoded it: give the buffer back to upstream now */
  if (r < 0) {
    g_free (meta);              /* a refused frame is not the library's */
    post_library_error (self, r,
        g_strdup_printf ("TokenFlow %s frame %" G_GUINT64_FORMAT ": %s",
            r == TF_EINVAL ? "refused" : "could not take", self->frames_in, why (self->ctx, r)),
        g_strdup_printf ("tf_send_frame returned %d (%s)", r, tf_strerror (r)),
        GST_FUNCTION, __LINE__);
    gst_token_flow_reset_stream (self, EVENTS_DROP);
    return GST_FLOW_ERROR;
  }
  self->frames_in++;
  GST_LOG_OBJECT (self, "sent frame %" G_GUINT64_FORMAT ", pts %" GST_TIME_FORMAT,
      self->frames_in - 1, GST_TIME_ARGS (meta->pts));
  return gst_token_flow_push_ready (self);
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
      /* Never the stream lock here: an edit holds it for as long as it takes. */
      GST_OBJECT_LOCK (self);
      window = self->window;
      fps_n = self->fps_n;
      fps_d = self->fps_d;
      GST_OBJECT_UNLOCK (self);
      if (window == 0) {
        max = GST_CLOCK_TIME_NONE;      /* the whole stream: unbounded */
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

/* Pushes a serialized event now, or queues it behind the frames that are in the engine. */
static gboolean
push_or_queue_event (GstTokenFlow * self, GstEvent * event)
{
  GstTokenFlowEvent *item;

  if (self->frames_out == self->frames_in && g_queue_is_empty (&self->events))
    return gst_pad_push_event (self->srcpad, event);
  item = g_new (GstTokenFlowEvent, 1);
  item->event = event;
  item->after = self->frames_in;
  g_queue_push_tail (&self->events, item);
  GST_LOG_OBJECT (self, "queued %s behind frame %" G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT
      " output)", GST_EVENT_TYPE_NAME (event), self->frames_in, self->frames_out);
  return TRUE;
}

static gboolean
gst_token_flow_sink_event (GstPad * pad, GstObject * parent, GstEvent * event)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (parent);
  GstFlowReturn ret;
  gboolean res;

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
      if (self->have_info && self->frames_in > 0
          && (GST_VIDEO_INFO_WIDTH (&info) != GST_VIDEO_INFO_WIDTH (&self->info)
              || GST_VIDEO_INFO_HEIGHT (&info) != GST_VIDEO_INFO_HEIGHT (&self->info))) {
        /* One stream has one frame size: end it (its frames are edited and pushed) before
         * switching. (Other changes, e.g. the frame rate, travel in order with the frames.) */
        GST_INFO_OBJECT (self, "frame size change: ending the stream of %" G_GUINT64_FORMAT
            " frames first", self->frames_in);
        ret = gst_token_flow_finish_stream (self);
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
      ret = gst_token_flow_finish_stream (self);
      if (ret != GST_FLOW_OK && ret != GST_FLOW_NOT_LINKED && ret != GST_FLOW_EOS) {
        gst_event_unref (event);
        return FALSE;
      }
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_FLUSH_START:
      /* Not serialized: an edit may be going on; it stops at its next progress callback. */
      g_atomic_int_set (&self->flushing, 1);
      return gst_pad_push_event (self->srcpad, event);
    case GST_EVENT_FLUSH_STOP:
      /* The stream lock is held here: the streaming thread has left chain. The stream is dropped
       * (its frames are never output); the next frame starts a new one. */
      res = gst_pad_push_event (self->srcpad, event);
      if (self->frames_in > 0) {
        GST_DEBUG_OBJECT (self, "flush: dropping a stream of %" G_GUINT64_FORMAT " frames (%"
            G_GUINT64_FORMAT " output)", self->frames_in, self->frames_out);
        /* After FLUSH_STOP went downstream: the sticky events (caps...) still queued must reach it,
         * upstream does not send them again. */
        gst_token_flow_reset_stream (self, EVENTS_PUSH_STICKY);
      }
      g_atomic_int_set (&self->flushing, 0);
      return res;
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
      self->have_info = FALSE;
      /* Validate the settings and load the model now, so a bad model fails the pipeline early. */
      if (!take_settings_snapshot (self) || !gst_token_flow_open (self))
        return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* Before chaining up: deactivating the pads waits for the streaming thread, which may be in an
       * edit (tf_get_frame); this makes it return at its next progress callback. */
      g_atomic_int_set (&self->stopping, 1);
      break;
    default:
      break;
  }

  ret = GST_ELEMENT_CLASS (gst_token_flow_parent_class)->change_state (element, transition);

  switch (transition) {
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      if (ret == GST_STATE_CHANGE_FAILURE)
        gst_token_flow_reset_stream (self, EVENTS_DROP);
      break;
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* Pads are inactive: no streaming thread left. */
      gst_token_flow_reset_stream (self, EVENTS_DROP);
      self->have_info = FALSE;
      tf_settings_free (&self->settings);       /* the properties may change in READY */
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

/* The option behind a property id, or NULL (after a warning) for an id that is not ours. */
static const GstTokenFlowSetting *
setting_for_property (GObject * object, guint prop_id, GParamSpec * pspec)
{
  if (prop_id == 0 || prop_id > gst_token_flow_n_settings
      || gst_token_flow_settings[prop_id - 1].pspec != pspec) {
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    return NULL;
  }
  return &gst_token_flow_settings[prop_id - 1];
}

/* Text properties (strings, sizes) have no range GObject could check: ask the library now, so a typo
 * shows up in the log when it is made. It still fails the pipeline at READY->PAUSED. */
static void
warn_if_refused (GstTokenFlow * self, const GstTokenFlowSetting * setting, const GValue * value)
{
  TFSettings *probe = NULL;
  const gchar *text;

  if (!G_VALUE_HOLDS_STRING (value) || (text = g_value_get_string (value)) == NULL)
    return;
  if (tf_settings_new (&probe) == TF_OK && tf_settings_set (probe, setting->option->name, text) < 0)
    GST_WARNING_OBJECT (self, "%s (will fail at READY->PAUSED)", why (NULL, TF_EINVAL));
  tf_settings_free (&probe);
}

static void
gst_token_flow_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);
  const GstTokenFlowSetting *setting = setting_for_property (object, prop_id, pspec);

  if (setting == NULL)
    return;
  GST_OBJECT_LOCK (self);
  g_value_copy (value, &self->values[prop_id - 1]);
  GST_OBJECT_UNLOCK (self);
  warn_if_refused (self, setting, value);
}

static void
gst_token_flow_get_property (GObject * object, guint prop_id, GValue * value, GParamSpec * pspec)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);

  if (setting_for_property (object, prop_id, pspec) == NULL)
    return;
  GST_OBJECT_LOCK (self);
  g_value_copy (&self->values[prop_id - 1], value);
  GST_OBJECT_UNLOCK (self);
}

/* "negative_prompt" -> "GstTokenFlowNegativePrompt": the name of the enum type of a CHOICE option. */
static gchar *
enum_type_name (const gchar * option_name)
{
  GString *name = g_string_new ("GstTokenFlow");
  gboolean upper = TRUE;
  const gchar *c;

  for (c = option_name; *c; c++) {
    if (!g_ascii_isalnum (*c)) {
      upper = TRUE;
      continue;
    }
    g_string_append_c (name, upper ? g_ascii_toupper (*c) : *c);
    upper = FALSE;
  }
  return g_string_free (name, FALSE);
}

/* The enum type of a CHOICE option, registered at run time from the table: value = the choice's index
 * (what the library also accepts), nick = the choice (what gst-launch and the library take), name = its
 * help (what gst-inspect shows beside it). 0 when the option has no choices. */
static GType
register_choice_enum (const TFOption * option)
{
  gchar *type_name = enum_type_name (option->name);
  GType type = g_type_from_name (type_name);
  GEnumValue *values;
  guint i, n = 0;

  if (type == 0 && option->choices != NULL) {
    while (option->choices[n] != NULL)
      n++;
    if (n > 0) {
      /* Kept for the life of the process, as a registered enum needs. */
      values = g_new0 (GEnumValue, n + 1);
      for (i = 0; i < n; i++) {
        const gchar *help = option->choice_help ? option->choice_help[i] : NULL;
        values[i].value = (gint) i;
        values[i].value_nick = option->choices[i];
        values[i].value_name = (help && help[0]) ? help : option->choices[i];
      }
      type = g_enum_register_static (g_intern_string (type_name), values);
    }
  }
  g_free (type_name);
  return type;
}

/* The option's default as an integer clamped to [min, max] (a GParamSpec refuses a default outside its
 * range; the library's own default is always inside). */
static gint64
int_default (const TFOption * option, gint64 min, gint64 max)
{
  const gchar *text = option->default_value ? option->default_value : "";
  gchar *end = NULL;
  gint64 v = g_ascii_strtoll (text, &end, 10);
  if (end == text || *end != '\0')
    GST_WARNING ("option %s: default \"%s\" is not an integer", option->name, text);
  return CLAMP (v, min, max);
}

/* A double range bound as a gint64 (saturating: 2^63 does not convert). */
static gint64
to_int64 (gdouble v)
{
  if (v >= 9223372036854775807.0)
    return G_MAXINT64;
  if (v <= -9223372036854775807.0)
    return G_MININT64;
  return (gint64) v;
}

/* The property standing for one option, or NULL (logged) when it cannot be made. Types this element
 * does not know (added to the library later) become string properties: the library parses text. */
static GParamSpec *
make_pspec (const TFOption * option)
{
  /* The name is canonicalised ('_' -> '-') and interned; the library's strings are static. */
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
  gchar *canonical = g_strdelimit (g_strdup (option->name), "_", '-');
  const gchar *name = g_intern_string (canonical);
  const gchar *help = option->help ? option->help : "";
  const gchar *def = option->default_value ? option->default_value : "";
  GParamSpec *pspec = NULL;

  g_free (canonical);
  if (!g_param_spec_is_valid_name (name)) {
    GST_WARNING ("option \"%s\" is not a valid property name: not installed", option->name);
    return NULL;
  }
  switch (option->type) {
    case TF_OPTION_INT:
      if (option->min >= G_MININT && option->max <= G_MAXINT) {
        gint min = (gint) option->min, max = (gint) option->max;
        pspec = g_param_spec_int (name, name, help, min, max, (gint) int_default (option, min, max),
            flags);
      } else {
        gint64 min = to_int64 (option->min), max = to_int64 (option->max);
        pspec = g_param_spec_int64 (name, name, help, min, max, int_default (option, min, max),
            flags);
      }
      break;
    case TF_OPTION_FLOAT:{
      gdouble v = g_ascii_strtod (def, NULL);
      pspec = g_param_spec_double (name, name, help, option->min, option->max,
          CLAMP (v, option->min, option->max), flags);
      break;
    }
    case TF_OPTION_CHOICE:{
      GType type = register_choice_enum (option);
      GEnumClass *klass;
      GEnumValue *v;

      if (type == 0) {
        GST_WARNING ("option %s has no choices: not installed", option->name);
        return NULL;
      }
      klass = g_type_class_ref (type);
      v = g_enum_get_value_by_nick (klass, def);
      if (v == NULL)            /* the library also takes a choice by its index */
        v = g_enum_get_value (klass, (gint) g_ascii_strtoll (def, NULL, 10));
      if (v == NULL)
        GST_WARNING ("option %s: default \"%s\" is not a choice", option->name, def);
      pspec = g_param_spec_enum (name, name, help, type, v ? v->value : klass->minimum, flags);
      g_type_class_unref (klass);
      gst_type_mark_as_plugin_api (type, 0);
      break;
    }
    case TF_OPTION_STRING:
    case TF_OPTION_SIZE:
    default:
      pspec = g_param_spec_string (name, name, help, def, flags);
      break;
  }
  if (pspec == NULL)
    GST_WARNING ("option %s: could not make a property of it", option->name);
  return pspec;
}

/* ------------------------------------------------------------------------------------------------ */
/* GObject                                                                                          */

static void
gst_token_flow_finalize (GObject * object)
{
  GstTokenFlow *self = GST_TOKEN_FLOW (object);
  guint i;

  gst_token_flow_reset_stream (self, EVENTS_DROP);
  tf_settings_free (&self->settings);
  g_free (self->model);
  for (i = 0; i < gst_token_flow_n_settings; i++) {
    if (G_IS_VALUE (&self->values[i]))
      g_value_unset (&self->values[i]);
  }
  g_free (self->values);
  g_free (self->last_refusal);
  G_OBJECT_CLASS (gst_token_flow_parent_class)->finalize (object);
}

static void
gst_token_flow_init (GstTokenFlow * self)
{
  guint i;

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

  /* Every property starts at the library's default (the pspec's default). */
  self->values = g_new0 (GValue, gst_token_flow_n_settings);
  for (i = 0; i < gst_token_flow_n_settings; i++) {
    GParamSpec *pspec = gst_token_flow_settings[i].pspec;
    if (pspec == NULL)
      continue;
    g_value_init (&self->values[i], G_PARAM_SPEC_VALUE_TYPE (pspec));
    g_param_value_set_default (pspec, &self->values[i]);
  }
  g_queue_init (&self->events);
}

static void
gst_token_flow_class_init (GstTokenFlowClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  guint i;

  gobject_class->set_property = gst_token_flow_set_property;
  gobject_class->get_property = gst_token_flow_get_property;
  gobject_class->finalize = gst_token_flow_finalize;

  /* One property per library option, in the table's order; property id = index + 1. */
  while (tf_option ((int) gst_token_flow_n_settings) != NULL)
    gst_token_flow_n_settings++;
  gst_token_flow_settings = g_new0 (GstTokenFlowSetting, gst_token_flow_n_settings);
  for (i = 0; i < gst_token_flow_n_settings; i++) {
    GstTokenFlowSetting *setting = &gst_token_flow_settings[i];
    GParamSpec *pspec;

    setting->option = tf_option ((int) i);
    pspec = make_pspec (setting->option);
    if (pspec == NULL)
      continue;
    /* An option named like an inherited property ("name", "parent") would clash with it. */
    if (g_object_class_find_property (gobject_class, g_param_spec_get_name (pspec)) != NULL) {
      GST_WARNING ("option %s clashes with an existing property: not installed",
          setting->option->name);
      g_param_spec_sink (pspec);
      continue;
    }
    setting->pspec = pspec;
    g_object_class_install_property (gobject_class, i + 1, pspec);
  }

  gst_element_class_set_static_metadata (element_class, "TokenFlow video editor",
      "Filter/Effect/Video",
      "Text-driven, temporally consistent video editing with a frozen Stable Diffusion model "
      "(TokenFlow), on the CPU",
      "TokenFlow engine developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_token_flow_change_state);
}

/* ------------------------------------------------------------------------------------------------ */
/* Plugin                                                                                           */

static gboolean
plugin_init (GstPlugin * plugin)
{
  GST_DEBUG_CATEGORY_INIT (gst_token_flow_debug, "tokenflow", 0, "TokenFlow video editing");
  /* Before 1.0 a minor version may change the ABI (tokenflow.h), so 0.x needs the same minor too. */
  if ((tf_version () >> 16) != TOKENFLOW_VERSION_MAJOR || (TOKENFLOW_VERSION_MAJOR == 0
          && ((tf_version () >> 8) & 0xff) != TOKENFLOW_VERSION_MINOR)) {
    GST_ERROR ("libtokenflow %s is loaded, this plugin was built for %s (the ABI differs)",
        tf_version_string (), GST_TOKENFLOW_PLUGIN_VERSION);
    return FALSE;
  }
  GST_INFO ("libtokenflow %s", tf_version_string ());
  return gst_element_register (plugin, "tokenflow", GST_RANK_NONE, GST_TYPE_TOKEN_FLOW);
}

#ifndef PACKAGE
#define PACKAGE "tokenflow"
#endif

/* The project is MIT-licensed; "MIT/X11" is GStreamer's name for the MIT licence (a plain "MIT" is
 * logged as an unknown licence when the plugin is loaded). */
GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, tokenflow,
    "TokenFlow text-driven video editing (libtokenflow)", plugin_init,
    GST_TOKENFLOW_PLUGIN_VERSION, "MIT/X11", PACKAGE, "TokenFlow engine, Examples/gstreamer")
