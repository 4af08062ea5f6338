/*
 * gst_harness_test.c - unit tests of the GStreamer element "tokenflow" with GstHarness (gstcheck) and
 * small pipelines. Each test runs in a child process (a crash is a FAIL, not the end of the run) and
 * prints "PASS <name>" / "FAIL <name>"; the exit status is non-zero when a test failed.
 *
 *   GST_PLUGIN_PATH=.build/gstreamer gst_harness_test MODEL_DIR [TEST...]
 *
 * Frames are edited for real by libtokenflow with MODEL_DIR (a tiny model: steps=2, inversion-steps=2,
 * size=input). The tests that compare with the C API, and the one that checks the properties against
 * the library's table of settings (tf_option), link libtokenflow directly.
 * NULL-during-run clip size: $GST_TF_NULL_FRAMES, $GST_TF_NULL_SIZE (WxH), $GST_TF_NULL_STEPS.
 */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <tokenflow.h>

static const char *model_dir;
static int failures;

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
      fprintf (stderr, "  check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf (stderr, __VA_ARGS__); \
      fprintf (stderr, "\n"); \
      failures++; \
      return; \
    } \
  } while (0)

static GstStaticPadTemplate harness_src = GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC,
    GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);
static GstStaticPadTemplate harness_sink = GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK,
    GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

#define FPS 10
#define FRAME_DURATION (GST_SECOND / FPS)

static gchar *
rgb_caps (int width, int height)
{
  return g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,framerate=%d/1", width, height,
      FPS);
}

/* Deterministic test picture number i (gradients that move with i). */
static void
fill_pixel (int i, int x, int y, guint8 * p)
{
  p[0] = (guint8) (x * 5 + i * 7);
  p[1] = (guint8) (y * 9 + i * 3);
  p[2] = (guint8) ((x + y) * 4 + i);
}

static GstBuffer *
make_frame (int width, int height, int i, GstClockTime pts)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  GstBuffer *buf;
  int x, y;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, width, height);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_buffer_memset (buf, 0, 0xAA, GST_VIDEO_INFO_SIZE (&info));        /* row padding: junk */
  gst_video_frame_map (&frame, &info, buf, GST_MAP_WRITE);
  for (y = 0; y < height; y++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    for (x = 0; x < width; x++)
      fill_pixel (i, x, y, row + 3 * x);
  }
  gst_video_frame_unmap (&frame);
  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = FRAME_DURATION;
  GST_BUFFER_OFFSET (buf) = i;
  GST_BUFFER_OFFSET_END (buf) = i + 1;
  return buf;
}

/* Packed (stride 3*width) copy of a frame buffer's pixels. */
static guint8 *
packed_pixels (GstBuffer * buf, int width, int height)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  guint8 *out = g_malloc ((gsize) width * height * 3);
  int y;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, width, height);
  if (!gst_video_frame_map (&frame, &info, buf, GST_MAP_READ)) {
    g_free (out);
    return NULL;
  }
  for (y = 0; y < height; y++)
    memcpy (out + (gsize) y * width * 3, (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), (gsize) width * 3);
  gst_video_frame_unmap (&frame);
  return out;
}

/* A CAPS event from a caps string (gst_event_new_caps takes its own reference). */
static GstEvent *
caps_event (const char *str)
{
  GstCaps *caps = gst_caps_from_string (str);
  GstEvent *ev = gst_event_new_caps (caps);
  gst_caps_unref (caps);
  return ev;
}

static GstElement *
make_element (gint window)
{
  GstElement *e = gst_element_factory_make ("tokenflow", NULL);
  if (e == NULL)
    return NULL;
  g_object_set (e, "model", model_dir, "steps", 2, "inversion-steps", 2, "size", "input",
      "window", window, "prompt", "a watercolor painting", NULL);
  return e;
}

/* A harness around a configured element, with a bus on the element; caps = RGB width x height. */
static GstHarness *
make_harness (GstElement * e, GstBus ** bus, int width, int height)
{
  GstHarness *h = gst_harness_new_empty ();
  *bus = gst_bus_new ();
  gst_element_set_bus (e, *bus);
  gst_harness_add_element_full (h, e, &harness_src, "sink", &harness_sink, "src");
  if (width > 0) {
    gchar *caps = rgb_caps (width, height);
    gst_harness_set_src_caps_str (h, caps);
    g_free (caps);
  }
  return h;
}

static void
teardown (GstHarness * h, GstElement * e, GstBus * bus)
{
  gst_harness_teardown (h);
  gst_element_set_bus (e, NULL);
  gst_object_unref (e);
  gst_object_unref (bus);
}

/* Pops every message of the given types; returns how many; *first gets a ref of the first one. */
static int
drain_bus (GstBus * bus, GstMessageType types, GstMessage ** first)
{
  GstMessage *m;
  int n = 0;
  if (first)
    *first = NULL;
  while ((m = gst_bus_pop_filtered (bus, types)) != NULL) {
    if (first && *first == NULL)
      *first = gst_message_ref (m);
    n++;
    gst_message_unref (m);
  }
  return n;
}

/* Checks the tokenflow-progress messages of one stage: each has completed <= total and step <= steps;
 * returns how many there were, and *max_steps the largest `steps`. */
static int
check_progress (GstBus * bus, const char *stage, int *max_steps, gboolean * consistent)
{
  GstMessage *m;
  int n = 0;
  *max_steps = 0;
  *consistent = TRUE;
  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT)) != NULL) {
    const GstStructure *s = gst_message_get_structure (m);
    int completed = -1, total = -1, step = -1, steps = -1;
    if (gst_structure_has_name (s, "tokenflow-progress")
        && g_strcmp0 (gst_structure_get_string (s, "stage"), stage) == 0) {
      n++;
      *consistent &= gst_structure_get_int (s, "completed", &completed)
          && gst_structure_get_int (s, "total", &total) && gst_structure_get_int (s, "step", &step)
          && gst_structure_get_int (s, "steps", &steps) && completed >= 0 && completed <= total
          && step >= 0 && step <= steps;
      *max_steps = MAX (*max_steps, steps);
    }
    gst_message_unref (m);
  }
  return n;
}

