// Widening 16-bit floats (IEEE half, bfloat16) to float32: on load from a safetensors file, and for
// every kernel call that uses a weight kept in half precision. One variant per instruction-set path.
#include "targets.h"
#include "tokenflow_kernels.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t load_u16(const unsigned char *p) {
    uint16_t value;
    memcpy(&value, p, 2); // the source is a safetensors mapping: no alignment
    return value;
}

static inline float from_bits(uint32_t bits) {
    float value;
    memcpy(&value, &bits, 4);
    return value;
}

// Exact for every half value, subnormals, infinities and NaN payloads included.
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0x1f) return from_bits(sign | 0x7f800000 | (mantissa << 13));
    if (exponent != 0) return from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
    float magnitude = (float)mantissa * 0x1p-24f; // zero or subnormal: mantissa x 2^-24, exact in float32
    return sign ? -magnitude : magnitude;
}

static void widen_half_portable(const unsigned char *src, float *dst, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = half_to_float(load_u16(src + 2 * i));
}

__attribute__((target(TOKENFLOW_TARGET_AVX2))) static void widen_half_avx2(const unsigned char *src, float *dst, size_t count) {
    size_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    for (; i < count; i++) dst[i] = half_to_float(load_u16(src + 2 * i));
}

__attribute__((target(TOKENFLOW_TARGET_AVX512))) static void widen_half_avx512(const unsigned char *src, float *dst,
                                                                                           size_t count) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 2 * i))));
    for (; i < count; i++) dst[i] = half_to_float(load_u16(src + 2 * i));
}

// bfloat16 is the upper half of a float32: the compiler vectorises this loop for each target.
#define WIDEN_BFLOAT16_BODY                                                                                        \
    for (size_t i = 0; i < count; i++) dst[i] = from_bits((uint32_t)load_u16(src + 2 * i) << 16);

static void widen_bfloat16_portable(const unsigned char *src, float *dst, size_t count) { WIDEN_BFLOAT16_BODY }
__attribute__((target(TOKENFLOW_TARGET_AVX2))) static void widen_bfloat16_avx2(const unsigned char *src, float *dst, size_t count) {
    WIDEN_BFLOAT16_BODY
}
__attribute__((target(TOKENFLOW_TARGET_AVX512))) static void widen_bfloat16_avx512(const unsigned char *src, float *dst,
                                                                                          size_t count) {
    WIDEN_BFLOAT16_BODY
}

void tokenflow_widen_half(const void *src, float *dst, size_t count) {
    switch (tokenflow_current_path()) {
    case TOKENFLOW_PATH_AVX512: widen_half_avx512(src, dst, count); break;
    case TOKENFLOW_PATH_AVX2: widen_half_avx2(src, dst, count); break;
    default: widen_half_portable(src, dst, count);
    }
}

void tokenflow_widen_bfloat16(const void *src, float *dst, size_t count) {
    switch (tokenflow_current_path()) {
    case TOKENFLOW_PATH_AVX512: widen_bfloat16_avx512(src, dst, count); break;
    case TOKENFLOW_PATH_AVX2: widen_bfloat16_avx2(src, dst, count); break;
    default: widen_bfloat16_portable(src, dst, count);
    }
}
