/* edgevit int8 kernels for microcontrollers: portable C99, no malloc, no floating point.
 *
 * Tensors are int8, NCHW, batch 1, each with a per-tensor (scale, zero point); weights are int8 per-output-channel
 * symmetric; accumulators are int32. The Python reference (edgevit/backends/mcu/reference.py) is these kernels in
 * numpy and the generated model must equal it bit for bit, so every rounding is spelled out here:
 *
 *   requantize(x, M, shift) = ((x * M) >> (30 - shift)) + 1) >> 1      (int64, arithmetic shifts: CMSIS-NN's
 *                              single rounding; x * M * 2^(shift-31) rounded half up)
 *   rdiv(n, d), d > 0       = n / d rounded half away from zero
 *
 * No intrinsics: the hot loops (1x1 convolution, bmm) are counted int32 loops over restrict pointers, the form
 * arm-none-eabi-gcc 12.2 -O3 -mcpu=cortex-m55 -mfloat-abi=hard vectorises to Helium. Its MVE back end cannot
 * vectorise an int8 -> int32 widening multiply-accumulate (-fopt-info-vec-missed: "relevant stmt not supported:
 * (long int) _x"), so those kernels widen their reused operand once into an int32 scratch from the arena.
 */
#ifndef EDGEVIT_KERNELS_H
#define EDGEVIT_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline int32_t ev_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int64_t product = (int64_t)acc * (int64_t)multiplier;
    const int64_t half = product >> (30 - shift);   /* 31 - shift - 1 */
    return (int32_t)((half + 1) >> 1);
}

static inline int8_t ev_clamp8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

typedef struct {
    int32_t in_c, in_h, in_w, out_c, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    int32_t input_zero_point, output_zero_point, act_min, act_max;
} ev_conv_params;

typedef struct {
    int32_t rows, in_features, out_features, output_zero_point, act_min, act_max;
} ev_fc_params;

typedef struct {                       /* elementwise add / mul with 4-D broadcasting (stride 0 = broadcast) */
    int32_t out_shape[4], a_strides[4], b_strides[4];
    int32_t a_zero_point, b_zero_point;
    int32_t a_multiplier, a_shift, b_multiplier, b_shift;   /* add only */
    int32_t multiplier, shift;                              /* add: the sum's; mul: the product's */
    int32_t left_shift, output_zero_point, act_min, act_max;
} ev_binary_params;

typedef struct {
    int32_t batch, m, k, n, a_zero_point, b_zero_point, multiplier, shift, output_zero_point;
} ev_bmm_params;

/* Dense KxK convolution (any stride / zero padding: padded taps contribute nothing). */
void ev_conv2d(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
               const int32_t *multiplier, const int32_t *shift, const ev_conv_params *p);
/* 1x1 stride-1 convolution; the input zero point is folded into bias (bias - z_x * sum(w)). `scratch`: int32
 * (in_c + 1) * pixels (the arena planner gives it). */
void ev_conv1x1(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                const int32_t *multiplier, const int32_t *shift, int32_t *scratch, const ev_conv_params *p);
/* Depthwise KxK convolution (one filter per channel). */
void ev_depthwise_conv2d(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, const ev_conv_params *p);
/* rows x in_features -> rows x out_features; the input zero point is folded into bias. */
void ev_fully_connected(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, const ev_fc_params *p);
/* TFLite-style add: each side (a - z) * 2^left_shift requantised to a common scale, the sum requantised. */
void ev_add(const int8_t *a, const int8_t *b, int8_t *out, const ev_binary_params *p);
/* (a - z_a) * (b - z_b) requantised. */
void ev_mul(const int8_t *a, const int8_t *b, int8_t *out, const ev_binary_params *p);
/* Batched matmul (B, M, K) x (B, K, N), both operands with zero points. `scratch`: int32 (k + 1) * n. */
void ev_bmm(const int8_t *a, const int8_t *b, int8_t *out, int32_t *scratch, const ev_bmm_params *p);
/* Mean over the trailing `inner` values of each of `rows` rows: sum - inner * z_x, requantised. */
void ev_mean(const int8_t *in, int8_t *out, int32_t rows, int32_t inner, int32_t input_zero_point,
             int32_t multiplier, int32_t shift, int32_t output_zero_point);
/* Softmax over rows of `inner`: exp_table[k] = round(2^16 exp(-s_x k)); output scale 1/256, zero point -128. */
void ev_softmax(const int8_t *in, int8_t *out, int32_t rows, int32_t inner, const uint32_t *exp_table);
/* Standardisation of rows of n values given each row's int8 mean (same quantization as x):
 * d = x - m, R = isqrt(2^16 (2^8 sum d^2 + eps_term)), y = z_y + rdiv(d * k, R) (z_y when R = 0). */
void ev_norm(const int8_t *in, const int8_t *mean, int8_t *out, int32_t rows, int32_t n, int64_t eps_term,
             int64_t k, int32_t output_zero_point);
/* y = table[x + 128]: any elementwise function (ReLU, sigmoid, GELU, requantisation) of one int8 tensor. */
void ev_lut(const int8_t *in, int8_t *out, int32_t size, const int8_t *table);
/* One input of a concat: its `outer` rows of `chunk` bytes go to bytes [offset, offset + chunk) of the output's
 * rows of `out_chunk` bytes (a concat is one call per input). */
void ev_concat_part(const int8_t *in, int8_t *out, int32_t outer, int32_t chunk, int32_t out_chunk, int32_t offset);
void ev_slice(const int8_t *in, int8_t *out, int32_t outer, int32_t in_chunk, int32_t offset, int32_t out_chunk);
/* 4-D permutation: out[i0][i1][i2][i3] = in[...] with out dim d = in dim perm[d]. */
void ev_transpose4(const int8_t *in, int8_t *out, const int32_t in_shape[4], const int32_t perm[4]);
void ev_copy(const int8_t *in, int8_t *out, int32_t size);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVIT_KERNELS_H */