static gboolean
bus_has_error (GstBus * bus, gchar ** text)
{
  GstMessage *m = NULL;
  if (drain_bus (bus, GST_MESSAGE_ERROR, &m) == 0)
    return FALSE;
  if (text) {
    GError *err = NULL;
    gst_message_parse_error (m, &err, NULL);
    *text = g_strdup (err->message);
    g_error_free (err);
  }
  gst_message_unref (m);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------------ */

/* window=4, 10 frames: nothing before a window is full, 4 frames after pushes 4 and 8, the last 2 at
 * EOS (then EOS); original pts/duration/offset; pixels edited; progress messages posted. */
static void
test_window_and_eos (void)
{
  const int w = 64, hgt = 48, n = 10;
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  int i, pulled = 0, changed = 0;

  CHECK (e != NULL, "no tokenflow element (GST_PLUGIN_PATH?)");
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < n; i++) {
    GstFlowReturn ret = gst_harness_push (h, make_frame (w, hgt, i, i * FRAME_DURATION));
    CHECK (ret == GST_FLOW_OK, "push %d: %s", i, gst_flow_get_name (ret));
    guint expected = (i + 1) % 4 == 0 ? 4 : 0;
    CHECK (gst_harness_buffers_in_queue (h) == expected, "after push %d: %u buffers out, want %u",
        i, gst_harness_buffers_in_queue (h), expected);
    while (gst_harness_buffers_in_queue (h) > 0) {
      GstBuffer *out = gst_harness_pull (h);
      GstBuffer *in = make_frame (w, hgt, pulled, pulled * FRAME_DURATION);
      guint8 *a = packed_pixels (out, w, hgt), *b = packed_pixels (in, w, hgt);
      CHECK (GST_BUFFER_PTS (out) == (GstClockTime) pulled * FRAME_DURATION, "frame %d pts %" GST_TIME_FORMAT,
          pulled, GST_TIME_ARGS (GST_BUFFER_PTS (out)));
      CHECK (GST_BUFFER_DURATION (out) == FRAME_DURATION, "frame %d duration", pulled);
      CHECK (GST_BUFFER_OFFSET (out) == (guint64) pulled, "frame %d offset", pulled);
      CHECK (gst_buffer_get_size (out) == gst_buffer_get_size (in), "frame %d size", pulled);
      changed += memcmp (a, b, (gsize) w * hgt * 3) != 0;
      g_free (a);
      g_free (b);
      gst_buffer_unref (in);
      gst_buffer_unref (out);
      pulled++;
    }
  }
  CHECK (pulled == 8, "%d frames out before EOS", pulled);
  CHECK (gst_harness_push_event (h, gst_event_new_eos ()), "EOS refused");
  CHECK (gst_harness_buffers_in_queue (h) == 2, "%u frames out at EOS, want 2",
      gst_harness_buffers_in_queue (h));
  for (i = 0; i < 2; i++) {
    GstBuffer *out = gst_harness_pull (h);
    CHECK (GST_BUFFER_PTS (out) == (GstClockTime) (8 + i) * FRAME_DURATION, "pts after EOS");
    gst_buffer_unref (out);
  }
  {
    GstEvent *ev;
    gboolean eos = FALSE;
    while ((ev = gst_harness_try_pull_event (h)) != NULL) {
      eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
      gst_event_unref (ev);
    }
    CHECK (eos, "EOS not forwarded");
  }
  CHECK (changed == 8, "only %d of 8 frames differ from the input", changed);
  {
    int steps = 0;
    gboolean consistent = FALSE;
    CHECK (check_progress (bus, "sampling", &steps, &consistent) > 0,
        "no tokenflow-progress sampling messages");
    CHECK (consistent, "a sampling message lacks completed/total/step/steps or is out of range");
    CHECK (steps == 2, "sampling messages say steps=%d, the element was set to steps=2", steps);
  }
  CHECK (!bus_has_error (bus, NULL), "error posted");
  teardown (h, e, bus);
}

/* Input buffers go back to upstream right away: a pool of 2 buffers feeds a window of 4 without
 * ever waiting (decoders with bounded pools must not starve). */
static void
test_releases_input_buffers (void)
{
  const int w = 64, hgt = 48;
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  GstBufferPool *pool = gst_video_buffer_pool_new ();
  GstStructure *config = gst_buffer_pool_get_config (pool);
  GstBufferPoolAcquireParams params = {.flags = GST_BUFFER_POOL_ACQUIRE_FLAG_DONTWAIT };
  GstVideoInfo info;
  gchar *caps_str = rgb_caps (w, hgt);
  GstCaps *caps = gst_caps_from_string (caps_str);
  int i;

  CHECK (e != NULL, "no element");
  gst_video_info_from_caps (&info, caps);
  gst_buffer_pool_config_set_params (config, caps, GST_VIDEO_INFO_SIZE (&info), 2, 2);
  CHECK (gst_buffer_pool_set_config (pool, config), "pool config");
  CHECK (gst_buffer_pool_set_active (pool, TRUE), "pool active");
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < 6; i++) {
    GstBuffer *buf = NULL, *frame = make_frame (w, hgt, i, i * FRAME_DURATION);
    GstFlowReturn ret = gst_buffer_pool_acquire_buffer (pool, &buf, &params);
    CHECK (ret == GST_FLOW_OK, "frame %d: pool exhausted (%s): input buffers are held",
        i, gst_flow_get_name (ret));
    gst_buffer_copy_into (buf, frame, GST_BUFFER_COPY_METADATA, 0, -1);
    {
      GstMapInfo src;
      gst_buffer_map (frame, &src, GST_MAP_READ);
      gst_buffer_fill (buf, 0, src.data, src.size);
      gst_buffer_unmap (frame, &src);
    }
    gst_buffer_unref (frame);
    ret = gst_harness_push (h, buf);
    CHECK (ret == GST_FLOW_OK, "push %d: %s", i, gst_flow_get_name (ret));
  }
  CHECK (gst_harness_buffers_in_queue (h) == 4, "%u out", gst_harness_buffers_in_queue (h));
  teardown (h, e, bus);
  gst_buffer_pool_set_active (pool, FALSE);
  gst_object_unref (pool);
  gst_caps_unref (caps);
  g_free (caps_str);
}

/* window=0: everything is held until EOS. */
static void
test_window_zero (void)
{
  const int w = 32, hgt = 24;
  GstBus *bus;
  GstElement *e = make_element (0);
  GstHarness *h;
  int i;

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < 6; i++)
    CHECK (gst_harness_push (h, make_frame (w, hgt, i, i * FRAME_DURATION)) == GST_FLOW_OK, "push");
  CHECK (gst_harness_buffers_in_queue (h) == 0, "output before EOS");
  gst_harness_push_event (h, gst_event_new_eos ());
  CHECK (gst_harness_buffers_in_queue (h) == 6, "%u out at EOS", gst_harness_buffers_in_queue (h));
  teardown (h, e, bus);
}

/* A flush in the middle of a window drops the stream (its frames never come out); the next frames start
 * a new stream, whose first window of 4 comes out after 4 frames. A caps change (same size) queued
 * behind the dropped frames still reaches downstream: upstream does not send it again. */
static void
test_flush_drops_queue (void)
{
  const int w = 64, hgt = 48;
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  GstSegment segment;
  int i;

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < 3; i++)
    CHECK (gst_harness_push (h, make_frame (w, hgt, i, i * FRAME_DURATION)) == GST_FLOW_OK, "push");
  CHECK (gst_harness_push_event (h,
          caps_event ("video/x-raw,format=RGB,width=64,height=48,framerate=20/1")), "caps");
  CHECK (gst_harness_push_event (h, gst_event_new_flush_start ()), "flush-start");
  CHECK (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)), "flush-stop");
  gst_segment_init (&segment, GST_FORMAT_TIME);
  segment.start = 10 * GST_SECOND;
  CHECK (gst_harness_push_event (h, gst_event_new_segment (&segment)), "segment");
  CHECK (gst_harness_buffers_in_queue (h) == 0, "frames out after flush");
  for (i = 0; i < 4; i++) {
    GstFlowReturn ret = gst_harness_push (h, make_frame (w, hgt, 100 + i,
            10 * GST_SECOND + i * FRAME_DURATION));
    CHECK (ret == GST_FLOW_OK, "push after flush: %s", gst_flow_get_name (ret));
  }
  CHECK (gst_harness_buffers_in_queue (h) == 4, "%u frames out, want the 4 pushed after the flush",
      gst_harness_buffers_in_queue (h));
  for (i = 0; i < 4; i++) {
    GstBuffer *out = gst_harness_pull (h);
    CHECK (GST_BUFFER_PTS (out) == 10 * GST_SECOND + (GstClockTime) i * FRAME_DURATION, "pts %" GST_TIME_FORMAT,
        GST_TIME_ARGS (GST_BUFFER_PTS (out)));
    gst_buffer_unref (out);
  }
  {
    GstCaps *caps = gst_pad_get_current_caps (h->sinkpad);
    GstStructure *st = caps ? gst_caps_get_structure (caps, 0) : NULL;
    gchar *str = caps ? gst_caps_to_string (caps) : g_strdup ("none");
    gint fps_n = 0, fps_d = 0;
    CHECK (st && gst_structure_get_fraction (st, "framerate", &fps_n, &fps_d) && fps_n == 20
        && fps_d == 1, "downstream caps %s, want the framerate 20/1 that was queued behind the "
        "dropped frames", str);
    g_free (str);
    gst_caps_unref (caps);
  }
  gst_harness_push_event (h, gst_event_new_eos ());
  CHECK (gst_harness_buffers_in_queue (h) == 0, "pre-flush frames came out at EOS");
  CHECK (!bus_has_error (bus, NULL), "error posted");
  teardown (h, e, bus);
}

