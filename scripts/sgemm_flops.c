// Counts the float32 GEMM work of any command that runs the engine (a diagnostic, not a test): an LD_PRELOAD
// interposer on oneDNN's dnnl_sgemm and OpenBLAS's cblas_sgemm (GEMM.swift's two libraries) that sums 2*M*N*K
// per call and prints the totals at exit, split into products with an untransposed right operand (mostly
// convolutions: im2col and Winograd) and a transposed one (mostly linear layers). A product oneDNN refuses is
// computed by OpenBLAS and counted twice.
// bfloat16 products go through neither and are not counted.
//   cc -O2 -shared -fPIC -o /tmp/sgemm_flops.so scripts/sgemm_flops.c -ldl
//   LD_PRELOAD=/tmp/sgemm_flops.so .build/release/tokenflow-cli edit ... --precision fp32
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
static _Atomic long long untransposed_b, other, calls;

void cblas_sgemm(int order, int transpose_a, int transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    static _Atomic(sgemm_fn) real;
    if (!real) real = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    long long flops = 2LL * m * n * k;
    if (transpose_b == 111 /* CblasNoTrans */) untransposed_b += flops; else other += flops;
    calls++;
    real(order, transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

typedef int (*dnnl_sgemm_fn)(char, char, long, long, long, float, const float *, long, const float *, long, float, float *, long);

int dnnl_sgemm(char transpose_a, char transpose_b, long m, long n, long k, float alpha, const float *a, long lda,
               const float *b, long ldb, float beta, float *c, long ldc) {
    static _Atomic(dnnl_sgemm_fn) real;
    if (!real) real = (dnnl_sgemm_fn)dlsym(RTLD_NEXT, "dnnl_sgemm");
    long long flops = 2LL * m * n * k;
    if (transpose_b == 'N' || transpose_b == 'n') untransposed_b += flops; else other += flops;
    calls++;
    return real(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

__attribute__((destructor)) static void report(void) {
    if (calls) fprintf(stderr, "sgemm_flops: %lld calls, %.1f GFLOP with B untransposed (mostly convolutions), %.1f GFLOP with B transposed (mostly linear layers)\n",
                       (long long)calls, untransposed_b / 1e9, other / 1e9);
}
