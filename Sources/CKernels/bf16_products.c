// The `precision=bf16` kernels (tokenflow_kernels.h): matrix products with bfloat16 operands and float32
// accumulation, for the products with weights and for attention's QK^T and PV, on one of two units:
// - Intel AMX, where the CPU has it and Linux grants the tile state: TDPBF16PS does a 16 x 16 x 32 block per
//   instruction, ~13x the float32 FMA rate of AVX-512 on the same core (Emerald Rapids Xeon: 2.2 TFLOP/s against
//   170 GFLOP/s);
// - else AVX512-BF16's VDPBF16PS, 16 lanes of two products each: twice the multiply-adds of a float32 FMA per
//   instruction, which AMD's Zen 4 and 5 issue at the FMA rate (not measured here; on the Emerald Rapids Xeon,
//   which uses AMX, it measured half the float32 rate).
// Both run on the same packed layouts (AMX's), the same blocking and the same drivers; only the 32 x 32 block
// product differs. Operands are rounded to bfloat16 while they are packed.
#include "targets.h"
#include "tokenflow_kernels.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

// Blocking, in elements: a micro-tile is 32 x 32 outputs, 2 x 2 tiles of 16 x 16 float32 accumulators, over 32
// k per step; A is packed in blocks of MC x KC (1 MB of bfloat16, in a 2 MB L2), B in KC x NC. A is packed
// again for every NC columns, and packing (reading float32, rounding) costs more than the products here, so NC
// is wide: 4096 against 512 measured 5-35% faster on Winograd's and the linear layers' shapes (Emerald Rapids
// Xeon, 1 thread, alternating runs).
enum { TILE = 16, MICRO = 32, KSTEP = 32, MC = 512, KC = 1024, NC = 4096 };

static size_t round32(size_t n) { return (n + 31) / 32 * 32; }

size_t tokenflow_gemm_bf16_scratch_bytes(void) { return ((size_t)MC * KC + (size_t)KC * NC) * 2 + 64; }

// Whether Linux grants this process AMX's 8 KB of tile state (the signal frames grow by it): asked once.
static int amx_granted(void) {
    static atomic_int state = -1; // -1: not asked yet
    int known = atomic_load(&state);
    if (known >= 0) return known;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    int granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    atomic_store(&state, granted);
    return granted;
}

tokenflow_bf16_unit tokenflow_bf16_best_unit(void) {
    unsigned has = tokenflow_cpu_features();
    unsigned avx512 = TOKENFLOW_CPU_AVX512F | TOKENFLOW_CPU_AVX512BW | TOKENFLOW_CPU_AVX512VL | TOKENFLOW_CPU_AVX512BF16;
    if ((has & avx512) != avx512) return TOKENFLOW_BF16_NONE; // packing rounds with AVX512-BF16 on both units
    if ((has & TOKENFLOW_CPU_AMX_BF16) && amx_granted()) return TOKENFLOW_BF16_AMX;
    return TOKENFLOW_BF16_AVX512;
}

static atomic_int current_unit = -1; // -1 until first asked

tokenflow_bf16_unit tokenflow_bf16_current_unit(void) {
    int unit = atomic_load(&current_unit);
    if (unit >= 0) return (tokenflow_bf16_unit)unit;
    tokenflow_bf16_unit chosen = tokenflow_bf16_best_unit();
    const char *asked = getenv("TOKENFLOW_BF16"); // "avx512": AVX512-BF16 even where AMX is (benchmarks)
    if (asked != NULL && strcmp(asked, "avx512") == 0 && chosen > TOKENFLOW_BF16_AVX512) chosen = TOKENFLOW_BF16_AVX512;
    int expected = -1;
    atomic_compare_exchange_strong(&current_unit, &expected, (int)chosen);
    return (tokenflow_bf16_unit)atomic_load(&current_unit);
}

int tokenflow_bf16_force_unit(tokenflow_bf16_unit unit) {
    if (unit > tokenflow_bf16_best_unit()) return -1;
    atomic_store(&current_unit, (int)unit);
    return 0;
}

#pragma clang attribute push(__attribute__((target(TOKENFLOW_TARGET_BF16))), apply_to = function)

