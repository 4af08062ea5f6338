#include "video_io.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(char *error, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, size, format, args);
    va_end(args);
    return -1;
}

static const char *av_message(int code, char *buffer, size_t size) {
    av_strerror(code, buffer, size);
    return buffer;
}

int video_clip_allocate(VideoClip *clip, int width, int height, int frame_count) {
    clip->width = width;
    clip->height = height;
    clip->frame_count = frame_count;
    clip->pixels = malloc((size_t)frame_count * width * height * 3 + 1);
    clip->pts = malloc((size_t)frame_count * sizeof(int64_t) + 1);
    if (!clip->pixels || !clip->pts) {
        video_clip_free(clip);
        return -1;
    }
    return 0;
}

void video_clip_free(VideoClip *clip) {
    free(clip->pixels);
    free(clip->pts);
    clip->pixels = NULL;
    clip->pts = NULL;
    clip->frame_count = 0;
}

/* Appends one decoded frame as RGB24, growing the clip's buffers geometrically. */
static int append_frame(VideoClip *clip, int *capacity, struct SwsContext *sws, const AVFrame *frame, char *error, size_t size) {
    if (clip->frame_count == *capacity) {
        int grown = *capacity ? *capacity * 2 : 64;
        uint8_t *pixels = realloc(clip->pixels, (size_t)grown * clip->width * clip->height * 3);
        if (!pixels) return fail(error, size, "out of memory after %d frames", clip->frame_count);
        clip->pixels = pixels;
        int64_t *pts = realloc(clip->pts, (size_t)grown * sizeof(int64_t));
        if (!pts) return fail(error, size, "out of memory after %d frames", clip->frame_count);
        clip->pts = pts;
        *capacity = grown;
    }
    uint8_t *destination[1] = { clip->pixels + (size_t)clip->frame_count * clip->width * clip->height * 3 };
    int stride[1] = { clip->width * 3 };
    sws_scale(sws, (const uint8_t *const *)frame->data, frame->linesize, 0, frame->height, destination, stride);
    int64_t pts = frame->best_effort_timestamp;
    clip->pts[clip->frame_count] = pts == AV_NOPTS_VALUE ? clip->frame_count : pts;
    clip->frame_count++;
    return 0;
}

