// libFuzzer's entry points (compiler-rt, shipped with the Swift toolchain as libclang_rt.fuzzer), for the
// campaign build of tokenflow-fuzz (-sanitize=fuzzer -DLIBFUZZER). The regular build never references
// them, so it links without the fuzzer runtime.
#include <stddef.h>
#include <stdint.h>

// Runs libFuzzer with `callback` as the function under test (the program keeps its own main).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
// libFuzzer's own mutations, for use inside a custom mutator.
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
