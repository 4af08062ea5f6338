// The CPU's float32 FMA peak, for benchmarks (kernel figures are reported as a share of it): independent
// multiply-adds on as many accumulators as hide the FMA latency, on the current path's vector width.
#include "targets.h"
#include "tokenflow_kernels.h"

#define PEAK_LOOP(VW)                                                                                              \
    typedef float vector __attribute__((vector_size(VW * 4)));                                                  \
    vector acc[ACCUMULATORS], x, y;                                                                             \
    for (int i = 0; i < VW; i++) { x[i] = 1.0f + 1e-7f * i; y[i] = 1e-7f; }                                     \
    for (int a = 0; a < ACCUMULATORS; a++) acc[a] = y * (float)a;                                               \
    for (size_t n = 0; n < iterations; n++) {                                                                   \
        for (int a = 0; a < ACCUMULATORS; a++) acc[a] = acc[a] * x + y;                                         \
        __asm__ volatile("" : "+v"(x)); /* keeps the loop from being folded */                                  \
    }                                                                                                           \
    float sum = 0;                                                                                              \
    for (int a = 0; a < ACCUMULATORS; a++)                                                                      \
        for (int i = 0; i < VW; i++) sum += acc[a][i];                                                          \
    return sum;

enum { ACCUMULATORS = 12 }; // FMA latency 4 cycles x 2 ports, with room to spare

static float peak_portable(size_t iterations) { PEAK_LOOP(4) }
__attribute__((target(TOKENFLOW_TARGET_AVX2))) static float peak_avx2(size_t iterations) { PEAK_LOOP(8) }
__attribute__((target(TOKENFLOW_TARGET_AVX512))) static float peak_avx512(size_t iterations) { PEAK_LOOP(16) }

size_t tokenflow_fma_probe_flops_per_iteration(void) {
    size_t lanes = tokenflow_current_path() == TOKENFLOW_PATH_AVX512 ? 16 : tokenflow_current_path() == TOKENFLOW_PATH_AVX2 ? 8 : 4;
    return 2 * ACCUMULATORS * lanes;
}

float tokenflow_fma_probe(size_t iterations) {
    switch (tokenflow_current_path()) {
    case TOKENFLOW_PATH_AVX512: return peak_avx512(iterations);
    case TOKENFLOW_PATH_AVX2: return peak_avx2(iterations);
    default: return peak_portable(iterations);
    }
}
