/* Whole-clip video reading and writing through libavformat/libavcodec/libswscale, for the CLI. */
#ifndef VIDEO_IO_H
#define VIDEO_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct VideoClip {
    int width;
    int height;
    int frame_count;
    uint8_t *pixels;       /* frame_count x height x width x 3 bytes, packed RGB24 */
    int64_t *pts;          /* per frame, in time_base units */
    int time_base_num, time_base_den;
    int frame_rate_num, frame_rate_den;  /* average frame rate (0/0 when unknown) */
} VideoClip;

/* Decodes every video frame of `path` (any file or image-sequence pattern libavformat reads) to RGB24.
 * Returns 0, or -1 with a message in `error`. On success free with video_clip_free. */
int video_read(const char *path, VideoClip *clip, char *error, size_t error_size);

/* Encodes `clip` to `path` (container from the extension; image sequences like frames/%05d.png).
 * Audio streams of `audio_source` (may be NULL) are copied when the container accepts their codec.
 * Writes to a temporary name and renames on success: on failure nothing is left at `path`.
 * Returns 0, or -1 with a message in `error`. */
int video_write(const char *path, const VideoClip *clip, const char *audio_source, char *error, size_t error_size);

/* Allocates pixels and pts for `frame_count` frames of `width` x `height` (other fields untouched). */
int video_clip_allocate(VideoClip *clip, int width, int height, int frame_count);

void video_clip_free(VideoClip *clip);

#endif
