// Activations, GEGLU, group and layer normalization, softmax and the scaled add (tokenflow_kernels.h), one
// variant per instruction-set path from elementwise.inc.
#include "targets.h"
#include "tokenflow_kernels.h"

#define KERNEL_FILE "elementwise.inc"
#include "every_path.inc"

void tokenflow_activation_apply(tokenflow_activation activation, const float *src, float *dst, size_t count) {
    TOKENFLOW_DISPATCH(activation, activation, src, dst, count)
}

void tokenflow_add_scaled(float *target, const float *other, size_t count, float scale) {
    TOKENFLOW_DISPATCH(add_scaled, target, other, count, scale)
}

void tokenflow_geglu(const float *src, float *dst, size_t rows, size_t width) {
    TOKENFLOW_DISPATCH(geglu, src, dst, rows, width)
}

void tokenflow_group_norm(const float *x, float *out, size_t channels, size_t spatial, const float *gamma,
                          const float *beta, float eps, tokenflow_activation activation) {
    TOKENFLOW_DISPATCH(group_norm, x, out, channels, spatial, gamma, beta, eps, activation)
}

void tokenflow_layer_norm(const float *x, float *out, size_t rows, size_t width, const float *gamma, const float *beta,
                          float eps) {
    TOKENFLOW_DISPATCH(layer_norm, x, out, rows, width, gamma, beta, eps)
}

void tokenflow_softmax(const float *x, float *out, size_t rows, size_t width) {
    TOKENFLOW_DISPATCH(softmax, x, out, rows, width)
}