/* Caps the element cannot handle are refused, with a warning naming the format and the fix. */
static void
refuse_caps (const char *caps_str, const char *format)
{
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  GstMessage *m = NULL;
  GError *err = NULL;
  GstFlowReturn ret;

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, 0, 0);
  /* A sticky event is stored on the harness pad even when the peer refuses it, so the push
   * returns TRUE; the refusal shows when data follows. */
  gst_harness_push_event (h, caps_event (caps_str));
  {
    GstSegment segment;
    gst_segment_init (&segment, GST_FORMAT_TIME);
    gst_harness_push_event (h, gst_event_new_segment (&segment));
  }
  ret = gst_harness_push (h, gst_buffer_new_allocate (NULL, 64 * 48 * 2, NULL));
  CHECK (ret == GST_FLOW_NOT_NEGOTIATED, "push returned %s", gst_flow_get_name (ret));
  CHECK (drain_bus (bus, GST_MESSAGE_WARNING | GST_MESSAGE_ERROR, &m) >= 1, "no message on the bus");
  if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING)
    gst_message_parse_warning (m, &err, NULL);
  else
    gst_message_parse_error (m, &err, NULL);
  fprintf (stderr, "  message: %s\n", err->message);
  CHECK (strstr (err->message, "RGB") && strstr (err->message, format)
      && strstr (err->message, "videoconvert"), "unclear message: %s", err->message);
  g_error_free (err);
  gst_message_unref (m);
  CHECK (gst_harness_buffers_in_queue (h) == 0, "output");
  teardown (h, e, bus);
}

static void
test_refuse_gray8 (void)
{
  refuse_caps ("video/x-raw,format=GRAY8,width=64,height=48,framerate=10/1", "GRAY8");
}

static void
test_refuse_i420 (void)
{
  refuse_caps ("video/x-raw,format=I420,width=64,height=48,framerate=10/1", "I420");
}

/* Records the order of buffers and selected events leaving the element. */
static GstPadProbeReturn
record_probe (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  GString *log = user_data;
  if (GST_PAD_PROBE_INFO_TYPE (info) & GST_PAD_PROBE_TYPE_BUFFER) {
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER (info);
    g_string_append_printf (log, "b%" G_GUINT64_FORMAT " ", GST_BUFFER_OFFSET (b));
  } else if (GST_PAD_PROBE_INFO_TYPE (info) & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    GstEvent *ev = GST_PAD_PROBE_INFO_EVENT (info);
    if (GST_EVENT_TYPE (ev) == GST_EVENT_CAPS) {
      GstVideoInfo vi;
      GstCaps *caps;
      gst_event_parse_caps (ev, &caps);
      gst_video_info_from_caps (&vi, caps);
      g_string_append_printf (log, "caps%dx%d ", GST_VIDEO_INFO_WIDTH (&vi),
          GST_VIDEO_INFO_HEIGHT (&vi));
    } else if (GST_EVENT_TYPE (ev) == GST_EVENT_CUSTOM_DOWNSTREAM) {
      g_string_append (log, "marker ");
    } else if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS) {
      g_string_append (log, "eos");
    }
  }
  return GST_PAD_PROBE_OK;
}

/* Serialized events keep their place between frames; a size change edits the queued frames first. */
static void
test_event_order_and_caps_change (void)
{
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  GString *log = g_string_new ("");
  GstPad *src;
  gchar *caps;
  const char *want = "b0 marker b1 caps48x32 b2 b3 b4 b5 b6 eos";

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, 64, 48);
  src = gst_element_get_static_pad (e, "src");
  gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
      record_probe, log, NULL);
  gst_object_unref (src);
  gst_harness_push (h, make_frame (64, 48, 0, 0));
  gst_harness_push_event (h, gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
          gst_structure_new_empty ("marker")));
  gst_harness_push (h, make_frame (64, 48, 1, FRAME_DURATION));
  CHECK (gst_harness_buffers_in_queue (h) == 0, "early output");
  caps = rgb_caps (48, 32);
  CHECK (gst_harness_push_event (h, caps_event (caps)),
      "caps change refused");
  g_free (caps);
  CHECK (gst_harness_buffers_in_queue (h) == 2, "caps change did not edit the 2 queued frames");
  for (int i = 2; i < 7; i++)
    gst_harness_push (h, make_frame (48, 32, i, i * FRAME_DURATION));
  gst_harness_push_event (h, gst_event_new_eos ());
  CHECK (gst_harness_buffers_in_queue (h) == 7, "%u frames out", gst_harness_buffers_in_queue (h));
  for (int i = 0; i < 7; i++) {
    GstBuffer *out = gst_harness_pull (h);
    gsize want_size = i < 2 ? 64 * 48 * 3 : 48 * 32 * 3;
    CHECK (gst_buffer_get_size (out) == want_size, "frame %d size %zu", i,
        gst_buffer_get_size (out));
    gst_buffer_unref (out);
  }
  fprintf (stderr, "  order: %s\n", log->str);
  CHECK (strstr (log->str, want) != NULL, "order \"%s\", want \"%s\"", log->str, want);
  CHECK (!bus_has_error (bus, NULL), "error posted");
  g_string_free (log, TRUE);
  teardown (h, e, bus);
}

/* The C API's edit of the n frames make_frame gives, with settings s (freed here), streamed as the
 * element streams them (one context; after each frame every frame tf_get_frame gives; then the end of
 * the stream and the rest): n packed frames in *edited (g_free each and the array). */
