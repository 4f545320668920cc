#!/usr/bin/env python3
"""An independent reference for mpsearch's GPTQ (src/compress/gptq.rs): a short numpy transcription of
the published algorithm, `GPTQ.fasterquant` of IST-DASLab/gptq (gptq.py), in float64.

    python3 scripts/gptq-reference.py < problem.json > answer.json

problem.json: {"rows", "cols", "w": [row-major weights], "h": [row-major H = XᵀX], "bits", "sym": bool,
"granularity": "tensor" | "channel" | <group size>, "actorder": bool, "percdamp", "blocksize"}.
answer.json: {"q": [row-major dequantized weights], "codes": [row-major integer codes q],
"scales": [...], "zeros": [...]} (scales and zero points in mpsearch's group order: row-major, one per
tensor, row, or group of a row).

The loop is the reference's, line for line: dead inputs (H_ii = 0 -> H_ii = 1, weight column 0),
act-order by decreasing diag(H) (a stable sort: ties keep column order), dampening
`percdamp * mean(diag H)`, the upper Cholesky factor of H^-1, blocks of `blocksize` columns, per column
`err = (w - q) / U_ii` and `W1[:, i:] -= err * U[i, i:]`, then `W[:, i2:] -= Err1 @ U[i1:i2, i2:]`; group
parameters fitted on the global W when a group's first column is reached, or up front when act-order is
on (the reference's `static_groups`, which mpsearch always uses with act-order).

What is mpsearch's instead of the reference's, on purpose:
- the quantizer: mpsearch's grids (symmetric: codes -(2^(b-1)-1)..2^(b-1)-1, zero point 0, scale
  max|x| / (2^(b-1)-1); asymmetric: codes 0..2^b-1, range widened to include 0, zero point
  round(-lo / s)), min/max scales only, rounding half to even;
- per-tensor and per-channel parameters are fitted after dead columns are zeroed (the reference fits
  them before).
Only numpy and the standard library are needed.
"""

import json
import sys

import numpy as np


def find_params(x, bits, sym, per_row):
    """(scale, zero) arrays, one per row of x (per_row) or one for all of x."""
    x = x if per_row else x.reshape(1, -1)
    lo = np.minimum(x.min(axis=1), 0.0)
    hi = np.maximum(x.max(axis=1), 0.0)
    if sym:
        qmax = 2 ** (bits - 1) - 1
        amax = np.maximum(-lo, hi)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        zero = np.zeros_like(scale)
    else:
        qmax = 2**bits - 1
        ok = hi > lo
        scale = np.where(ok, (hi - lo) / np.where(ok, qmax, 1.0), 1.0)
        zero = np.where(ok, np.clip(np.round(-lo / scale), 0, qmax), 0.0)
    return scale, zero


def grid(bits, sym):
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if sym else (0, 2**bits - 1)


def quantize(w, scale, zero, bits, sym):
    """Codes and dequantized values of the column w (one scale and zero per row)."""
    qmin, qmax = grid(bits, sym)
    c = np.clip(np.round(w / scale) + zero, qmin, qmax)
    return c, (c - zero) * scale


def fasterquant(w, h, bits, sym, granularity, actorder, percdamp, blocksize):
    rows, columns = w.shape
    w, h = w.copy(), h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    groupsize = granularity if isinstance(granularity, int) else -1
    per_row = granularity != "tensor"
    static_groups = actorder
    per_group_row = -(-columns // groupsize) if groupsize != -1 else 1

    if groupsize == -1:
        scale, zero = find_params(w, bits, sym, per_row)
        scale = np.broadcast_to(scale, (rows,)).copy()
        zero = np.broadcast_to(zero, (rows,)).copy()
    all_scales = np.zeros((rows, per_group_row))
    all_zeros = np.zeros((rows, per_group_row))
    if static_groups and groupsize != -1:
        groups = []
        for g, i in enumerate(range(0, columns, groupsize)):
            groups.append(find_params(w[:, i : i + groupsize], bits, sym, True))
            all_scales[:, g], all_zeros[:, g] = groups[-1]

    perm = np.arange(columns)
    if actorder:
        perm = np.argsort(-np.diag(h), kind="stable")
        w = w[:, perm]
        h = h[perm][:, perm]
    invperm = np.argsort(perm)

    q = np.zeros_like(w)
    codes = np.zeros_like(w)
    damp = percdamp * np.mean(np.diag(h))
    h[np.arange(columns), np.arange(columns)] += damp
    hinv = np.linalg.inv(h)
    hinv = (hinv + hinv.T) / 2
    u = np.linalg.cholesky(hinv).T

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        c1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(count):
            col = w1[:, i]
            d = u1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = find_params(w[:, (i1 + i) : (i1 + i + groupsize)], bits, sym, True)
                        all_scales[:, (i1 + i) // groupsize] = scale
                        all_zeros[:, (i1 + i) // groupsize] = zero
                else:
                    idx = perm[i1 + i]
                    scale, zero = groups[idx // groupsize]
            c1[:, i], q1[:, i] = quantize(col, scale, zero, bits, sym)
            e = (col - q1[:, i]) / d
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        q[:, i1:i2] = q1
        codes[:, i1:i2] = c1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]

    q = q[:, invperm]
    codes = codes[:, invperm]
    if groupsize == -1:
        all_scales = scale[:1] if not per_row else scale
        all_zeros = zero[:1] if not per_row else zero
    return q, codes, all_scales.reshape(-1), all_zeros.reshape(-1)


def main():
    p = json.load(sys.stdin)
    rows, cols = p["rows"], p["cols"]
    w = np.array(p["w"], dtype=np.float64).reshape(rows, cols)
    h = np.array(p["h"], dtype=np.float64).reshape(cols, cols)
    q, codes, scales, zeros = fasterquant(
        w, h, p["bits"], p["sym"], p["granularity"], p["actorder"], p["percdamp"], p["blocksize"]
    )
    json.dump(
        {
            "q": q.reshape(-1).tolist(),
            "codes": codes.reshape(-1).astype(int).tolist(),
            "scales": scales.tolist(),
            "zeros": zeros.tolist(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
