// OpenBLAS's CBLAS interface plus its thread-control extensions (openblas_set_num_threads).
#include <cblas.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Makes OpenBLAS use its kernels for `core` ("Nehalem", "Haswell", "SkylakeX", ...): a DYNAMIC_ARCH OpenBLAS
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