static void
c_api_stream (TFSettings * s, int w, int hgt, int n, guint8 *** edited)
{
  TFContext *ctx = NULL;
  const TFFrame *f;
  int i, r = tf_open (&ctx, s), out = 0;

  *edited = g_new0 (guint8 *, n);
  tf_settings_free (&s);
  CHECK (r == TF_OK, "tf_open: %s", tf_last_error (NULL));
  for (i = 0; i <= n; i++) {
    if (i < n) {
      GstBuffer *in = make_frame (w, hgt, i, i * FRAME_DURATION);
      guint8 *packed = packed_pixels (in, w, hgt);
      r = tf_send_frame (ctx, packed, w, hgt, w * 3, i * (int64_t) FRAME_DURATION, NULL);
      g_free (packed);
      gst_buffer_unref (in);
      CHECK (r == TF_OK, "tf_send_frame: %s", tf_last_error (ctx));
    } else {
      CHECK (tf_end_of_stream (ctx) == TF_OK, "tf_end_of_stream: %s", tf_last_error (ctx));
    }
    while ((r = tf_get_frame (ctx, &f)) == TF_OK) {
      CHECK (out < n && f->pts == out * (int64_t) FRAME_DURATION, "C API frame %d: pts %" G_GINT64_FORMAT,
          out, (gint64) f->pts);
      (*edited)[out] = g_malloc ((gsize) w * hgt * 3);
      for (int y = 0; y < hgt; y++)
        memcpy ((*edited)[out] + (gsize) y * w * 3, f->data + y * f->stride, (gsize) w * 3);
      out++;
    }
    CHECK (r == TF_EAGAIN, "tf_get_frame: %s", tf_last_error (ctx));
  }
  tf_close (&ctx);
  CHECK (out == n, "the C API gave %d of %d frames", out, n);
}

/* The n buffers in out (unreffed here) equal the C API's streamed edit with settings s (freed here). */
static void
expect_buffers_equal_c_api (GstBuffer ** out, TFSettings * s, int w, int hgt, int n)
{
  guint8 **edited = NULL;
  int i, before = failures;

  c_api_stream (s, w, hgt, n, &edited);
  for (i = 0; i < n && failures == before; i++) {
    guint8 *a = packed_pixels (out[i], w, hgt);
    for (int y = 0; y < hgt; y++)
      CHECK (memcmp (a + (gsize) y * w * 3, edited[i] + (gsize) y * w * 3, (gsize) w * 3) == 0,
          "frame %d row %d differs from the C API's with the same settings", i, y);
    g_free (a);
  }
  for (i = 0; i < n; i++) {
    g_free (edited[i]);
    gst_buffer_unref (out[i]);
  }
  g_free (edited);
}

/* The n buffers waiting in h equal the C API's streamed edit with settings s (freed here). */
static void
expect_output_equals_c_api (GstHarness * h, TFSettings * s, int w, int hgt, int n)
{
  GstBuffer **out = g_new0 (GstBuffer *, n);
  for (int i = 0; i < n; i++)
    out[i] = gst_harness_pull (h);
  expect_buffers_equal_c_api (out, s, w, hgt, n);
  g_free (out);
}

/* Odd width (row padding in GStreamer buffers): the element's output equals the C API's output for
 * the same frames and settings. */
static void
test_matches_c_api (void)
{
  const int w = 50, hgt = 30, n = 5;
  GstBus *bus;
  GstElement *e = make_element (0);
  GstHarness *h;
  TFSettings *s = NULL;
  int i;

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < n; i++)
    gst_harness_push (h, make_frame (w, hgt, i, i * FRAME_DURATION));
  gst_harness_push_event (h, gst_event_new_eos ());
  CHECK (gst_harness_buffers_in_queue (h) == (guint) n, "frames out");

  CHECK (tf_settings_new (&s) == TF_OK && tf_settings_set (s, "model", model_dir) == TF_OK
      && tf_settings_set (s, "prompt", "a watercolor painting") == TF_OK
      && tf_settings_set (s, "steps", "2") == TF_OK && tf_settings_set (s, "inversion_steps", "2") == TF_OK
      && tf_settings_set (s, "size", "input") == TF_OK, "settings: %s", tf_last_error (NULL));
  expect_output_equals_c_api (h, s, w, hgt, n);
  teardown (h, e, bus);
}

/* Whether this process has a file open in dir that is unlinked already ("DIR/... (deleted)"). */
static gboolean
unlinked_file_open_in (const char *dir)
{
  GDir *fds = g_dir_open ("/proc/self/fd", 0, NULL);
  gchar *prefix = g_strconcat (dir, "/", NULL);
  const gchar *name;
  gboolean found = FALSE;

  while (fds && !found && (name = g_dir_read_name (fds)) != NULL) {
    gchar *link = g_build_filename ("/proc/self/fd", name, NULL);
    gchar *target = g_file_read_link (link, NULL);
    found = target && g_str_has_prefix (target, prefix) && g_str_has_suffix (target, " (deleted)");
    g_free (target);
    g_free (link);
  }
  if (fds)
    g_dir_close (fds);
  g_free (prefix);
  return found;
}

/* The names in dir, space-separated ("" when empty). */
static gchar *
dir_listing (const char *dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  GString *names = g_string_new ("");
  const gchar *name;
  while (d && (name = g_dir_read_name (d)) != NULL)
    g_string_append_printf (names, "%s%s", names->len ? " " : "", name);
  if (d)
    g_dir_close (d);
  return g_string_free (names, FALSE);
}

/* A stream longer than the memory budget (latent_memory=0: every latent goes to the temporary file in
 * temp_dir), window=8, 40 frames: each window comes out when its 8th frame is pushed, long before EOS
 * (the first buffer after the 8th push); the frames keep their order, timestamps, offsets and flags;
 * the latents live in an unlinked file in temp_dir while the stream runs and nothing is left there (or
 * open) afterwards; the progress messages number the windows 0..4, 8 frames each; and the output equals
 * the C API's with the same settings streamed through one context (later windows are anchored to the
 * earlier ones, so a context per window would differ). */
