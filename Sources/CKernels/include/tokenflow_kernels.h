// The engine's own hot kernels in C, compiled for any x86-64 with one variant per instruction set (portable,
// AVX2/FMA, AVX-512), chosen at run time by what the CPU has. Also the CPU's features and name, which decide
// that choice and the OpenBLAS core.
#ifndef TOKENFLOW_KERNELS_H
#define TOKENFLOW_KERNELS_H

#include <stddef.h>

/* What this CPU has, as TOKENFLOW_CPU_* bits (0 on a CPU that is not x86-64). */
enum {
    TOKENFLOW_CPU_AVX = 1 << 0, TOKENFLOW_CPU_AVX2 = 1 << 1, TOKENFLOW_CPU_FMA = 1 << 2, TOKENFLOW_CPU_F16C = 1 << 3,
    TOKENFLOW_CPU_AVX512F = 1 << 4, TOKENFLOW_CPU_AVX512BW = 1 << 5, TOKENFLOW_CPU_AVX512VL = 1 << 6,
    TOKENFLOW_CPU_AVX512BF16 = 1 << 7,
    TOKENFLOW_CPU_AMX_BF16 = 1 << 8, /* AMX tiles with bfloat16 products (the CPU's; Linux must still grant them) */
    /* What the avx2 path (x86-64-v3) needs. */
    TOKENFLOW_CPU_AVX2_PATH = TOKENFLOW_CPU_AVX2 | TOKENFLOW_CPU_FMA | TOKENFLOW_CPU_F16C,
};
unsigned tokenflow_cpu_features(void);

/* The CPU's brand string ("Intel(R) Xeon(R) Processor"), or "" when it has none; `name` holds 49 bytes. */
void tokenflow_cpu_name(char *name);

/* The instruction-set variants of the C kernels. */
typedef enum {
    TOKENFLOW_PATH_PORTABLE = 0, /* SSE2: any x86-64 */
    TOKENFLOW_PATH_AVX2 = 1,     /* AVX2 + FMA + F16C (Haswell, Zen and later) */
    TOKENFLOW_PATH_AVX512 = 2,   /* AVX-512 F/BW/VL */
} tokenflow_path;

/* The best path this CPU runs. */
tokenflow_path tokenflow_best_path(void);
/* The path in use: the best one, unless forced (below or by TOKENFLOW_KERNELS=portable|avx2|avx512, which
 * is clamped to what the CPU runs). */
tokenflow_path tokenflow_current_path(void);
/* Forces a path (tests, benchmarks); -1 when this CPU cannot run it, 0 when set. */
int tokenflow_force_path(tokenflow_path path);
/* "portable", "avx2", "avx512". */
const char *tokenflow_path_name(tokenflow_path path);

/* Scaled dot-product attention of up to TOKENFLOW_ATTENTION_QUERY_TILE query rows of one head, over `keys`
 * keys, with an online softmax over key tiles (QK^T, softmax and PV fused; nothing of size queries x keys is
 * made). Rows are strided: query row r is q[r * q_stride + 0 .. head_dim), key j is k[j * k_stride + ...),
 * value j is v[j * v_stride + 0 .. value_dim), output row r goes to out[r * out_stride + ...).
 * `causal`: query row r (its index in the sequence is first_query + r) sees keys 0 ... first_query + r only.
 * `scratch` holds tokenflow_attention_scratch_floats(head_dim, value_dim) floats. */
enum { TOKENFLOW_ATTENTION_QUERY_TILE = 64 };
size_t tokenflow_attention_scratch_floats(size_t head_dim, size_t value_dim);
void tokenflow_attention_tile(const float *q, size_t q_stride, const float *k, size_t k_stride,
                              const float *v, size_t v_stride, float *out, size_t out_stride,
                              size_t rows, size_t keys, size_t head_dim, size_t value_dim, float scale,
                              int causal, size_t first_query, float *scratch);

