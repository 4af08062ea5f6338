// The transforms of Winograd F(2x2, 3x3) and F(4x4, 3x3) (tokenflow_kernels.h), one variant per
// instruction-set path from winograd.inc.
#include "targets.h"
#include "tokenflow_kernels.h"

// Floats per even or odd half of one padded input row: the vectors at tile column tx (< tiles_w) read up to
// index tx + 16 of each half, whatever the path's vector width (at most 16).
static size_t winograd_row_floats(size_t tiles_w) { return (tiles_w + 16 + 15) / 16 * 16; }

#define KERNEL_FILE "winograd.inc"
#include "every_path.inc"

// F(2x2, 3x3): 4 input rows, each split in 2 column phases; F(4x4, 3x3): 6 rows in 4 phases.
size_t tokenflow_winograd_input_scratch_floats(size_t tile, size_t tiles_w) {
    return (tile == 4 ? 24 : 8) * winograd_row_floats(tiles_w);
}

void tokenflow_winograd_input_row(size_t tile, const float *plane, size_t height, size_t width, long top, long left,
                                  size_t tiles_w, float *scratch, float *v, size_t position_stride) {
    if (tile == 4) {
        TOKENFLOW_DISPATCH(winograd4_input_row, plane, height, width, top, left, tiles_w, scratch, v, position_stride)
    } else {
        TOKENFLOW_DISPATCH(winograd_input_row, plane, height, width, top, left, tiles_w, scratch, v, position_stride)
    }
}

void tokenflow_winograd_output_row(size_t tile, const float *m, size_t position_stride, size_t tiles_w, float bias,
                                   float *plane, size_t out_h, size_t out_w, size_t first_row) {
    if (tile == 4) {
        TOKENFLOW_DISPATCH(winograd4_output_row, m, position_stride, tiles_w, bias, plane, out_h, out_w, first_row)
    } else {
        TOKENFLOW_DISPATCH(winograd_output_row, m, position_stride, tiles_w, bias, plane, out_h, out_w, first_row)
    }
}

void tokenflow_winograd_weights(size_t tile, const float *weight, float *u, size_t out_channels, size_t in_channels,
                                size_t first_out, size_t end_out) {
    if (tile == 4) {
        TOKENFLOW_DISPATCH(winograd4_weights, weight, u, out_channels, in_channels, first_out, end_out)
    } else {
        TOKENFLOW_DISPATCH(winograd_weights, weight, u, out_channels, in_channels, first_out, end_out)
    }
}