static void
test_long_stream_windows (void)
{
  const int w = 32, hgt = 24, n = 40, window = 8;
  GError *err = NULL;
  gchar *dir = g_dir_make_tmp ("tokenflow-gst-XXXXXX", &err), *listing;
  GstElement *e = make_element (window);
  GstBuffer *out[40];
  GstBus *bus;
  GstHarness *h;
  GstMessage *m;
  GstEvent *ev;
  TFSettings *s = NULL;
  gboolean spilled = FALSE, eos = FALSE;
  guint windows_seen = 0;
  int i, pulled = 0, progress = 0, wrong_frames = 0;

  CHECK (dir != NULL, "temporary folder: %s", err ? err->message : "?");
  CHECK (e != NULL, "no tokenflow element (GST_PLUGIN_PATH?)");
  g_object_set (e, "latent-memory", 0, "temp-dir", dir, NULL);
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < n; i++) {
    GstBuffer *in = make_frame (w, hgt, i, i * FRAME_DURATION);
    GstFlowReturn ret;
    int want = (i + 1) / window * window;

    GST_BUFFER_DTS (in) = i * FRAME_DURATION + 1;
    GST_BUFFER_FLAG_SET (in, i == 0 ? GST_BUFFER_FLAG_DISCONT : GST_BUFFER_FLAG_DELTA_UNIT);
    ret = gst_harness_push (h, in);
    CHECK (ret == GST_FLOW_OK, "push %d: %s", i, gst_flow_get_name (ret));
    spilled |= unlinked_file_open_in (dir);
    while (gst_harness_buffers_in_queue (h) > 0 && pulled < n) {
      GstBuffer *b = out[pulled] = gst_harness_pull (h);
      CHECK (GST_BUFFER_PTS (b) == (GstClockTime) pulled * FRAME_DURATION
          && GST_BUFFER_DTS (b) == (GstClockTime) pulled * FRAME_DURATION + 1
          && GST_BUFFER_DURATION (b) == FRAME_DURATION && GST_BUFFER_OFFSET (b) == (guint64) pulled
          && GST_BUFFER_OFFSET_END (b) == (guint64) pulled + 1, "output %d: pts %" GST_TIME_FORMAT
          " offset %" G_GUINT64_FORMAT ", want frame %d's", pulled, GST_TIME_ARGS (GST_BUFFER_PTS (b)),
          GST_BUFFER_OFFSET (b), pulled);
      CHECK (GST_BUFFER_FLAG_IS_SET (b, GST_BUFFER_FLAG_DISCONT) == (pulled == 0)
          && GST_BUFFER_FLAG_IS_SET (b, GST_BUFFER_FLAG_DELTA_UNIT) == (pulled != 0),
          "output %d: flags 0x%x", pulled, GST_BUFFER_FLAGS (b));
      pulled++;
    }
    CHECK (pulled == want, "after push %d: %d frames out, want %d (a window comes out as soon as its "
        "last frame is pushed)", i, pulled, want);
  }
  printf ("INFO long-stream-windows: the first output buffer came after push %d of %d, before EOS\n",
      window, n);
  fflush (stdout);
  CHECK (spilled, "latent_memory=0, but no unlinked file was open in temp_dir %s while the stream ran",
      dir);
  CHECK (gst_harness_push_event (h, gst_event_new_eos ()), "EOS refused");
  CHECK (gst_harness_buffers_in_queue (h) == 0, "%u frames out at EOS, all 40 were out before",
      gst_harness_buffers_in_queue (h));
  while ((ev = gst_harness_try_pull_event (h)) != NULL) {
    eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  CHECK (eos, "EOS not forwarded");
  CHECK (!unlinked_file_open_in (dir), "the temporary file is still open after EOS");
  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT)) != NULL) {
    const GstStructure *st = gst_message_get_structure (m);
    gint win = -1;
    guint frames = 0;
    if (gst_structure_has_name (st, "tokenflow-progress")) {
      progress++;
      if (gst_structure_get_int (st, "window", &win) && win >= 0 && win < 32)
        windows_seen |= 1u << win;
      if (!gst_structure_get_uint (st, "frames", &frames) || frames != (guint) window)
        wrong_frames++;
    }
    gst_message_unref (m);
  }
  CHECK (progress > 0 && windows_seen == 0x1f, "progress messages for windows 0x%x, want 0..4 (0x1f)",
      windows_seen);
  CHECK (wrong_frames == 0, "%d progress messages without frames=%d", wrong_frames, window);
  CHECK (!bus_has_error (bus, NULL), "error posted");
  teardown (h, e, bus);
  listing = dir_listing (dir);
  CHECK (listing[0] == '\0', "temp_dir is not empty after the stream: %s", listing);
  g_free (listing);

  CHECK (tf_settings_new (&s) == TF_OK && tf_settings_set (s, "model", model_dir) == TF_OK
      && tf_settings_set (s, "prompt", "a watercolor painting") == TF_OK
      && tf_settings_set (s, "steps", "2") == TF_OK && tf_settings_set (s, "inversion_steps", "2") == TF_OK
      && tf_settings_set (s, "size", "input") == TF_OK && tf_settings_set (s, "window", "8") == TF_OK
      && tf_settings_set (s, "latent_memory", "0") == TF_OK && tf_settings_set (s, "temp_dir", dir) == TF_OK,
      "settings: %s", tf_last_error (NULL));
  expect_buffers_equal_c_api (out, s, w, hgt, n);
  g_rmdir (dir);
  g_free (dir);
}

/* With model unset, $TOKENFLOW_MODEL is used. */
static void
test_model_from_env (void)
{
  GstBus *bus;
  GstElement *e = make_element (2);
  GstHarness *h;

  CHECK (e != NULL, "no element");
  g_setenv ("TOKENFLOW_MODEL", model_dir, TRUE);
  g_object_set (e, "model", NULL, NULL);
  h = make_harness (e, &bus, 32, 24);
  gst_harness_push (h, make_frame (32, 24, 0, 0));
  gst_harness_push (h, make_frame (32, 24, 1, FRAME_DURATION));
  CHECK (gst_harness_buffers_in_queue (h) == 2, "no output with $TOKENFLOW_MODEL");
  teardown (h, e, bus);
}

/* A missing model fails READY->PAUSED with an error that names the folder (no crash). */
static void
test_missing_model (void)
{
  GError *err = NULL;
  GstElement *p = gst_parse_launch ("videotestsrc num-buffers=4 ! video/x-raw,width=64,height=48 "
      "! videoconvert ! video/x-raw,format=RGB ! tokenflow name=tf model=/nonexistent/sd-model "
      "! fakesink", &err);
  GstBus *bus;
  GstStateChangeReturn ret;
  GstMessage *m;

  CHECK (p != NULL, "parse: %s", err ? err->message : "?");
  bus = gst_element_get_bus (p);
  ret = gst_element_set_state (p, GST_STATE_PAUSED);
  CHECK (ret == GST_STATE_CHANGE_FAILURE, "state change returned %s",
      gst_element_state_change_return_get_name (ret));
  m = gst_bus_timed_pop_filtered (bus, 5 * GST_SECOND, GST_MESSAGE_ERROR);
  CHECK (m != NULL, "no error message");
  gst_message_parse_error (m, &err, NULL);
  fprintf (stderr, "  error: %s\n", err->message);
  CHECK (g_error_matches (err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND),
      "error domain/code %s/%d", g_quark_to_string (err->domain), err->code);
  CHECK (strstr (err->message, "/nonexistent/sd-model") != NULL, "message does not name the model");
  g_error_free (err);
  gst_message_unref (m);
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (p);
}

static int
env_int (const char *name, int fallback)
{
  const char *v = g_getenv (name);
  return v ? atoi (v) : fallback;
}