// 32 floats (fewer at an edge: `count`, the rest zero) to 32 bfloat16, rounded to nearest even.
static inline __m512i to_bf16(const float *src, size_t count) {
    __mmask16 lo = count >= 16 ? 0xFFFF : (__mmask16)((1u << count) - 1);
    __mmask16 hi = count >= 32 ? 0xFFFF : count <= 16 ? 0 : (__mmask16)((1u << (count - 16)) - 1);
    __m512 x0 = _mm512_maskz_loadu_ps(lo, src), x1 = _mm512_maskz_loadu_ps(hi, src + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
}

// The same from 32 elements of `type` at element `index` of `src`: IEEE half is widened exactly first (so the
// result is that of widening the weights, then rounding), bfloat16 is taken as it is.
static inline __m512i element_to_bf16(const void *src, tokenflow_element_type type, size_t index, size_t count) {
    __mmask32 mask = count >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << count) - 1);
    switch (type) {
    case TOKENFLOW_ELEMENT_BFLOAT16: return _mm512_maskz_loadu_epi16(mask, (const uint16_t *)src + index);
    case TOKENFLOW_ELEMENT_HALF: {
        __m512i halves = _mm512_maskz_loadu_epi16(mask, (const uint16_t *)src + index);
        __m512 x0 = _mm512_cvtph_ps(_mm512_castsi512_si256(halves)), x1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(halves, 1));
        return (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
    }
    default: return to_bf16((const float *)src + index, count);
    }
}

// A block: rows [0, mc) x k [0, kc) of row-major A as panels of 32 rows; in each, per 32 k, two 16 x 32 tiles
// (rows 0-15, 16-31), row-major with 64-byte rows. Rows past mc and k past kc are zero.
// (Source blocks are given as their first element's index, so 16-bit sources need no pointer casts.)
static void pack_a(const void *a, tokenflow_element_type type, size_t first, size_t lda, size_t mc, size_t kc,
                   size_t kc_padded, uint16_t *dst) {
    for (size_t i0 = 0; i0 < mc; i0 += MICRO)
        for (size_t q = 0; q < kc_padded; q += KSTEP)
            for (size_t i = 0; i < MICRO; i++) {
                uint16_t *row = dst + ((i0 / MICRO) * (kc_padded / KSTEP) + q / KSTEP) * (MICRO * KSTEP) + i * KSTEP;
                __m512i v = i0 + i < mc && q < kc ? element_to_bf16(a, type, first + (i0 + i) * lda + q, kc - q) : _mm512_setzero_si512();
                _mm512_storeu_si512(row, v);
            }
}

