/* An LD_PRELOAD stand-in for oneDNN's dnnl_sgemm that refuses every product, as oneDNN does when it cannot
 * allocate its working buffers (dnnl_out_of_memory, C untouched): the engine must compute them on OpenBLAS.
 * Prints how many it refused at exit, so the test knows the products came through it. */
#include <stdatomic.h>
#include <stdio.h>

static atomic_long refused;

int dnnl_sgemm(char transa, char transb, long m, long n, long k, float alpha, const float *a, long lda, const float *b,
               long ldb, float beta, float *c, long ldc) {
    (void)transa, (void)transb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb,
        (void)beta, (void)c, (void)ldc;
    atomic_fetch_add(&refused, 1);
    return 1; /* dnnl_out_of_memory */
}

__attribute__((destructor)) static void report(void) { fprintf(stderr, "dnnl_refuses: refused %ld products\n", atomic_load(&refused)); }
