/* Test helper for the CLI tests, on libavformat/libavcodec directly (independent of the code under test):
 *   clip_tool make OUT.mkv FRAMES WIDTH HEIGHT [audio]   moving RGB pattern as rawvideo at 10 fps (+ PCM sine)
 *   clip_tool probe FILE [RGB_OUT]                       prints frames/size/rate/audio and each frame's time; with
 *                                                        RGB_OUT, writes the decoded RGB24 frames there, packed */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const char *message) { fprintf(stderr, "clip_tool: %s\n", message); return 1; }

static int write_packet(AVFormatContext *out, AVCodecContext *encoder, AVStream *stream, AVFrame *frame) {
    if (avcodec_send_frame(encoder, frame) < 0) return -1;
    AVPacket *packet = av_packet_alloc();
    while (avcodec_receive_packet(encoder, packet) == 0) {
        av_packet_rescale_ts(packet, encoder->time_base, stream->time_base);
        packet->stream_index = stream->index;
        if (av_interleaved_write_frame(out, packet) < 0) return -1;
    }
    av_packet_free(&packet);
    return 0;
}

static int make(const char *path, int frames, int width, int height, int audio) {
    AVFormatContext *out = NULL;
    if (avformat_alloc_output_context2(&out, NULL, NULL, path) < 0) return die("cannot create output");
    const AVCodec *video_codec = avcodec_find_encoder(AV_CODEC_ID_RAWVIDEO);
    AVCodecContext *video = avcodec_alloc_context3(video_codec);
    video->width = width; video->height = height; video->pix_fmt = AV_PIX_FMT_RGB24;
    video->time_base = (AVRational){ 1, 10 }; video->framerate = (AVRational){ 10, 1 };
    if (avcodec_open2(video, video_codec, NULL) < 0) return die("cannot open rawvideo encoder");
    AVStream *video_stream = avformat_new_stream(out, NULL);
    avcodec_parameters_from_context(video_stream->codecpar, video);
    video_stream->time_base = video->time_base;
    AVCodecContext *sound = NULL;
    AVStream *audio_stream = NULL;
    if (audio) {
        const AVCodec *audio_codec = avcodec_find_encoder(AV_CODEC_ID_PCM_S16LE);
        sound = avcodec_alloc_context3(audio_codec);
        sound->sample_fmt = AV_SAMPLE_FMT_S16; sound->sample_rate = 8000;
        av_channel_layout_default(&sound->ch_layout, 1);
        sound->time_base = (AVRational){ 1, 8000 };
        if (avcodec_open2(sound, audio_codec, NULL) < 0) return die("cannot open pcm encoder");
        audio_stream = avformat_new_stream(out, NULL);
        avcodec_parameters_from_context(audio_stream->codecpar, sound);
        audio_stream->time_base = sound->time_base;
    }
    if (avio_open(&out->pb, path, AVIO_FLAG_WRITE) < 0 || avformat_write_header(out, NULL) < 0) return die("cannot write header");
    AVFrame *frame = av_frame_alloc();
    frame->format = AV_PIX_FMT_RGB24; frame->width = width; frame->height = height;
    av_frame_get_buffer(frame, 0);
    for (int f = 0; f < frames; f++) {
        av_frame_make_writable(frame);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) {
                uint8_t *p = frame->data[0] + y * frame->linesize[0] + 3 * x;
                p[0] = (4 * x + 3 * f) % 256; p[1] = (4 * y + 5 * f) % 256; p[2] = (2 * (x + y) + 7 * f) % 256;
            }
        frame->pts = f;
        if (write_packet(out, video, video_stream, frame) < 0) return die("cannot write video");
        if (audio) { /* 800 samples = 0.1 s of a 440 Hz sine per video frame */
            AVFrame *samples = av_frame_alloc();
            samples->format = AV_SAMPLE_FMT_S16; samples->sample_rate = 8000; samples->nb_samples = 800;
            av_channel_layout_copy(&samples->ch_layout, &sound->ch_layout);
            av_frame_get_buffer(samples, 0);
            int16_t *data = (int16_t *)samples->data[0];
            for (int i = 0; i < 800; i++) data[i] = (int16_t)(8000 * sin(2 * M_PI * 440 * (f * 800 + i) / 8000.0));
            samples->pts = (int64_t)f * 800;
            if (write_packet(out, sound, audio_stream, samples) < 0) return die("cannot write audio");
            av_frame_free(&samples);
        }
    }
    write_packet(out, video, video_stream, NULL);
    if (audio) write_packet(out, sound, audio_stream, NULL);
    av_write_trailer(out);
    avio_closep(&out->pb);
    return 0;
}

static int probe(const char *path, const char *rgb_path) {
    AVFormatContext *in = NULL;
    if (avformat_open_input(&in, path, NULL, NULL) < 0 || avformat_find_stream_info(in, NULL) < 0) return die("cannot open input");
    int video = av_find_best_stream(in, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    int audio = av_find_best_stream(in, AVMEDIA_TYPE_AUDIO, -1, -1, NULL, 0);
    if (video < 0) return die("no video stream");
    AVStream *stream = in->streams[video];
    const AVCodec *codec = avcodec_find_decoder(stream->codecpar->codec_id);
    AVCodecContext *decoder = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(decoder, stream->codecpar);
    avcodec_open2(decoder, codec, NULL);
    AVRational rate = av_guess_frame_rate(in, stream, NULL);
    AVPacket *packet = av_packet_alloc();
    AVFrame *frame = av_frame_alloc();
    int frames = 0;
    char times[8192] = "";
    FILE *rgb = rgb_path ? fopen(rgb_path, "wb") : NULL;
    if (rgb_path && !rgb) return die("cannot create the RGB output");
    for (int eof = 0; !eof;) {
        if (av_read_frame(in, packet) < 0) { eof = 1; avcodec_send_packet(decoder, NULL); }
        else if (packet->stream_index == video) { avcodec_send_packet(decoder, packet); av_packet_unref(packet); }
        else { av_packet_unref(packet); continue; }
        while (avcodec_receive_frame(decoder, frame) == 0) {
            char item[32];
            snprintf(item, sizeof item, "%s%.3f", frames ? "," : "", frame->best_effort_timestamp * av_q2d(stream->time_base));
            if (strlen(times) + strlen(item) < sizeof times - 1) strcat(times, item);
            frames++;
            if (rgb) {
                if (frame->format != AV_PIX_FMT_RGB24) return die("RGB_OUT needs an RGB24 video");
                for (int y = 0; y < frame->height; y++)
                    if (fwrite(frame->data[0] + y * frame->linesize[0], 3, frame->width, rgb) != (size_t)frame->width)
                        return die("cannot write the RGB output");
            }
        }
    }
    if (rgb && fclose(rgb) != 0) return die("cannot write the RGB output");
    printf("frames=%d width=%d height=%d fps=%d/%d audio=%s\ntimes=%s\n", frames, decoder->width, decoder->height, rate.num, rate.den,
           audio >= 0 ? avcodec_get_name(in->streams[audio]->codecpar->codec_id) : "none", times);
    return 0;
}

int main(int argc, char **argv) {
    av_log_set_level(AV_LOG_ERROR);
    if (argc >= 6 && strcmp(argv[1], "make") == 0)
        return make(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argc > 6 && strcmp(argv[6], "audio") == 0);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "probe") == 0) return probe(argv[2], argc == 4 ? argv[3] : NULL);
    return die("usage: clip_tool make OUT FRAMES W H [audio] | probe FILE [RGB_OUT]");
}
