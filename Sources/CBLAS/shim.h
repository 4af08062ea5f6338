// OpenBLAS's CBLAS interface plus its thread-control extensions (openblas_set_num_threads).
#include <cblas.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* What this CPU has, as TOKENFLOW_CPU_* bits. In C, and inline in the header, so it is compiled for any x86-64
 * and can run before any kernel: an older CPU gets an error message instead of SIGILL. The kernels are compiled
 * for x86-64-v3 and need TOKENFLOW_CPU_KERNELS (AVX2, FMA, F16C: Intel Haswell, AMD Zen and later). */
enum {
    TOKENFLOW_CPU_AVX = 1 << 0, TOKENFLOW_CPU_AVX2 = 1 << 1, TOKENFLOW_CPU_FMA = 1 << 2, TOKENFLOW_CPU_F16C = 1 << 3,
    TOKENFLOW_CPU_AVX512F = 1 << 4, TOKENFLOW_CPU_AVX512BW = 1 << 5, TOKENFLOW_CPU_AVX512VL = 1 << 6,
    TOKENFLOW_CPU_AVX512BF16 = 1 << 7,
    TOKENFLOW_CPU_KERNELS = TOKENFLOW_CPU_AVX2 | TOKENFLOW_CPU_FMA | TOKENFLOW_CPU_F16C,
};

static inline unsigned tokenflow_cpu_features(void) {
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
    return bits;
#else
    return TOKENFLOW_CPU_KERNELS;
#endif
}

/* The CPU's brand string (cpuid leaves 0x80000002-4, "Intel(R) Xeon(R) Processor"), or "" when it has none;
 * `name` holds at least 49 bytes. */
static inline void tokenflow_cpu_name(char *name) {
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

/* Makes OpenBLAS use its kernels for `core` ("Haswell", "SkylakeX", "Cooperlake"): a DYNAMIC_ARCH OpenBLAS
 * picks its kernels once, when it loads, and falls back to Prescott (SSE3) for a CPU it does not know (an
 * Emerald Rapids Xeon with Debian's 0.3.21), 3-8x slower than the AVX-512 kernels the CPU runs. OpenBLAS reads
 * OPENBLAS_CORETYPE when it initialises, so the choice is re-made through its own gotoblas_dynamic_quit/init
 * with the variable set for that call (then removed: the host's environment is left as it was). The library is
 * the one already loaded under the soname this package links (RTLD_NOLOAD: found also when a host loaded
 * libtokenflow with RTLD_LOCAL).
 * Returns 0 when done, -1 when this OpenBLAS cannot (not DYNAMIC_ARCH: it has no dynamic_init). Call it before
 * any GEMM runs: for a moment OpenBLAS has no kernels, and the variable is in the environment. This library
 * calls it once, before its first kernel; a host that itself runs GEMMs with the same OpenBLAS on other
 * threads at that moment should set OPENBLAS_CORETYPE itself, which makes this library leave OpenBLAS alone. */
static inline int tokenflow_blas_select_core(const char *core) {
    void *library = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
    if (library == NULL) return -1;
    void (*quit)(void) = (void (*)(void))dlsym(library, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(library, "gotoblas_dynamic_init");
    if (quit == NULL || init == NULL) { dlclose(library); return -1; }
    setenv("OPENBLAS_CORETYPE", core, 1);
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
    dlclose(library);
    return 0;
}
