// Fused attention (tokenflow_kernels.h), one variant per instruction-set path from attention_tile.inc.
#include "targets.h"
#include "tokenflow_kernels.h"

// Keys per tile: the score block (keys x 64 query rows) is 16 KB, in L1 beside the tile's value rows while
// PV streams it (measured on an Emerald Rapids Xeon, 4096 x 4096 tokens: 64 keys ~10% faster than 256).
enum { ATTENTION_KEY_TILE = 64 };

#define SUFFIX _portable
#define VW 4
#define NVB 2
#define PV_VECTORS 2
#define PV_COLUMNS 4
#include "attention_tile.inc"

#pragma clang attribute push(__attribute__((target(TOKENFLOW_TARGET_AVX2))), apply_to = function)
#define SUFFIX _avx2
#define VW 8
#define NVB 2
#define PV_VECTORS 2
#define PV_COLUMNS 4
#include "attention_tile.inc"
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target(TOKENFLOW_TARGET_AVX512))), apply_to = function)
#define SUFFIX _avx512
#define VW 16
#define NVB 4
#define PV_VECTORS 2
#define PV_COLUMNS 8
#include "attention_tile.inc"
#pragma clang attribute pop

size_t tokenflow_attention_scratch_floats(size_t head_dim, size_t value_dim) {
    return (head_dim + value_dim + ATTENTION_KEY_TILE + 2) * TOKENFLOW_ATTENTION_QUERY_TILE;
}

void tokenflow_attention_tile(const float *q, size_t q_stride, const float *k, size_t k_stride,
                              const float *v, size_t v_stride, float *out, size_t out_stride,
                              size_t rows, size_t keys, size_t head_dim, size_t value_dim, float scale,
                              int causal, size_t first_query, float *scratch) {
    TOKENFLOW_DISPATCH(attention_tile, q, q_stride, k, k_stride, v, v_stride, out, out_stride, rows, keys, head_dim,
                       value_dim, scale, causal, first_query, scratch)
}
