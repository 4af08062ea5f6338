// The compiler targets of the instruction-set paths, declared once for every kernel file. They match what
// tokenflow_best_path requires of the CPU for each path (cpu.c).
#ifndef TOKENFLOW_TARGETS_H
#define TOKENFLOW_TARGETS_H

#define TOKENFLOW_TARGET_AVX2 "avx2,fma,f16c"
#define TOKENFLOW_TARGET_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
// The bfloat16 kernels on AMX (amx_bf16.c): run only where tokenflow_gemm_bf16_available() says so.
#define TOKENFLOW_TARGET_AMX "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,amx-tile,amx-bf16"

#endif
