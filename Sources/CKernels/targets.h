// The compiler targets of the instruction-set paths, declared once for every kernel file. They match what
// tokenflow_best_path requires of the CPU for each path (cpu.c).
#ifndef TOKENFLOW_TARGETS_H
#define TOKENFLOW_TARGETS_H

#define TOKENFLOW_TARGET_AVX2 "avx2,fma,f16c"
#define TOKENFLOW_TARGET_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
// The bfloat16 kernels on AMX (amx_bf16.c): run only where tokenflow_gemm_bf16_available() says so.
#define TOKENFLOW_TARGET_AMX "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,amx-tile,amx-bf16"

// Calls the current path's variant of a kernel written once per path: NAME_avx512, NAME_avx2 or NAME_portable.
#define TOKENFLOW_DISPATCH(name, ...)                                                                              \
    switch (tokenflow_current_path()) {                                                                            \
    case TOKENFLOW_PATH_AVX512: name##_avx512(__VA_ARGS__); break;                                                 \
    case TOKENFLOW_PATH_AVX2: name##_avx2(__VA_ARGS__); break;                                                     \
    default: name##_portable(__VA_ARGS__);                                                                         \
    }

#endif
