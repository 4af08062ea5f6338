// oneDNN (Debian's libdnnl-dev): its float32 GEMM, which the engine's float32 products run on (GEMM.swift).
#include <dnnl.h>

// Debian builds oneDNN on libgomp's OpenMP, whose thread count is a per-thread setting. Declared here: omp.h is
// gcc's, not on clang's include path.
int omp_get_max_threads(void);
void omp_set_num_threads(int);

/* Row-major C = alpha op(A) op(B) + beta C (op: 'N' or 'T'), on the calling thread alone: the engine splits
 * products over its own workers, and oneDNN would otherwise start an OpenMP team of every core inside each of
 * them. The calling thread's OpenMP thread count (a host's own OpenMP code may use it) is restored after.
 * Returns 0, or -1 when oneDNN refused: it fails only when it cannot allocate its working buffers, which its
 * single-threaded driver does before it writes C (oneDNN's src/cpu/x64/gemm/gemm_driver.cpp; only a beta other
 * than 0 or 1 is applied to C first). M, N, K > 0. */
static inline int tokenflow_dnnl_sgemm(char transpose_a, char transpose_b, long m, long n, long k, float alpha,
                                       const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    int threads = omp_get_max_threads();
    if (threads != 1) omp_set_num_threads(1);
    dnnl_status_t status = dnnl_sgemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (threads != 1) omp_set_num_threads(threads);
    return status == dnnl_success ? 0 : -1;
}