// rows[i][j] (16 x 16 32-bit words) to rows[j][i]: pairs within 128-bit lanes, then across lanes.
static inline void transpose_words(__m512i rows[16]) {
    __m512i pairs[16], quads[16];
    for (int i = 0; i < 16; i += 2) {
        pairs[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
        pairs[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
    }
    // quads[4g + c]: in lane L, column 4L + c of rows 4g ..< 4g + 4.
    for (int g = 0; g < 4; g++) {
        __m512i lo01 = pairs[4 * g], hi01 = pairs[4 * g + 1], lo23 = pairs[4 * g + 2], hi23 = pairs[4 * g + 3];
        quads[4 * g] = _mm512_unpacklo_epi64(lo01, lo23);
        quads[4 * g + 1] = _mm512_unpackhi_epi64(lo01, lo23);
        quads[4 * g + 2] = _mm512_unpacklo_epi64(hi01, hi23);
        quads[4 * g + 3] = _mm512_unpackhi_epi64(hi01, hi23);
    }
    // Column 4L + c: lane L of quads[c], quads[4 + c], quads[8 + c], quads[12 + c].
    for (int c = 0; c < 4; c++) {
        __m512i low01 = _mm512_shuffle_i32x4(quads[c], quads[4 + c], 0x44), high01 = _mm512_shuffle_i32x4(quads[c], quads[4 + c], 0xEE);
        __m512i low23 = _mm512_shuffle_i32x4(quads[8 + c], quads[12 + c], 0x44), high23 = _mm512_shuffle_i32x4(quads[8 + c], quads[12 + c], 0xEE);
        rows[c] = _mm512_shuffle_i32x4(low01, low23, 0x88);
        rows[4 + c] = _mm512_shuffle_i32x4(low01, low23, 0xDD);
        rows[8 + c] = _mm512_shuffle_i32x4(high01, high23, 0x88);
        rows[12 + c] = _mm512_shuffle_i32x4(high01, high23, 0xDD);
    }
}

// One pair row (k, k + 1) of a packed B: rows `even` and `odd` (NULL: zero) of nc float32 columns, rounded and
// interleaved into every 32-column panel (`panel` elements apart) from `pair_row` on; columns past nc are zero.
static inline void pack_pair_row(const float *even, const float *odd, size_t nc, size_t panel, uint16_t *pair_row) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (size_t j = 0; j < nc; j += TILE) {
        size_t cols = nc - j < TILE ? nc - j : TILE;
        __mmask16 mask = cols == TILE ? 0xFFFF : (__mmask16)((1u << cols) - 1);
        __m512 e = even ? _mm512_maskz_loadu_ps(mask, even + j) : _mm512_setzero_ps();
        __m512 o = odd ? _mm512_maskz_loadu_ps(mask, odd + j) : _mm512_setzero_ps();
        __m512i both = (__m512i)_mm512_cvtne2ps_pbh(o, e);
        _mm512_storeu_si512(pair_row + (j / MICRO) * panel + (j % MICRO) / TILE * TILE * KSTEP,
                            _mm512_permutexvar_epi16(interleave, both));
    }
    if (nc % MICRO != 0 && nc % MICRO <= TILE) // the last panel's second tile has no columns
        _mm512_storeu_si512(pair_row + (nc / MICRO) * panel + TILE * KSTEP, _mm512_setzero_si512());
}

// B block: k [0, kc) x columns [0, nc) as panels of 32 columns; in each, per 32 k, two tiles (columns 0-15,
// 16-31) of 16 rows, row r holding (k = 2r, k = 2r + 1) pairs for its 16 columns (AMX's pairwise layout).
// A non-transposed B is float32 (the engine's are activations; its weights are A, or B transposed).
static void pack_b(int transposed, const void *source, tokenflow_element_type type, size_t first, size_t ldb,
                   size_t kc, size_t nc, size_t kc_padded, uint16_t *dst) {
    const float *b = (const float *)source + first;
    const size_t panel = (kc_padded / KSTEP) * (MICRO * KSTEP); // elements of one 32-column panel
    if (!transposed) {
        // Rows are read in order, two at a time, across all the block's columns: walking down a 32-column strip
        // instead (one cache line per row, rows ldb apart) stalled on its loads.
        for (size_t k = 0; k < kc_padded; k += 2)
            pack_pair_row(k < kc ? b + k * ldb : NULL, k + 1 < kc ? b + (k + 1) * ldb : NULL, nc, panel,
                          dst + (k / KSTEP) * (MICRO * KSTEP) + (k % KSTEP) / 2 * KSTEP);
        return;
    }
    // Column j of op(B) is row j of the stored matrix: its 32 k are contiguous, 16 pairs. A tile's 16 columns
    // are read as 16 vectors of pairs and transposed in registers, so that row r holds every column's pair r
    // (one 16 x 16 transpose of 32-bit words: 4x faster than scattering each column down the tile).
    for (size_t j0 = 0; j0 < nc; j0 += MICRO)
        for (size_t q = 0; q < kc_padded; q += KSTEP)
            for (size_t t = 0; t < 2; t++) {
                __m512i rows[TILE];
                for (size_t jj = 0; jj < TILE; jj++) {
                    size_t j = j0 + t * TILE + jj;
                    rows[jj] = j < nc && q < kc ? element_to_bf16(source, type, first + j * ldb + q, kc - q) : _mm512_setzero_si512();
                }
                transpose_words(rows);
                uint16_t *tile = dst + (j0 / MICRO) * panel + (q / KSTEP) * (MICRO * KSTEP) + t * TILE * KSTEP;
                for (size_t r = 0; r < TILE; r++) _mm512_storeu_si512(tile + r * KSTEP, rows[r]);
            }
}

// out (32 x 32 float32, rows `out_stride` floats apart) = A B over `steps` steps of 32 reduction elements, plus
// out's own values when `accumulate`; step i of A is two tiles of 16 rows x 32 (rows 0-15, then 16-31) at
// a + 1024 i, of B two tiles of 16 pair rows x 16 columns (columns 0-15, then 16-31) at b + 1024 i: the layouts
// pack_a and pack_b write.
static inline void block_product_amx(const uint16_t *a, const uint16_t *b, size_t steps, float *out, size_t out_stride,
                                 int accumulate) {
    size_t bytes = out_stride * 4;
    if (accumulate) {
        _tile_loadd(0, out, bytes); _tile_loadd(1, out + 16, bytes);
        _tile_loadd(2, out + 16 * out_stride, bytes); _tile_loadd(3, out + 16 * out_stride + 16, bytes);
    } else {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    }
    for (size_t i = 0; i < steps; i++) {
        _tile_loadd(4, a + 1024 * i, 64);
        _tile_loadd(5, a + 1024 * i + 512, 64);
        _tile_loadd(6, b + 1024 * i, 64);
        _tile_loadd(7, b + 1024 * i + 512, 64);
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, bytes); _tile_stored(1, out + 16, bytes);
    _tile_stored(2, out + 16 * out_stride, bytes); _tile_stored(3, out + 16 * out_stride + 16, bytes);
}

// The same on AVX512-BF16, from the same layouts: row r's pair (k, k + 1) of A is one 32-bit word, broadcast;
// B's pair row of 16 columns is one vector, and VDPBF16PS adds both products of each lane's pair, as TDPBF16PS.
// Eight rows at a time: 16 accumulators.
static inline void block_product_avx512(const uint16_t *a, const uint16_t *b, size_t steps, float *out, size_t out_stride,
                                        int accumulate) {
    for (size_t r0 = 0; r0 < MICRO; r0 += 8) {
        __m512 acc[8][2];
        for (size_t r = 0; r < 8; r++)
            for (size_t h = 0; h < 2; h++)
                acc[r][h] = accumulate ? _mm512_loadu_ps(out + (r0 + r) * out_stride + TILE * h) : _mm512_setzero_ps();
        for (size_t i = 0; i < steps; i++) {
            const uint16_t *rows = a + 1024 * i + KSTEP * r0, *pairs = b + 1024 * i;
            for (size_t p = 0; p < TILE; p++) {
                __m512bh b0 = (__m512bh)_mm512_loadu_si512(pairs + KSTEP * p);
                __m512bh b1 = (__m512bh)_mm512_loadu_si512(pairs + TILE * KSTEP + KSTEP * p);
                for (size_t r = 0; r < 8; r++) {
                    uint32_t pair;
                    memcpy(&pair, rows + KSTEP * r + 2 * p, sizeof pair);
                    __m512bh broadcast = (__m512bh)_mm512_set1_epi32((int)pair);
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], broadcast, b0);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], broadcast, b1);
                }
            }
        }
        for (size_t r = 0; r < 8; r++)
            for (size_t h = 0; h < 2; h++) _mm512_storeu_ps(out + (r0 + r) * out_stride + TILE * h, acc[r][h]);
    }
}