/* Element-wise kernels over `count` floats (dst may be src). */
typedef enum {
    TOKENFLOW_ACTIVATION_NONE = 0,
    TOKENFLOW_ACTIVATION_SILU = 1,       /* x * sigmoid(x) */
    TOKENFLOW_ACTIVATION_GELU = 2,       /* 0.5 x (1 + erf(x / sqrt 2)), PyTorch's exact GELU */
    TOKENFLOW_ACTIVATION_QUICK_GELU = 3, /* x * sigmoid(1.702 x), CLIP's */
} tokenflow_activation;
void tokenflow_activation_apply(tokenflow_activation activation, const float *src, float *dst, size_t count);
/* target[i] += scale * other[i]. */
void tokenflow_add_scaled(float *target, const float *other, size_t count, float scale);
/* GEGLU of `rows` rows of 2 * width floats: dst[r][j] = src[r][j] * gelu(src[r][width + j]). */
void tokenflow_geglu(const float *src, float *dst, size_t rows, size_t width);
/* One group of GroupNorm: `channels` planes of `spatial` floats normalized by the group's mean and variance,
 * then out = activation(normalized * gamma[c] + beta[c]) (gamma and beta: the group's channels). */
void tokenflow_group_norm(const float *x, float *out, size_t channels, size_t spatial, const float *gamma,
                          const float *beta, float eps, tokenflow_activation activation);
/* LayerNorm of `rows` rows of `width` floats, with gamma and beta of `width`. */
void tokenflow_layer_norm(const float *x, float *out, size_t rows, size_t width, const float *gamma, const float *beta,
                          float eps);
/* Softmax of `rows` rows of `width` floats. */
void tokenflow_softmax(const float *x, float *out, size_t rows, size_t width);

/* The transforms of Winograd F(tile x tile, 3x3), tile 2 or 4 (Tensors/Winograd.swift), with P = (tile + 2)^2
 * positions. Input: one tile row of one channel's `height` x `width` plane, whose tiles read padded rows
 * top ..< top + tile + 2 (negative: padding) with `left` columns of padding, to v[xi * position_stride + t]
 * for the P positions xi of tiles_w tiles; `scratch` holds tokenflow_winograd_input_scratch_floats(tile,
 * tiles_w) floats. Output: from the products m[xi * position_stride + t], the tile x tile outputs (+ bias) of
 * tiles_w tiles to rows first_row ..< first_row + tile of an out_h x out_w plane (those past its edges
 * dropped). Weights: u[xi][o][c] for the 3x3 filters weight[o][c] (out_channels x in_channels of them) of
 * output channels first_out ..< end_out. */
size_t tokenflow_winograd_input_scratch_floats(size_t tile, size_t tiles_w);
void tokenflow_winograd_input_row(size_t tile, const float *plane, size_t height, size_t width, long top, long left,
                                  size_t tiles_w, float *scratch, float *v, size_t position_stride);
void tokenflow_winograd_output_row(size_t tile, const float *m, size_t position_stride, size_t tiles_w, float bias,
                                   float *plane, size_t out_h, size_t out_w, size_t first_row);
void tokenflow_winograd_weights(size_t tile, const float *weight, float *u, size_t out_channels, size_t in_channels,
                                size_t first_out, size_t end_out);

/* dst[i] = src[i] widened to float32, exactly: `src` holds `count` IEEE half (binary16) or bfloat16 values
 * (any alignment). */
void tokenflow_widen_half(const void *src, float *dst, size_t count);
void tokenflow_widen_bfloat16(const void *src, float *dst, size_t count);

/* How an operand's elements are stored: float32, IEEE half or bfloat16. */
typedef enum {
    TOKENFLOW_ELEMENT_FLOAT32 = 0, TOKENFLOW_ELEMENT_HALF = 1, TOKENFLOW_ELEMENT_BFLOAT16 = 2,
} tokenflow_element_type;

/* Matrix products with bfloat16 operands (rounded to nearest even from float32; half widened exactly first;
 * bfloat16 taken as is) and float32 accumulation, on the current bfloat16 unit: C = A op(B) + beta * C, A row-major
 * m x k, op(B) k x n (B row-major k x n, float32; or with `transpose_b` n x k, any type), C row-major m x n,
 * k > 0. A may come packed whole instead (`packed_whole_a`, from tokenflow_gemm_bf16_pack_a with the same m and
 * k, or rows from a multiple of 32 on; `a` is then not read): a matrix used by several products is rounded
 * once. So may B (`packed_whole_b`, tokenflow_gemm_bf16_packed_b_elements(k, n) elements, every pair row of
 * round32(k) written by tokenflow_gemm_bf16_pack_b_rows; or columns from a multiple of 32 on; `b` is then not
 * read): a producer (Winograd's input transform) writes its output rounded, in place. Only where
 * tokenflow_bf16_current_unit() is not NONE; `scratch` holds tokenflow_gemm_bf16_scratch_bytes() bytes (any
 * alignment). */
