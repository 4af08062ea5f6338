// OpenBLAS's CBLAS interface plus its thread-control extensions (openblas_set_num_threads).
#include <cblas.h>

/* Whether this CPU runs the kernels, which are compiled for x86-64-v3 (AVX2, FMA, F16C: Intel Haswell, AMD
 * Zen and later). In C, and inline in the header, so the check itself is compiled for any x86-64 and can
 * run before any kernel: an older CPU gets an error message instead of SIGILL. */
static inline int tokenflow_cpu_runs_kernels(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return 1;
#endif
}