static inline void block_product(int amx, const uint16_t *a, const uint16_t *b, size_t steps, float *out, size_t out_stride,
                                 int accumulate) {
    if (amx) block_product_amx(a, b, steps, out, out_stride, accumulate);
    else block_product_avx512(a, b, steps, out, out_stride, accumulate);
}

// C[rows x cols] = acc + beta * C, from a 32 x 32 block of accumulators (blocks at C's edges, or a beta other
// than 0 and 1).
static void store_c(const float *acc, float *c, size_t ldc, size_t rows, size_t cols, float beta) {
    __mmask16 lo = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
    __mmask16 hi = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    __m512 vb = _mm512_set1_ps(beta);
    for (size_t i = 0; i < rows; i++) {
        float *row = c + i * ldc;
        __m512 r0 = _mm512_loadu_ps(acc + i * MICRO), r1 = _mm512_loadu_ps(acc + i * MICRO + 16);
        if (beta != 0) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(lo, row), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(hi, row + 16), r1);
        }
        _mm512_mask_storeu_ps(row, lo, r0);
        _mm512_mask_storeu_ps(row + 16, hi, r1);
    }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

// Every kernel here uses the 8 tiles as 16 rows of 64 bytes: 16 x 16 float32, or 16 x 32 bfloat16.
static void configure_tiles(void) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) { config.rows[t] = TILE; config.bytes_per_row[t] = 64; }
    _tile_loadconfig(&config);
}

