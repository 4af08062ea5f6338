// CPU features and the choice of kernel path. Compiled for any x86-64, like everything but the kernel variants
// it chooses between.
#include "tokenflow_kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

unsigned tokenflow_cpu_features(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    unsigned bits = 0;
    if (__builtin_cpu_supports("avx")) bits |= TOKENFLOW_CPU_AVX;
    if (__builtin_cpu_supports("avx2")) bits |= TOKENFLOW_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) bits |= TOKENFLOW_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) bits |= TOKENFLOW_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) bits |= TOKENFLOW_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) bits |= TOKENFLOW_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) bits |= TOKENFLOW_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512bf16")) bits |= TOKENFLOW_CPU_AVX512BF16;
    unsigned a, b, c, d; // CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22)) && (d & (1u << 24))) bits |= TOKENFLOW_CPU_AMX_BF16;
    return bits;
#else
    return 0;
#endif
}

void tokenflow_cpu_name(char *name) {
    name[0] = 0;
#if defined(__x86_64__)
    unsigned words[12];
    if (__get_cpuid_max(0x80000000, NULL) < 0x80000004) return;
    for (unsigned leaf = 0; leaf < 3; leaf++)
        __get_cpuid(0x80000002 + leaf, &words[4 * leaf], &words[4 * leaf + 1], &words[4 * leaf + 2], &words[4 * leaf + 3]);
    memcpy(name, words, 48);
    name[48] = 0;
#endif
}

tokenflow_path tokenflow_best_path(void) {
    unsigned has = tokenflow_cpu_features();
    unsigned avx512 = TOKENFLOW_CPU_AVX512F | TOKENFLOW_CPU_AVX512BW | TOKENFLOW_CPU_AVX512VL;
    if ((has & (avx512 | TOKENFLOW_CPU_AVX2_PATH)) == (avx512 | TOKENFLOW_CPU_AVX2_PATH)) return TOKENFLOW_PATH_AVX512;
    if ((has & TOKENFLOW_CPU_AVX2_PATH) == TOKENFLOW_CPU_AVX2_PATH) return TOKENFLOW_PATH_AVX2;
    return TOKENFLOW_PATH_PORTABLE;
}

const char *tokenflow_path_name(tokenflow_path path) {
    switch (path) {
    case TOKENFLOW_PATH_AVX512: return "avx512";
    case TOKENFLOW_PATH_AVX2: return "avx2";
    default: return "portable";
    }
}

/* -1 until first asked; then the path in use. */
static atomic_int current_path = -1;

tokenflow_path tokenflow_current_path(void) {
    int path = atomic_load(&current_path);
    if (path >= 0) return (tokenflow_path)path;
    tokenflow_path chosen = tokenflow_best_path();
    const char *asked = getenv("TOKENFLOW_KERNELS");
    if (asked != NULL) {
        for (int p = TOKENFLOW_PATH_PORTABLE; p <= TOKENFLOW_PATH_AVX512; p++)
            if (strcmp(asked, tokenflow_path_name((tokenflow_path)p)) == 0 && p < (int)chosen) chosen = (tokenflow_path)p;
    }
    int expected = -1;
    atomic_compare_exchange_strong(&current_path, &expected, (int)chosen);
    return (tokenflow_path)atomic_load(&current_path);
}

int tokenflow_force_path(tokenflow_path path) {
    if ((int)path < TOKENFLOW_PATH_PORTABLE || path > tokenflow_best_path()) return -1;
    atomic_store(&current_path, (int)path);
    return 0;
}
