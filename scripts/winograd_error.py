#!/usr/bin/env python3
"""Rounding error of Winograd F(2x2, 3x3) and F(4x4, 3x3) against an exact (float64) direct convolution, in
float32 and with bfloat16-rounded operands (transformed tiles and filters rounded, products summed in float32,
as Tensors/Winograd.swift and CKernels/bf16_products.c do), and of a direct convolution with bfloat16 operands
for scale. Why bfloat16 keeps F(2x2, 3x3) (Tensors.WinogradTile). The matrices are Lavin and Gray's, as in
CKernels/winograd.inc; an independent numpy restatement, not the engine's code.

    venv/bin/python scripts/winograd_error.py     (numpy from Tests/Fixtures/requirements.txt)
"""
import numpy as np

CHANNELS = 320  # a UNet level's input channels: the products sum this many tiles
TRIALS = 20


def bfloat16(x):
    """x rounded to the nearest bfloat16 (ties to even), kept as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


TILINGS = {
    "F(2x2, 3x3)": (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
                    np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
                    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    "F(4x4, 3x3)": (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
                    np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
                    np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                             np.float64)),
}


def relative_rms(rng, bt, g_matrix, at, rounding):
    """Relative rms error of one tile's outputs, summed over CHANNELS input channels."""
    size, outputs = bt.shape[0], at.shape[0]
    tiles = rng.standard_normal((CHANNELS, size, size))
    filters = rng.standard_normal((CHANNELS, 3, 3)) / np.sqrt(9 * CHANNELS)
    exact = sum(np.array([[(tiles[c, i:i + 3, j:j + 3] * filters[c]).sum() for j in range(outputs)]
                          for i in range(outputs)]) for c in range(CHANNELS))
    v = np.einsum("ab,cbd,ed->cae", bt, tiles, bt).astype(np.float32)
    u = np.einsum("ab,cbd,ed->cae", g_matrix, filters, g_matrix).astype(np.float32)
    if rounding:
        v, u = bfloat16(v), bfloat16(u)
    m = (v * u).sum(0, dtype=np.float32)
    y = at.astype(np.float32) @ m @ at.T.astype(np.float32)
    return np.sqrt(((y - exact) ** 2).mean() / (exact ** 2).mean())


def main():
    rng = np.random.default_rng(0)
    for name, (bt, g_matrix, at) in TILINGS.items():
        fp32 = np.mean([relative_rms(rng, bt, g_matrix, at, False) for _ in range(TRIALS)])
        bf16 = np.mean([relative_rms(rng, bt, g_matrix, at, True) for _ in range(TRIALS)])
        print(f"{name}: relative rms error {fp32:.2e} in float32, {bf16:.2e} with bfloat16 operands")
    errors, scales = [], []
    for _ in range(400):
        tiles, filters = rng.standard_normal((CHANNELS, 3, 3)), rng.standard_normal((CHANNELS, 3, 3))
        exact = (tiles * filters).sum()
        errors.append(((bfloat16(tiles).astype(np.float64) * bfloat16(filters)).sum() - exact) ** 2)
        scales.append(exact ** 2)
    print(f"direct convolution: relative rms error {np.sqrt(sum(errors) / sum(scales)):.2e} with bfloat16 operands")


if __name__ == "__main__":
    main()