size_t tokenflow_gemm_bf16_packed_a_elements(size_t m, size_t k) { return round32(m) * round32(k); }

void tokenflow_gemm_bf16_pack_a(const void *a, tokenflow_element_type type, size_t lda, size_t m, size_t k,
                                unsigned short *packed) {
    pack_a(a, type, 0, lda, m, k, round32(k), packed); // one block of every row and every k
}

size_t tokenflow_gemm_bf16_packed_b_elements(size_t k, size_t n) { return round32(k) * round32(n); }

void tokenflow_gemm_bf16_pack_b_rows(const float *even, const float *odd, size_t n, size_t row, size_t k,
                                     unsigned short *packed) {
    pack_pair_row(even, odd, n, round32(k) * MICRO, packed + (row / KSTEP) * (MICRO * KSTEP) + (row % KSTEP) / 2 * KSTEP);
}

void tokenflow_gemm_bf16(int transpose_b, size_t m, size_t n, size_t k, const void *a,
                         tokenflow_element_type a_type, size_t lda, const unsigned short *packed_whole_a, const void *b,
                         tokenflow_element_type b_type, size_t ldb, const unsigned short *packed_whole_b, float beta,
                         float *c, size_t ldc, void *scratch) {
    const int amx = tokenflow_bf16_current_unit() == TOKENFLOW_BF16_AMX;
    if (amx) configure_tiles();
    uint16_t *packed_a = (uint16_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63), *packed_b = packed_a + (size_t)MC * KC;
    float acc[MICRO * MICRO] __attribute__((aligned(64)));
    size_t kblocks = (k + KC - 1) / KC, kstep = ((k + kblocks - 1) / kblocks + KSTEP - 1) / KSTEP * KSTEP;
    for (size_t jc = 0; jc < n; jc += NC) {
        size_t nc = n - jc < NC ? n - jc : NC;
        for (size_t pc = 0; pc < k; pc += kstep) {
            size_t kc = k - pc < kstep ? k - pc : kstep, kc_padded = (kc + KSTEP - 1) / KSTEP * KSTEP;
            float block_beta = pc == 0 ? beta : 1;
            if (!packed_whole_b) pack_b(transpose_b, b, b_type, transpose_b ? jc * ldb + pc : pc * ldb + jc, ldb, kc, nc, kc_padded, packed_b);
            for (size_t ic = 0; ic < m; ic += MC) {
                size_t mc = m - ic < MC ? m - ic : MC;
                if (!packed_whole_a) pack_a(a, a_type, ic * lda + pc, lda, mc, kc, kc_padded, packed_a);
                for (size_t jr = 0; jr < nc; jr += MICRO) {
                    // B packed whole has panels of round32(k), as A.
                    const uint16_t *bp = packed_whole_b ? packed_whole_b + ((jc + jr) / MICRO) * round32(k) * MICRO + pc * MICRO
                                                        : packed_b + (jr / MICRO) * kc_padded * MICRO;
                    for (size_t ir = 0; ir < mc; ir += MICRO) {
                        // A packed whole has panels of round32(k): this block's k start pc / 32 steps into them.
                        const uint16_t *ap = packed_whole_a
                            ? packed_whole_a + ((ic + ir) / MICRO) * round32(k) * MICRO + pc * MICRO
                            : packed_a + (ir / MICRO) * kc_padded * MICRO;
                        size_t rows = mc - ir < MICRO ? mc - ir : MICRO, cols = nc - jr < MICRO ? nc - jr : MICRO;
                        float *out = c + (ic + ir) * ldc + jc + jr;
                        // Whole blocks accumulate in C itself (loaded into the tiles), without a copy through `acc`.
                        if (rows == MICRO && cols == MICRO && (block_beta == 0 || block_beta == 1)) {
                            block_product(amx, ap, bp, kc_padded / KSTEP, out, ldc, block_beta == 1);
                        } else {
                            block_product(amx, ap, bp, kc_padded / KSTEP, acc, MICRO, 0);
                            store_c(acc, out, ldc, rows, cols, block_beta);
                        }
                    }
                }
            }
        }
    }
    if (amx) _tile_release();
}
// ---- Attention ----
// Computed transposed, so every softmax step is lane-wise with the query rows as the vector lanes (as in the
// float32 kernel, attention_tile.inc): S^T = K Q^T, whose tile rows are keys and columns queries; the online
// softmax runs down those rows (max, exp and sum per lane, no horizontal reductions); P^T is rounded straight
// into the pairwise layout of a B operand; and O^T = V^T P^T accumulates in float32, rescaled per lane. Keys (as
// A, 32-key panels) and transposed values (as A, 32-column panels) of one head are packed once and shared by its
// query tiles; a tile is 32 queries (two 16-lane vectors), and keys go 64 at a time.

