// The compiler targets of the instruction-set paths, declared once for every kernel file. They match what
// tokenflow_best_path requires of the CPU for each path (cpu.c).
#ifndef TOKENFLOW_TARGETS_H
#define TOKENFLOW_TARGETS_H

#define TOKENFLOW_TARGET_AVX2 "avx2,fma,f16c"
#define TOKENFLOW_TARGET_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
// The bfloat16 kernels (bf16_products.c): run only where tokenflow_bf16_current_unit() is not NONE, their AMX
// instructions only where it is AMX (compilers emit those only from intrinsics).
#define TOKENFLOW_TARGET_BF16 "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c,amx-tile,amx-bf16"

// Calls the current path's variant of a kernel written once per path: NAME_avx512, NAME_avx2 or NAME_portable.
#define TOKENFLOW_DISPATCH(name, ...)                                                                              \
    switch (tokenflow_current_path()) {                                                                            \
    case TOKENFLOW_PATH_AVX512: name##_avx512(__VA_ARGS__); break;                                                 \
    case TOKENFLOW_PATH_AVX2: name##_avx2(__VA_ARGS__); break;                                                     \
    default: name##_portable(__VA_ARGS__);                                                                         \
    }

#endif