int video_read(const char *path, VideoClip *clip, char *error, size_t size) {
    av_log_set_level(AV_LOG_ERROR); /* errors come back as messages; libav's chatter is noise here */
    memset(clip, 0, sizeof(*clip));
    AVFormatContext *format = NULL;
    AVCodecContext *decoder = NULL;
    struct SwsContext *sws = NULL;
    AVPacket *packet = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    char message[256];
    int result = -1, capacity = 0, code;

    if (!packet || !frame) { fail(error, size, "out of memory"); goto done; }
    if ((code = avformat_open_input(&format, path, NULL, NULL)) < 0) {
        fail(error, size, "cannot open input '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    if ((code = avformat_find_stream_info(format, NULL)) < 0) {
        fail(error, size, "cannot read stream information of '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    int index = av_find_best_stream(format, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (index < 0) { fail(error, size, "'%s' has no video stream", path); goto done; }
    AVStream *stream = format->streams[index];
    const AVCodec *codec = avcodec_find_decoder(stream->codecpar->codec_id);
    if (!codec) { fail(error, size, "'%s': no decoder for its video codec", path); goto done; }
    decoder = avcodec_alloc_context3(codec);
    if (!decoder || avcodec_parameters_to_context(decoder, stream->codecpar) < 0 || avcodec_open2(decoder, codec, NULL) < 0) {
        fail(error, size, "'%s': cannot open the %s decoder", path, codec->name);
        goto done;
    }
    clip->width = decoder->width;
    clip->height = decoder->height;
    if (clip->width <= 0 || clip->height <= 0) { fail(error, size, "'%s': video has no size", path); goto done; }
    clip->time_base_num = stream->time_base.num;
    clip->time_base_den = stream->time_base.den;
    AVRational rate = av_guess_frame_rate(format, stream, NULL);
    clip->frame_rate_num = rate.num;
    clip->frame_rate_den = rate.den;

    int draining = 0;
    while (!draining) {
        code = av_read_frame(format, packet);
        if (code == AVERROR_EOF) {
            draining = 1;
            code = avcodec_send_packet(decoder, NULL);
        } else if (code < 0) {
            fail(error, size, "error reading '%s': %s", path, av_message(code, message, sizeof message));
            goto done;
        } else if (packet->stream_index == index) {
            code = avcodec_send_packet(decoder, packet);
            av_packet_unref(packet);
        } else {
            av_packet_unref(packet);
            continue;
        }
        if (code < 0 && code != AVERROR_EOF) {
            fail(error, size, "error decoding '%s': %s", path, av_message(code, message, sizeof message));
            goto done;
        }
        while ((code = avcodec_receive_frame(decoder, frame)) >= 0) {
            if (frame->width != clip->width || frame->height != clip->height) {
                fail(error, size, "'%s': frame %d is %dx%d, earlier frames are %dx%d (size changes are not supported)",
                     path, clip->frame_count, frame->width, frame->height, clip->width, clip->height);
                goto done;
            }
            if (!sws) {
                sws = sws_getContext(frame->width, frame->height, frame->format, clip->width, clip->height,
                                     AV_PIX_FMT_RGB24, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
                if (!sws) { fail(error, size, "'%s': cannot convert its pixel format to RGB", path); goto done; }
            }
            if (append_frame(clip, &capacity, sws, frame, error, size) < 0) goto done;
            av_frame_unref(frame);
        }
        if (code != AVERROR(EAGAIN) && code != AVERROR_EOF) {
            fail(error, size, "error decoding '%s': %s", path, av_message(code, message, sizeof message));
            goto done;
        }
    }
    if (clip->frame_count == 0) { fail(error, size, "'%s' contains no video frames", path); goto done; }
    result = 0;
done:
    if (result < 0) video_clip_free(clip);
    sws_freeContext(sws);
    av_frame_free(&frame);
    av_packet_free(&packet);
    avcodec_free_context(&decoder);
    avformat_close_input(&format);
    return result;
}

/* An output being written: the muxer, the video encoder, and the optional copied audio input. */
typedef struct Writer {
    AVFormatContext *output;
    AVCodecContext *encoder;
    AVStream *video;
    AVFormatContext *audio_input;
    int audio_input_index;
    AVStream *audio;
    int audio_done;
} Writer;

/* Copies audio packets up to `until` (in the video encoder's time base; INT64_MAX = all). */
static int copy_audio(Writer *w, int64_t until, char *error, size_t size) {
    if (!w->audio || w->audio_done) return 0;
    AVPacket *packet = av_packet_alloc();
    if (!packet) return fail(error, size, "out of memory");
    AVStream *in = w->audio_input->streams[w->audio_input_index];
    int code = 0;
    while ((code = av_read_frame(w->audio_input, packet)) >= 0) {
        if (packet->stream_index != w->audio_input_index) { av_packet_unref(packet); continue; }
        int64_t when = packet->dts == AV_NOPTS_VALUE ? packet->pts : packet->dts;
        av_packet_rescale_ts(packet, in->time_base, w->audio->time_base);
        packet->stream_index = w->audio->index;
        packet->pos = -1;
        code = av_interleaved_write_frame(w->output, packet);
        if (code < 0) break;
        if (until != INT64_MAX && when != AV_NOPTS_VALUE &&
            av_compare_ts(when, in->time_base, until, w->encoder->time_base) > 0) break;
    }
    av_packet_free(&packet);
    if (code == AVERROR_EOF) { w->audio_done = 1; return 0; }
    if (code < 0) {
        char message[256];
        return fail(error, size, "error copying audio: %s", av_message(code, message, sizeof message));
    }
    return 0;
}

/* Sends one frame (NULL flushes) and writes every packet the encoder returns. */
static int encode(Writer *w, AVFrame *frame, char *error, size_t size) {
    char message[256];
    int code = avcodec_send_frame(w->encoder, frame);
    if (code < 0) return fail(error, size, "error encoding video: %s", av_message(code, message, sizeof message));
    AVPacket *packet = av_packet_alloc();
    if (!packet) return fail(error, size, "out of memory");
    while ((code = avcodec_receive_packet(w->encoder, packet)) >= 0) {
        if (copy_audio(w, packet->dts, error, size) < 0) { av_packet_free(&packet); return -1; }
        av_packet_rescale_ts(packet, w->encoder->time_base, w->video->time_base);
        packet->stream_index = w->video->index;
        if ((code = av_interleaved_write_frame(w->output, packet)) < 0) break;
    }
    av_packet_free(&packet);
    if (code != AVERROR(EAGAIN) && code != AVERROR_EOF)
        return fail(error, size, "error writing video: %s", av_message(code, message, sizeof message));
    return 0;
}

/* Picks the encoder's pixel format: 4:2:0 where the size allows (players expect it), else 4:4:4, else RGB. */
static enum AVPixelFormat choose_pixel_format(const AVCodec *codec, int width, int height) {
    const enum AVPixelFormat *formats = codec->pix_fmts;
    if (!formats) return AV_PIX_FMT_YUV420P;
    enum AVPixelFormat preferred[] = {
        (width % 2 == 0 && height % 2 == 0) ? AV_PIX_FMT_YUV420P : AV_PIX_FMT_NONE, AV_PIX_FMT_YUV444P, AV_PIX_FMT_RGB24,
    };
    for (size_t p = 0; p < sizeof preferred / sizeof preferred[0]; p++)
        for (const enum AVPixelFormat *f = formats; *f != AV_PIX_FMT_NONE; f++)
            if (*f == preferred[p]) return *f;
    return formats[0];
}

static int open_audio(Writer *w, const char *source, char *error, size_t size) {
    if (!source || avformat_open_input(&w->audio_input, source, NULL, NULL) < 0) return 0;
    if (avformat_find_stream_info(w->audio_input, NULL) < 0) return 0;
    int index = av_find_best_stream(w->audio_input, AVMEDIA_TYPE_AUDIO, -1, -1, NULL, 0);
    if (index < 0) return 0;
    AVCodecParameters *parameters = w->audio_input->streams[index]->codecpar;
    /* Only containers that take the codec as it is: audio is copied, never re-encoded. */
    if (avformat_query_codec(w->output->oformat, parameters->codec_id, FF_COMPLIANCE_NORMAL) != 1) {
        fprintf(stderr, "note: audio (%s) is not copied: the output container does not accept it\n",
                avcodec_get_name(parameters->codec_id));
        return 0;
    }
    w->audio = avformat_new_stream(w->output, NULL);
    if (!w->audio || avcodec_parameters_copy(w->audio->codecpar, parameters) < 0)
        return fail(error, size, "cannot add the audio stream");
    w->audio->codecpar->codec_tag = 0;
    w->audio->time_base = w->audio_input->streams[index]->time_base;
    w->audio_input_index = index;
    return 0;
}

/* Removes files written so far when a write fails: the temporary file, or an image sequence's frames. */
static void remove_partial(const char *temporary, int is_sequence, int frames) {
    if (!is_sequence) { unlink(temporary); return; }
    char name[4096];
    for (int i = 0; i <= frames + 1; i++) {
        for (int start = 0; start <= 1; start++) {
            if (av_get_frame_filename(name, sizeof name, temporary, i + start) == 0) unlink(name);
        }
    }
}

int video_write(const char *path, const VideoClip *clip, const char *audio_source, char *error, size_t size) {
    av_log_set_level(AV_LOG_ERROR);
    char message[256];
    const AVOutputFormat *format = av_guess_format(NULL, path, NULL);
    if (!format) return fail(error, size, "cannot tell the output format from '%s' (use an extension like .mp4, .mkv, .mov or frames/%%05d.png)", path);
    int is_sequence = (format->flags & AVFMT_NOFILE) || strcmp(format->name, "image2") == 0;
    /* Single files are written under a temporary name and renamed at the end. Image sequences are
     * written in place and removed on failure (there is no single name to rename). */
    char temporary[4096];
    if (is_sequence) snprintf(temporary, sizeof temporary, "%s", path);
    else snprintf(temporary, sizeof temporary, "%s.partial-%d", path, (int)getpid());

    Writer w = { 0 };
    struct SwsContext *sws = NULL;
    AVFrame *frame = NULL;
    int result = -1, code, written = 0;

    if ((code = avformat_alloc_output_context2(&w.output, format, NULL, temporary)) < 0) {
        fail(error, size, "cannot create output '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    enum AVCodecID codec_id = is_sequence ? av_guess_codec(format, NULL, path, NULL, AVMEDIA_TYPE_VIDEO) : format->video_codec;
    const AVCodec *codec = avcodec_find_encoder(codec_id);
    if (!codec) { fail(error, size, "no encoder available for '%s' (%s)", path, avcodec_get_name(codec_id)); goto done; }
    w.encoder = avcodec_alloc_context3(codec);
    if (!w.encoder) { fail(error, size, "out of memory"); goto done; }
    w.encoder->width = clip->width;
    w.encoder->height = clip->height;
    w.encoder->pix_fmt = choose_pixel_format(codec, clip->width, clip->height);
    w.encoder->time_base = (AVRational){ clip->time_base_num > 0 ? clip->time_base_num : 1, clip->time_base_den > 0 ? clip->time_base_den : 25 };
    if (clip->frame_rate_num > 0 && clip->frame_rate_den > 0)
        w.encoder->framerate = (AVRational){ clip->frame_rate_num, clip->frame_rate_den };
    if (format->flags & AVFMT_GLOBALHEADER) w.encoder->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (strcmp(codec->name, "libx264") == 0) av_opt_set(w.encoder->priv_data, "crf", "16", 0);
    if ((code = avcodec_open2(w.encoder, codec, NULL)) < 0) {
        fail(error, size, "cannot open the %s encoder for %dx%d: %s", codec->name, clip->width, clip->height, av_message(code, message, sizeof message));
        goto done;
    }
    w.video = avformat_new_stream(w.output, NULL);
    if (!w.video || avcodec_parameters_from_context(w.video->codecpar, w.encoder) < 0) { fail(error, size, "cannot add the video stream"); goto done; }
    w.video->time_base = w.encoder->time_base;
    w.video->avg_frame_rate = w.encoder->framerate;
    if (open_audio(&w, audio_source, error, size) < 0) goto done;
    if (!(format->flags & AVFMT_NOFILE) && (code = avio_open(&w.output->pb, temporary, AVIO_FLAG_WRITE)) < 0) {
        fail(error, size, "cannot write '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    if ((code = avformat_write_header(w.output, NULL)) < 0) {
        fail(error, size, "cannot write the header of '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    sws = sws_getContext(clip->width, clip->height, AV_PIX_FMT_RGB24, clip->width, clip->height, w.encoder->pix_fmt,
                         SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
    frame = av_frame_alloc();
    if (!sws || !frame) { fail(error, size, "cannot convert RGB to %s", av_get_pix_fmt_name(w.encoder->pix_fmt)); goto done; }
    frame->format = w.encoder->pix_fmt;
    frame->width = clip->width;
    frame->height = clip->height;
    if (av_frame_get_buffer(frame, 0) < 0) { fail(error, size, "out of memory"); goto done; }
    for (int i = 0; i < clip->frame_count; i++) {
        if (av_frame_make_writable(frame) < 0) { fail(error, size, "out of memory"); goto done; }
        const uint8_t *source[1] = { clip->pixels + (size_t)i * clip->width * clip->height * 3 };
        int stride[1] = { clip->width * 3 };
        sws_scale(sws, source, stride, 0, clip->height, frame->data, frame->linesize);
        frame->pts = clip->pts[i];
        if (encode(&w, frame, error, size) < 0) goto done;
        written++;
    }
    if (encode(&w, NULL, error, size) < 0) goto done;
    if (copy_audio(&w, INT64_MAX, error, size) < 0) goto done;
    if ((code = av_write_trailer(w.output)) < 0) {
        fail(error, size, "cannot finish '%s': %s", path, av_message(code, message, sizeof message));
        goto done;
    }
    if (!(format->flags & AVFMT_NOFILE)) avio_closep(&w.output->pb);
    if (!is_sequence && rename(temporary, path) != 0) { fail(error, size, "cannot move the finished file to '%s'", path); goto done; }
    result = 0;
done:
    if (w.output && !(format->flags & AVFMT_NOFILE)) avio_closep(&w.output->pb);
    if (result < 0) remove_partial(temporary, is_sequence, written);
    av_frame_free(&frame);
    sws_freeContext(sws);
    avcodec_free_context(&w.encoder);
    avformat_free_context(w.output);
    avformat_close_input(&w.audio_input);
    return result;
}