/* Setting the pipeline to NULL while the engine runs returns promptly (the run is cancelled). */
static void
test_null_during_run (void)
{
  int frames = env_int ("GST_TF_NULL_FRAMES", 16), steps = env_int ("GST_TF_NULL_STEPS", 10);
  const char *size = g_getenv ("GST_TF_NULL_SIZE") ? g_getenv ("GST_TF_NULL_SIZE") : "128x96";
  int width = 128, height = 96;
  gchar *desc;
  GError *err = NULL;
  GstElement *p;
  GstBus *bus;
  GstMessage *m;
  gint64 run_start = 0, now, t0, t1, deadline, last = 0, max_gap = 0;
  int completed = 0, total = 0;
  gboolean sampling = FALSE;

  sscanf (size, "%dx%d", &width, &height);
  desc = g_strdup_printf ("videotestsrc num-buffers=%d pattern=ball ! video/x-raw,width=%d,"
      "height=%d,framerate=10/1 ! videoconvert ! video/x-raw,format=RGB ! tokenflow model=%s "
      "window=0 steps=%d inversion-steps=%d size=input ! fakesink", frames, width, height,
      model_dir, steps, steps);
  p = gst_parse_launch (desc, &err);
  g_free (desc);
  CHECK (p != NULL, "parse: %s", err ? err->message : "?");
  bus = gst_element_get_bus (p);
  CHECK (gst_element_set_state (p, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE, "PLAYING");

  /* Wait until the run is well into sampling (after encoding and inversion: 3 sampling calls), and
   * note the longest interval between progress callbacks (the worst case for a cancel). */
  deadline = g_get_monotonic_time () + 600 * G_USEC_PER_SEC;
  while (!(sampling && completed >= 3) && (now = g_get_monotonic_time ()) < deadline) {
    m = gst_bus_timed_pop_filtered (bus, GST_SECOND, GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR
        | GST_MESSAGE_EOS);
    if (m == NULL)
      continue;
    if (GST_MESSAGE_TYPE (m) != GST_MESSAGE_ELEMENT) {
      gst_message_unref (m);
      CHECK (FALSE, "error or EOS before the run was under way");
    }
    const GstStructure *s = gst_message_get_structure (m);
    if (gst_structure_has_name (s, "tokenflow-progress")) {
      now = g_get_monotonic_time ();
      if (run_start == 0)
        run_start = now;
      if (last != 0 && now - last > max_gap)
        max_gap = now - last;
      last = now;
      gst_structure_get_int (s, "completed", &completed);
      gst_structure_get_int (s, "total", &total);
      sampling = g_strcmp0 (gst_structure_get_string (s, "stage"), "sampling") == 0;
    }
    gst_message_unref (m);
  }
  CHECK (sampling, "the run never reached sampling");

  t0 = g_get_monotonic_time ();
  gst_element_set_state (p, GST_STATE_NULL);
  t1 = g_get_monotonic_time ();
  {
    double ms = (t1 - t0) / 1000.0, ran = (t0 - run_start) / 1e6;
    fprintf (stderr, "  %d frames %dx%d, steps %d: set_state(NULL) took %.1f ms, %.2f s into the "
        "run (sampling %d/%d)\n", frames, width, height, steps, ms, ran, completed, total);
    printf ("INFO null-during-run: set_state(NULL) returned in %.1f ms, %.2f s into the run "
        "(sampling call %d of %d; %d frames %dx%d, steps %d; longest interval between progress "
        "callbacks so far %.0f ms)\n", ms, ran, completed, total, frames, width, height, steps,
        max_gap / 1000.0);
    fflush (stdout);
    CHECK (ms < 2000.0, "set_state(NULL) took %.1f ms", ms);
  }
  CHECK (!bus_has_error (bus, NULL), "an error was posted for a cancelled run");
  gst_object_unref (bus);
  gst_object_unref (p);
}

/* Counts buffers through a pad; a FLUSH_STOP resets the count. */
static GstPadProbeReturn
count_probe (GstPad * pad, GstPadProbeInfo * info, gpointer user_data)
{
  gint *count = user_data;
  if (GST_PAD_PROBE_INFO_TYPE (info) & GST_PAD_PROBE_TYPE_BUFFER)
    g_atomic_int_inc (count);
  else if (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info)) == GST_EVENT_FLUSH_STOP)
    g_atomic_int_set (count, 0);
  return GST_PAD_PROBE_OK;
}

/* A flushing seek while the engine runs cancels the run promptly and drops its frames; the frames
 * after the seek are edited and come out; no error. */
static void
test_seek_during_run (void)
{
  /* Unbounded source: the first window's run blocks the streaming thread; the seek then ends the
   * stream at 0.8 s, i.e. after exactly one more window of 8 frames. */
  gchar *desc = g_strdup_printf ("videotestsrc pattern=ball ! video/x-raw,width=96,"
      "height=64,framerate=10/1 ! videoconvert ! video/x-raw,format=RGB ! tokenflow name=tf "
      "model=%s window=8 steps=10 inversion-steps=10 size=input ! fakesink name=sink", model_dir);
  GError *err = NULL;
  GstElement *p = gst_parse_launch (desc, &err), *tf, *sink;
  GstBus *bus;
  GstMessage *m;
  GstPad *pad;
  gint in = 0, out = 0;
  gboolean sampling = FALSE, eos = FALSE;
  gint64 t0, t1;

  g_free (desc);
  CHECK (p != NULL, "parse: %s", err ? err->message : "?");
  tf = gst_bin_get_by_name (GST_BIN (p), "tf");
  sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  pad = gst_element_get_static_pad (tf, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_FLUSH, count_probe,
      &in, NULL);
  gst_object_unref (pad);
  pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, count_probe, &out, NULL);
  gst_object_unref (pad);
  bus = gst_element_get_bus (p);
  CHECK (gst_element_set_state (p, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE, "PLAYING");
  while (!sampling && (m = gst_bus_timed_pop_filtered (bus, 300 * GST_SECOND,
              GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR | GST_MESSAGE_EOS)) != NULL) {
    gboolean other = GST_MESSAGE_TYPE (m) != GST_MESSAGE_ELEMENT;
    const GstStructure *s = gst_message_get_structure (m);
    sampling = !other && gst_structure_has_name (s, "tokenflow-progress")
        && g_strcmp0 (gst_structure_get_string (s, "stage"), "sampling") == 0;
    gst_message_unref (m);
    CHECK (!other, "error or EOS before the run was under way");
  }
  CHECK (sampling, "the run never reached sampling");
  CHECK (g_atomic_int_get (&out) == 0, "output before the first window was edited");

  t0 = g_get_monotonic_time ();
  CHECK (gst_element_seek (p, 1.0, GST_FORMAT_TIME, GST_SEEK_FLAG_FLUSH, GST_SEEK_TYPE_SET, 0,
          GST_SEEK_TYPE_SET, 8 * FRAME_DURATION), "seek refused");
  t1 = g_get_monotonic_time ();
  printf ("INFO seek-during-run: flushing seek returned in %.1f ms\n", (t1 - t0) / 1000.0);
  fflush (stdout);
  CHECK (t1 - t0 < 2 * G_USEC_PER_SEC, "seek took %.1f ms", (t1 - t0) / 1000.0);

  while (!eos && (m = gst_bus_timed_pop_filtered (bus, 300 * GST_SECOND,
              GST_MESSAGE_ERROR | GST_MESSAGE_EOS)) != NULL) {
    eos = GST_MESSAGE_TYPE (m) == GST_MESSAGE_EOS;
    gst_message_unref (m);
    CHECK (eos, "error after the seek");
  }
  CHECK (eos, "no EOS after the seek");
  fprintf (stderr, "  %d frames in after the seek, %d out\n", g_atomic_int_get (&in),
      g_atomic_int_get (&out));
  CHECK (g_atomic_int_get (&in) == 8 && g_atomic_int_get (&out) == 8,
      "%d frames in after the seek, %d out", g_atomic_int_get (&in), g_atomic_int_get (&out));
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (tf);
  gst_object_unref (sink);
  gst_object_unref (bus);
  gst_object_unref (p);
}

/* ------------------------------------------------------------------------------------------------ */
/* Settings                                                                                         */

/* Every option of the library's table is a property of the element with the option's name ('_' as
 * '-'), help, type, default, range and choices, and the element has no property of its own besides. */