enum { QUERY_ROWS = TOKENFLOW_ATTENTION_BF16_QUERY_TILE, KEY_STEP = 64 };

size_t tokenflow_attention_bf16_packed_elements(size_t keys, size_t head_dim, size_t value_dim) {
    return round32(keys) * (round32(head_dim) + round32(value_dim));
}

size_t tokenflow_attention_bf16_scratch_floats(size_t head_dim, size_t value_dim) {
    // Q^T packed (bfloat16: 2 per float), S^T (64 x 32), P^T (bfloat16), O^T (value_dim x 32), one 32 x 32 product
    // block, the running max and sum; plus 16 floats of slack for 64-byte alignment.
    return round32(head_dim) * QUERY_ROWS / 2 + KEY_STEP * QUERY_ROWS + KEY_STEP * QUERY_ROWS / 2 +
           round32(value_dim) * QUERY_ROWS + 32 * QUERY_ROWS + 2 * QUERY_ROWS + 16;
}

// V^T as an A operand: panels of 32 value columns (rows of V^T), in each, per 32 keys, two 16 x 32 tiles.
static void pack_values_transposed(const float *v, size_t v_stride, size_t keys, size_t value_dim, size_t keys_padded,
                                   uint16_t *dst) {
    for (size_t c0 = 0; c0 < value_dim; c0 += 32)
        for (size_t j0 = 0; j0 < keys_padded; j0 += 32) {
            uint16_t *tiles = dst + ((c0 / 32) * (keys_padded / 32) + j0 / 32) * 1024;
            for (size_t j = 0; j < 32; j++) { // key j0 + j: its 32 values are column j of the tiles' rows
                uint16_t values[32];
                __m512i row = j0 + j < keys ? to_bf16(v + (j0 + j) * v_stride + c0, value_dim - c0) : _mm512_setzero_si512();
                _mm512_storeu_si512(values, row);
                for (size_t c = 0; c < 32; c++) tiles[c * 32 + j] = values[c];
            }
        }
}

void tokenflow_attention_pack_bf16(const float *k, size_t k_stride, const float *v, size_t v_stride, size_t keys,
                                   size_t head_dim, size_t value_dim, unsigned short *packed) {
    size_t keys_padded = round32(keys), dims_padded = round32(head_dim);
    pack_a(k, TOKENFLOW_ELEMENT_FLOAT32, 0, k_stride, keys, head_dim, dims_padded, packed);
    pack_values_transposed(v, v_stride, keys, value_dim, keys_padded, packed + keys_padded * dims_padded);
}

#define SUFFIX _bf16
#define VW 16
#include "vector.inc"