void tokenflow_gemm_bf16(int transpose_b, size_t m, size_t n, size_t k, const void *a,
                         tokenflow_element_type a_type, size_t lda, const unsigned short *packed_whole_a, const void *b,
                         tokenflow_element_type b_type, size_t ldb, const unsigned short *packed_whole_b, float beta,
                         float *c, size_t ldc, void *scratch);
size_t tokenflow_gemm_bf16_packed_a_elements(size_t m, size_t k);
void tokenflow_gemm_bf16_pack_a(const void *a, tokenflow_element_type type, size_t lda, size_t m, size_t k,
                                unsigned short *packed);
/* Rows `row` (even) and row + 1 of a k x n float32 B, each n floats (NULL: zeros, as past the last row), as one
 * pair row of a B packed whole. */
size_t tokenflow_gemm_bf16_packed_b_elements(size_t k, size_t n);
void tokenflow_gemm_bf16_pack_b_rows(const float *even, const float *odd, size_t n, size_t row, size_t k,
                                     unsigned short *packed);
size_t tokenflow_gemm_bf16_scratch_bytes(void);
/* Attention with bfloat16 QK^T and PV on the current bfloat16 unit (float32 sums and softmax), for the heads of
 * tokenflow_attention_tile without `causal`: one head's keys and values are packed once
 * (tokenflow_attention_pack_bf16: tokenflow_attention_bf16_packed_elements 16-bit elements), then each tile of up
 * to TOKENFLOW_ATTENTION_BF16_QUERY_TILE query rows is computed from them with
 * tokenflow_attention_bf16_scratch_floats floats of scratch (any alignment). Only where
 * tokenflow_bf16_current_unit() is not NONE. */
enum { TOKENFLOW_ATTENTION_BF16_QUERY_TILE = 32 };
size_t tokenflow_attention_bf16_packed_elements(size_t keys, size_t head_dim, size_t value_dim);
size_t tokenflow_attention_bf16_scratch_floats(size_t head_dim, size_t value_dim);
void tokenflow_attention_pack_bf16(const float *k, size_t k_stride, const float *v, size_t v_stride, size_t keys,
                                   size_t head_dim, size_t value_dim, unsigned short *packed);
void tokenflow_attention_tile_bf16(const float *q, size_t q_stride, const unsigned short *packed, size_t keys,
                                   size_t head_dim, size_t value_dim, float scale, float *out, size_t out_stride,
                                   size_t rows, float *scratch);

/* The unit bfloat16 products run on. The best: AMX where the CPU has AMX-BF16 and Linux grants this process the
 * tile state (asked on the first call: arch_prctl(ARCH_REQ_XCOMP_PERM), which from then on needs larger alternate
 * signal stacks); else AVX512-BF16 where the CPU has it (with AVX-512 F/BW/VL); else none. The current one is the
 * best unless TOKENFLOW_BF16=avx512 (read once) or tokenflow_bf16_force_unit lowered it (tests run both units where
 * AMX is); forcing fails (-1) for a unit above the best. */
typedef enum { TOKENFLOW_BF16_NONE = 0, TOKENFLOW_BF16_AVX512 = 1, TOKENFLOW_BF16_AMX = 2 } tokenflow_bf16_unit;
tokenflow_bf16_unit tokenflow_bf16_best_unit(void);
tokenflow_bf16_unit tokenflow_bf16_current_unit(void);
int tokenflow_bf16_force_unit(tokenflow_bf16_unit unit);

/* The FMA peak probe for benchmarks: `iterations` rounds of independent multiply-adds on the current path
 * (tokenflow_fma_probe_flops_per_iteration() float32 operations each); the result only defeats folding. */
float tokenflow_fma_probe(size_t iterations);
size_t tokenflow_fma_probe_flops_per_iteration(void);

#endif