static void
test_properties_from_table (void)
{
  GstElement *e = gst_element_factory_make ("tokenflow", NULL);
  GObjectClass *klass;
  GParamSpec **props;
  const TFOption *o;
  guint n_props, own = 0, options = 0, i;

  CHECK (e != NULL, "no tokenflow element (GST_PLUGIN_PATH?)");
  klass = G_OBJECT_GET_CLASS (e);
  for (options = 0; (o = tf_option ((int) options)) != NULL; options++) {
    gchar *name = g_strdelimit (g_strdup (o->name), "_", '-');
    GParamSpec *p = g_object_class_find_property (klass, name);
    const GValue *def;

    CHECK (p != NULL, "option %s: no property %s", o->name, name);
    CHECK (strcmp (g_param_spec_get_name (p), name) == 0, "option %s: property named %s", o->name,
        g_param_spec_get_name (p));
    CHECK (p->owner_type == G_OBJECT_TYPE (e), "property %s is inherited", name);
    CHECK (g_strcmp0 (g_param_spec_get_blurb (p), o->help) == 0, "property %s: help \"%s\", the "
        "library's \"%s\"", name, g_param_spec_get_blurb (p), o->help);
    CHECK ((p->flags & G_PARAM_READWRITE) == G_PARAM_READWRITE
        && (p->flags & GST_PARAM_MUTABLE_READY), "property %s: flags 0x%x", name, p->flags);
    def = g_param_spec_get_default_value (p);
    switch (o->type) {
      case TF_OPTION_INT:{
        gint64 min, max, d = g_ascii_strtoll (o->default_value, NULL, 10);
        if (G_IS_PARAM_SPEC_INT (p)) {
          min = G_PARAM_SPEC_INT (p)->minimum;
          max = G_PARAM_SPEC_INT (p)->maximum;
          CHECK (g_value_get_int (def) == d, "%s: default %d, the library's %s", name,
              g_value_get_int (def), o->default_value);
        } else {
          CHECK (G_IS_PARAM_SPEC_INT64 (p), "%s: %s property for an integer option", name,
              G_PARAM_SPEC_TYPE_NAME (p));
          CHECK (o->min < G_MININT || o->max > G_MAXINT, "%s: int64 though the range fits gint", name);
          min = G_PARAM_SPEC_INT64 (p)->minimum;
          max = G_PARAM_SPEC_INT64 (p)->maximum;
          CHECK (g_value_get_int64 (def) == d, "%s: default %" G_GINT64_FORMAT ", the library's %s",
              name, g_value_get_int64 (def), o->default_value);
        }
        CHECK ((double) min == o->min && (double) max == o->max, "%s: range %" G_GINT64_FORMAT
            "..%" G_GINT64_FORMAT ", the library's %.17g..%.17g", name, min, max, o->min, o->max);
        break;
      }
      case TF_OPTION_FLOAT:{
        GParamSpecDouble *pd;
        CHECK (G_IS_PARAM_SPEC_DOUBLE (p), "%s: %s property for a float option", name,
            G_PARAM_SPEC_TYPE_NAME (p));
        pd = G_PARAM_SPEC_DOUBLE (p);
        CHECK (pd->minimum == o->min && pd->maximum == o->max, "%s: range %.17g..%.17g, the "
            "library's %.17g..%.17g", name, pd->minimum, pd->maximum, o->min, o->max);
        CHECK (g_value_get_double (def) == g_ascii_strtod (o->default_value, NULL),
            "%s: default %.17g, the library's %s", name, g_value_get_double (def), o->default_value);
        break;
      }
      case TF_OPTION_CHOICE:{
        GEnumClass *ec;
        GEnumValue *v;
        guint c;
        CHECK (G_IS_PARAM_SPEC_ENUM (p), "%s: %s property for a choice option", name,
            G_PARAM_SPEC_TYPE_NAME (p));
        ec = G_PARAM_SPEC_ENUM (p)->enum_class;
        for (c = 0; o->choices[c] != NULL; c++) {
          v = g_enum_get_value (ec, (gint) c);
          CHECK (v != NULL && strcmp (v->value_nick, o->choices[c]) == 0,
              "%s: value %u is %s, the library's choice %s", name, c, v ? v->value_nick : "missing",
              o->choices[c]);
          CHECK (o->choice_help == NULL || strcmp (v->value_name, o->choice_help[c]) == 0,
              "%s=%s: help \"%s\", the library's \"%s\"", name, o->choices[c], v->value_name,
              o->choice_help[c]);
        }
        CHECK (ec->n_values == c, "%s: %u values, the library has %u choices", name, ec->n_values, c);
        v = g_enum_get_value (ec, g_value_get_enum (def));
        CHECK (v != NULL && strcmp (v->value_nick, o->default_value) == 0, "%s: default %s, the "
            "library's %s", name, v ? v->value_nick : "?", o->default_value);
        break;
      }
      default:                 /* strings, sizes, and any type added later: text */
        CHECK (G_IS_PARAM_SPEC_STRING (p), "%s: %s property for a text option", name,
            G_PARAM_SPEC_TYPE_NAME (p));
        CHECK (g_strcmp0 (g_value_get_string (def), o->default_value) == 0,
            "%s: default \"%s\", the library's \"%s\"", name, g_value_get_string (def),
            o->default_value);
        break;
    }
    /* A new element holds the default. */
    {
      GValue now = G_VALUE_INIT;
      g_value_init (&now, G_PARAM_SPEC_VALUE_TYPE (p));
      g_object_get_property (G_OBJECT (e), name, &now);
      CHECK (g_param_values_cmp (p, &now, def) == 0, "%s: a new element does not hold the default",
          name);
      g_value_unset (&now);
    }
    g_free (name);
  }
  CHECK (options > 0, "the library has no options");
  props = g_object_class_list_properties (klass, &n_props);
  for (i = 0; i < n_props; i++)
    own += props[i]->owner_type == G_OBJECT_TYPE (e);
  g_free (props);
  CHECK (own == options, "the element has %u properties of its own, the library %u options", own,
      options);
  printf ("INFO properties-from-table: %u options, %u properties\n", options, own);
  fflush (stdout);
  gst_object_unref (e);
}

/* Settings of every kind (choice, float, large integer, integer, string) are handed to the library as
 * the text a C host would set: with the same values the element's output equals the C API's. The
 * names are given with '_' as in the library (GObject takes either spelling), the values as text
 * (as gst-launch does). Runs with a decimal comma in LC_NUMERIC when such a locale is installed
 * ($LOCPATH), so a locale-dependent number format would show. */
static void
test_settings_match_c_api (void)
{
  static const char *const settings[][2] = {
    {"prompt", "a watercolor painting"}, {"size", "input"}, {"method", "sdedit"},
    {"strength", "0.7"}, {"guidance", "3.3"}, {"seed", "4000000000"}, {"batch_size", "2"},
    {"negative_prompt", "dark, blurry"}, {"steps", "4"}, {"inversion_steps", "4"},
  };
  const int w = 40, hgt = 24, n = 5;
  GstBus *bus;
  GstElement *e = gst_element_factory_make ("tokenflow", NULL);
  GstHarness *h;
  TFSettings *s = NULL;
  gchar *error = NULL;
  const char *locale;
  size_t k;
  int i;

  CHECK (e != NULL, "no element");
  locale = setlocale (LC_NUMERIC, "de_DE.UTF-8");
  printf ("INFO settings-match-c-api: LC_NUMERIC %s (decimal point \"%s\")\n",
      locale ? locale : "C (de_DE.UTF-8 is not installed)", localeconv ()->decimal_point);
  fflush (stdout);
  CHECK (tf_settings_new (&s) == TF_OK && tf_settings_set (s, "model", model_dir) == TF_OK,
      "settings: %s", tf_last_error (NULL));
  g_object_set (e, "model", model_dir, NULL);
  for (k = 0; k < G_N_ELEMENTS (settings); k++) {
    CHECK (g_object_class_find_property (G_OBJECT_GET_CLASS (e), settings[k][0]) != NULL,
        "no property %s", settings[k][0]);
    gst_util_set_object_arg (G_OBJECT (e), settings[k][0], settings[k][1]);
    CHECK (tf_settings_set (s, settings[k][0], settings[k][1]) == TF_OK, "tf_settings_set %s=%s: %s",
        settings[k][0], settings[k][1], tf_last_error (NULL));
  }
  {
    /* The harness aborts when the element fails to start: say why first. */
    GstBus *probe = gst_bus_new ();
    gst_element_set_bus (e, probe);
    CHECK (gst_element_set_state (e, GST_STATE_PAUSED) == GST_STATE_CHANGE_SUCCESS,
        "the element refused the settings: %s", bus_has_error (probe, &error) ? error : "?");
    gst_element_set_state (e, GST_STATE_NULL);
    gst_element_set_bus (e, NULL);
    gst_object_unref (probe);
  }
  h = make_harness (e, &bus, w, hgt);
  for (i = 0; i < n; i++)
    gst_harness_push (h, make_frame (w, hgt, i, i * FRAME_DURATION));
  gst_harness_push_event (h, gst_event_new_eos ());
  CHECK (!bus_has_error (bus, &error), "error: %s", error);
  CHECK (gst_harness_buffers_in_queue (h) == (guint) n, "%u frames out",
      gst_harness_buffers_in_queue (h));

  expect_output_equals_c_api (h, s, w, hgt, n);
  teardown (h, e, bus);
}