void tokenflow_attention_tile_bf16(const float *q, size_t q_stride, const unsigned short *packed, size_t keys,
                                   size_t head_dim, size_t value_dim, float scale, float *out, size_t out_stride,
                                   size_t rows, float *scratch) {
    const int amx = tokenflow_bf16_current_unit() == TOKENFLOW_BF16_AMX;
    if (amx) configure_tiles();
    const size_t dims_padded = round32(head_dim), values_padded = round32(value_dim), keys_padded = round32(keys);
    const uint16_t *packed_k = packed, *packed_vt = packed + keys_padded * dims_padded;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    uint16_t *qt = (uint16_t *)base;
    float *st = base + dims_padded * QUERY_ROWS / 2;
    uint16_t *pt = (uint16_t *)(st + KEY_STEP * QUERY_ROWS);
    float *ot = st + KEY_STEP * QUERY_ROWS + KEY_STEP * QUERY_ROWS / 2, *block = ot + values_padded * QUERY_ROWS;
    float *running_max = block + 32 * QUERY_ROWS, *total = running_max + QUERY_ROWS;
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);

    pack_b(1, q, TOKENFLOW_ELEMENT_FLOAT32, 0, q_stride, head_dim, rows, dims_padded, qt); // Q^T; queries past `rows` are zero, never written out
    for (size_t i = 0; i < values_padded * QUERY_ROWS; i++) ot[i] = 0;
    for (size_t r = 0; r < QUERY_ROWS; r++) { running_max[r] = -__builtin_inff(); total[r] = 0; }

    for (size_t first_key = 0; first_key < keys; first_key += KEY_STEP) {
        size_t n = keys - first_key < KEY_STEP ? keys - first_key : KEY_STEP, halves = (n + 31) / 32;
        for (size_t h = 0; h < halves; h++) // S^T rows 32h ..< 32h + 32: these 32 keys' scores of every query
            block_product(amx, packed_k + (first_key / 32 + h) * dims_padded * 32, qt, dims_padded / 32, st + 32 * h * QUERY_ROWS, QUERY_ROWS, 0);
        V correction[2];
        for (size_t t = 0; t < 2; t++) { // each vector of 16 queries
            V old_max = load_bf16(running_max + 16 * t), new_max = old_max, sum = splat_bf16(0);
            for (size_t j = 0; j < n; j++) new_max = vmax_bf16(new_max, load_bf16(st + j * QUERY_ROWS + 16 * t) * scale);
            // The first keys' correction is exp(-inf) ~ 1e-38, applied to a zero sum and a zero accumulator.
            correction[t] = exp_bf16(old_max - new_max);
            for (size_t j = 0; j < 32 * halves; j += 2) { // P^T's pair row (j, j + 1), zero past the n keys
                V even = j < n ? exp_bf16(load_bf16(st + j * QUERY_ROWS + 16 * t) * scale - new_max) : splat_bf16(0);
                V odd = j + 1 < n ? exp_bf16(load_bf16(st + (j + 1) * QUERY_ROWS + 16 * t) * scale - new_max) : splat_bf16(0);
                sum += even + odd;
                __m512i both = (__m512i)_mm512_cvtne2ps_pbh((__m512)odd, (__m512)even);
                _mm512_storeu_si512(pt + (j / 32) * 1024 + t * 512 + (j % 32) / 2 * 32, _mm512_permutexvar_epi16(interleave, both));
            }
            store_bf16(running_max + 16 * t, new_max);
            store_bf16(total + 16 * t, load_bf16(total + 16 * t) * correction[t] + sum);
        }
        for (size_t c = 0; c < values_padded; c += 32) { // O^T rows c ..< c + 32 = their correction x O^T + V^T P^T
            block_product(amx, packed_vt + (c / 32) * keys_padded * 32 + first_key * 32, pt, halves, block, QUERY_ROWS, 0);
            for (size_t i = 0; i < 32; i++)
                for (size_t t = 0; t < 2; t++) {
                    float *row = ot + (c + i) * QUERY_ROWS + 16 * t;
                    store_bf16(row, load_bf16(row) * correction[t] + load_bf16(block + i * QUERY_ROWS + 16 * t));
                }
        }
    }
    for (size_t r = 0; r < rows; r++) {
        float inverse = 1 / total[r];
        for (size_t c = 0; c < value_dim; c++) out[r * out_stride + c] = ot[c * QUERY_ROWS + r] * inverse;
    }
    if (amx) _tile_release();
}

#undef V
#undef VU
#undef VI
#undef SUFFIX
#undef VW

#pragma clang attribute pop