/* A value the library refuses fails READY->PAUSED with a LIBRARY/SETTINGS error that names the
 * property and the value (and, in the library's words, what is allowed); no crash. */
static void
bad_setting (const char *property, const char *value)
{
  GstElement *e = make_element (4);
  GstBus *bus = gst_bus_new ();
  GstStateChangeReturn ret;
  GstMessage *m = NULL;
  GError *err = NULL;
  gchar *debug = NULL;

  CHECK (e != NULL, "no element");
  gst_element_set_bus (e, bus);
  gst_util_set_object_arg (G_OBJECT (e), property, value);
  ret = gst_element_set_state (e, GST_STATE_PAUSED);
  CHECK (ret == GST_STATE_CHANGE_FAILURE, "%s=%s: state change returned %s", property, value,
      gst_element_state_change_return_get_name (ret));
  CHECK (drain_bus (bus, GST_MESSAGE_ERROR, &m) == 1, "%s=%s: not exactly one error", property,
      value);
  gst_message_parse_error (m, &err, &debug);
  fprintf (stderr, "  %s=%s: %s (%s)\n", property, value, err->message, debug);
  CHECK (g_error_matches (err, GST_LIBRARY_ERROR, GST_LIBRARY_ERROR_SETTINGS),
      "error domain/code %s/%d", g_quark_to_string (err->domain), err->code);
  CHECK (strstr (err->message, property) != NULL && strstr (err->message, value) != NULL,
      "the message does not name the property and the value: %s", err->message);
  g_error_free (err);
  g_free (debug);
  gst_message_unref (m);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

static void
test_bad_settings (void)
{
  bad_setting ("size", "100x7");        /* not multiples of 8 */
  bad_setting ("size", "big");
}

/* The latency query adds one window of frames at the negotiated rate (the window is read back from
 * the library's settings); window=0 holds the whole stream: unbounded. */
static void
test_latency (void)
{
  GstBus *bus;
  GstElement *e = make_element (4);
  GstHarness *h;
  GstQuery *q;
  GstPad *src;
  gboolean live;
  GstClockTime min = 0, max = 0, latency;

  CHECK (e != NULL, "no element");
  h = make_harness (e, &bus, 32, 24);
  latency = gst_harness_query_latency (h);
  CHECK (latency == 4 * FRAME_DURATION, "window=4: latency %" GST_TIME_FORMAT ", want 4 frames at "
      "10 fps", GST_TIME_ARGS (latency));
  teardown (h, e, bus);

  e = make_element (0);
  h = make_harness (e, &bus, 32, 24);
  src = gst_element_get_static_pad (e, "src");
  q = gst_query_new_latency ();
  CHECK (gst_pad_query (src, q), "latency query failed");
  gst_query_parse_latency (q, &live, &min, &max);
  CHECK (min == 0 && max == GST_CLOCK_TIME_NONE, "window=0: latency %" GST_TIME_FORMAT " .. %"
      GST_TIME_FORMAT ", want 0 .. none", GST_TIME_ARGS (min), GST_TIME_ARGS (max));
  gst_object_unref (src);
  gst_query_unref (q);
  teardown (h, e, bus);
}

/* ------------------------------------------------------------------------------------------------ */

typedef struct
{
  const char *name;
  void (*fn) (void);
} Test;

static const Test tests[] = {
  {"gst-properties-from-table", test_properties_from_table},
  {"gst-bad-settings-error", test_bad_settings},
  {"gst-harness-latency", test_latency},
  {"gst-harness-window-eos", test_window_and_eos},
  {"gst-harness-window-zero", test_window_zero},
  {"gst-harness-long-stream-window-before-eos", test_long_stream_windows},
  {"gst-harness-releases-input-buffers", test_releases_input_buffers},
  {"gst-harness-flush-drops-queue", test_flush_drops_queue},
  {"gst-harness-refuses-gray8", test_refuse_gray8},
  {"gst-harness-refuses-i420", test_refuse_i420},
  {"gst-harness-event-order-caps-change", test_event_order_and_caps_change},
  {"gst-harness-matches-c-api-odd-width", test_matches_c_api},
  {"gst-harness-settings-match-c-api", test_settings_match_c_api},
  {"gst-harness-model-from-env", test_model_from_env},
  {"gst-missing-model-error", test_missing_model},
  {"gst-seek-during-run", test_seek_during_run},
  {"gst-null-during-run", test_null_during_run},
};

static int
run_child (const Test * t)
{
  alarm (900);
  gst_init (NULL, NULL);
  t->fn ();
  return failures ? 1 : 0;
}

int
main (int argc, char **argv)
{
  int failed = 0;
  size_t i;

  if (argc < 2) {
    fprintf (stderr, "usage: %s MODEL_DIR [TEST...]\n", argv[0]);
    return 2;
  }
  model_dir = argv[1];
  for (i = 0; i < G_N_ELEMENTS (tests); i++) {
    const Test *t = &tests[i];
    gboolean selected = argc == 2;
    for (int a = 2; a < argc; a++)
      selected |= strcmp (argv[a], t->name) == 0;
    if (!selected)
      continue;
    fflush (stdout);
    pid_t pid = fork ();
    if (pid == 0)
      _exit (run_child (t));
    int status = 0;
    gint64 start = g_get_monotonic_time ();
    while (waitpid (pid, &status, 0) < 0 && errno == EINTR) {
    }
    double s = (g_get_monotonic_time () - start) / 1e6;
    if (WIFEXITED (status) && WEXITSTATUS (status) == 0) {
      printf ("PASS %s (%.1f s)\n", t->name, s);
    } else {
      failed++;
      if (WIFSIGNALED (status))
        printf ("FAIL %s (signal %d%s)\n", t->name, WTERMSIG (status),
            WTERMSIG (status) == SIGALRM ? ", timeout" : "");
      else
        printf ("FAIL %s\n", t->name);
    }
    fflush (stdout);
  }
  return failed ? 1 : 0;
}
