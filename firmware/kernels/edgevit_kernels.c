/* edgevit int8 kernels: see edgevit_kernels.h for the arithmetic (it is the Python reference's, bit for bit). */
#include "edgevit_kernels.h"

#include <string.h>


static int64_t ev_rdiv64(int64_t num, int64_t den)
{
    return num >= 0 ? (num + den / 2) / den : -((-num + den / 2) / den);
}

static uint64_t ev_isqrt64(uint64_t v)
{
    uint64_t root = 0, bit = (uint64_t)1 << 62;
    while (bit > v) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (v >= root + bit) {
            v -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return root;
}

void ev_conv2d(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
               const int32_t *multiplier, const int32_t *shift, const ev_conv_params *p)
{
    const int32_t zx = p->input_zero_point;
    for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int8_t *w_oc = weights + oc * p->in_c * p->kernel_h * p->kernel_w;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                int32_t acc = bias[oc];
                const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                for (int32_t ic = 0; ic < p->in_c; ++ic) {
                    const int8_t *x_ic = in + ic * p->in_h * p->in_w;
                    const int8_t *w_ic = w_oc + ic * p->kernel_h * p->kernel_w;
                    for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                        const int32_t iy = y0 + ky;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                            const int32_t ix = x0 + kx;
                            if (ix >= 0 && ix < p->in_w) {
                                acc += ((int32_t)x_ic[iy * p->in_w + ix] - zx) * w_ic[ky * p->kernel_w + kx];
                            }
                        }
                    }
                }
                acc = ev_requantize(acc, multiplier[oc], shift[oc]) + p->output_zero_point;
                out[(oc * p->out_h + oy) * p->out_w + ox] = ev_clamp8(acc, p->act_min, p->act_max);
            }
        }
    }
}

/* The two loops arm-none-eabi-gcc 12 vectorises to Helium: same-width int32, restrict pointers, a counted loop
 * (vldrw.32 / vmul.i32 / vadd.i32 with tail predication). Its MVE back end has no int8 -> int32 widening, so the
 * kernels widen their reused operand into the layer's int32 scratch once (scalar) and run these over it. */
static void ev_axpy_s32(int32_t *restrict acc, const int32_t *restrict x, int32_t w, int32_t n)
{
    for (int32_t j = 0; j < n; ++j) {
        acc[j] += x[j] * w;
    }
}

static void ev_widen_s8(int32_t *restrict out, const int8_t *restrict in, int32_t offset, int32_t n)
{
    for (int32_t j = 0; j < n; ++j) {
        out[j] = in[j] - offset;
    }
}

void ev_conv1x1(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                const int32_t *multiplier, const int32_t *shift, int32_t *scratch, const ev_conv_params *p)
{
    const int32_t pixels = p->in_h * p->in_w;
    int32_t *x32 = scratch;                              /* in_c x pixels, widened once */
    int32_t *acc = scratch + p->in_c * pixels;           /* pixels accumulators of one output channel */
    ev_widen_s8(x32, in, 0, p->in_c * pixels);
    for (int32_t oc = 0; oc < p->out_c; ++oc) {
        const int8_t *w_oc = weights + oc * p->in_c;
        for (int32_t j = 0; j < pixels; ++j) {
            acc[j] = bias[oc];
        }
        for (int32_t ic = 0; ic < p->in_c; ++ic) {
            ev_axpy_s32(acc, x32 + ic * pixels, w_oc[ic], pixels);
        }
        for (int32_t j = 0; j < pixels; ++j) {
            const int32_t v = ev_requantize(acc[j], multiplier[oc], shift[oc]) + p->output_zero_point;
            out[oc * pixels + j] = ev_clamp8(v, p->act_min, p->act_max);
        }
    }
}

void ev_depthwise_conv2d(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, const ev_conv_params *p)
{
    const int32_t zx = p->input_zero_point;
    for (int32_t c = 0; c < p->out_c; ++c) {
        const int8_t *x_c = in + c * p->in_h * p->in_w;
        const int8_t *w_c = weights + c * p->kernel_h * p->kernel_w;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                int32_t acc = bias[c];
                const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                for (int32_t ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = y0 + ky;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = x0 + kx;
                        if (ix >= 0 && ix < p->in_w) {
                            acc += ((int32_t)x_c[iy * p->in_w + ix] - zx) * w_c[ky * p->kernel_w + kx];
                        }
                    }
                }
                acc = ev_requantize(acc, multiplier[c], shift[c]) + p->output_zero_point;
                out[(c * p->out_h + oy) * p->out_w + ox] = ev_clamp8(acc, p->act_min, p->act_max);
            }
        }
    }
}

void ev_fully_connected(const int8_t *in, int8_t *out, const int8_t *weights, const int32_t *bias,
                        const int32_t *multiplier, const int32_t *shift, const ev_fc_params *p)
{
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->in_features;
        for (int32_t o = 0; o < p->out_features; ++o) {
            const int8_t *w = weights + o * p->in_features;
            int32_t acc = 0;
            for (int32_t i = 0; i < p->in_features; ++i) {   /* vectorised: vmlava.s8 */
                acc += x[i] * w[i];
            }
            acc = ev_requantize(acc + bias[o], multiplier[o], shift[o]) + p->output_zero_point;
            out[r * p->out_features + o] = ev_clamp8(acc, p->act_min, p->act_max);
        }
    }
}

static void ev_binary(const int8_t *a, const int8_t *b, int8_t *out, const ev_binary_params *p, int is_add)
{
    const int32_t *n = p->out_shape, *sa = p->a_strides, *sb = p->b_strides;
    const int32_t scale_in = (int32_t)1 << p->left_shift;
    int32_t o = 0;
    for (int32_t i0 = 0; i0 < n[0]; ++i0) {
        for (int32_t i1 = 0; i1 < n[1]; ++i1) {
            for (int32_t i2 = 0; i2 < n[2]; ++i2) {
                const int8_t *ra = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                const int8_t *rb = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                for (int32_t i3 = 0; i3 < n[3]; ++i3, ++o) {
                    const int32_t va = ra[i3 * sa[3]] - p->a_zero_point, vb = rb[i3 * sb[3]] - p->b_zero_point;
                    int32_t v;
                    if (is_add) {
                        const int32_t ya = ev_requantize(va * scale_in, p->a_multiplier, p->a_shift);
                        const int32_t yb = ev_requantize(vb * scale_in, p->b_multiplier, p->b_shift);
                        v = ev_requantize(ya + yb, p->multiplier, p->shift);
                    } else {
                        v = ev_requantize(va * vb, p->multiplier, p->shift);
                    }
                    out[o] = ev_clamp8(v + p->output_zero_point, p->act_min, p->act_max);
                }
            }
        }
    }
}

void ev_add(const int8_t *a, const int8_t *b, int8_t *out, const ev_binary_params *p)
{
    ev_binary(a, b, out, p, 1);
}

void ev_mul(const int8_t *a, const int8_t *b, int8_t *out, const ev_binary_params *p)
{
    ev_binary(a, b, out, p, 0);
}

void ev_bmm(const int8_t *a, const int8_t *b, int8_t *out, int32_t *scratch, const ev_bmm_params *p)
{
    int32_t *b32 = scratch;                  /* (B - z_b) of one batch, k x n, widened once */
    int32_t *acc = scratch + p->k * p->n;    /* one output row */
    for (int32_t bi = 0; bi < p->batch; ++bi) {
        const int8_t *A = a + bi * p->m * p->k;
        int8_t *Y = out + bi * p->m * p->n;
        ev_widen_s8(b32, b + bi * p->k * p->n, p->b_zero_point, p->k * p->n);
        for (int32_t i = 0; i < p->m; ++i) {
            for (int32_t j = 0; j < p->n; ++j) {
                acc[j] = 0;
            }
            for (int32_t kk = 0; kk < p->k; ++kk) {
                ev_axpy_s32(acc, b32 + kk * p->n, A[i * p->k + kk] - p->a_zero_point, p->n);
            }
            for (int32_t j = 0; j < p->n; ++j) {
                const int32_t v = ev_requantize(acc[j], p->multiplier, p->shift) + p->output_zero_point;
                Y[i * p->n + j] = ev_clamp8(v, -128, 127);
            }
        }
    }
}

void ev_mean(const int8_t *in, int8_t *out, int32_t rows, int32_t inner, int32_t input_zero_point,
             int32_t multiplier, int32_t shift, int32_t output_zero_point)
{
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *x = in + r * inner;
        int32_t acc = 0;
        for (int32_t i = 0; i < inner; ++i) {
            acc += x[i];
        }
        acc -= inner * input_zero_point;
        out[r] = ev_clamp8(ev_requantize(acc, multiplier, shift) + output_zero_point, -128, 127);
    }
}

void ev_softmax(const int8_t *in, int8_t *out, int32_t rows, int32_t inner, const uint32_t *exp_table)
{
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *x = in + r * inner;
        int32_t max = -128;
        for (int32_t i = 0; i < inner; ++i) {
            max = x[i] > max ? x[i] : max;
        }
        uint32_t total = 0;
        for (int32_t i = 0; i < inner; ++i) {
            total += exp_table[max - x[i]];
        }
        for (int32_t i = 0; i < inner; ++i) {
            const uint64_t y = ((uint64_t)exp_table[max - x[i]] * 256u + total / 2u) / total;
            out[r * inner + i] = (int8_t)((y > 255u ? 255 : (int32_t)y) - 128);
        }
    }
}

void ev_norm(const int8_t *in, const int8_t *mean, int8_t *out, int32_t rows, int32_t n, int64_t eps_term,
             int64_t k, int32_t output_zero_point)
{
    for (int32_t r = 0; r < rows; ++r) {
        const int8_t *x = in + r * n;
        const int32_t m = mean[r];
        int64_t squares = 0;
        for (int32_t i = 0; i < n; ++i) {
            const int32_t d = x[i] - m;
            squares += d * d;
        }
        const int64_t root = (int64_t)ev_isqrt64((uint64_t)((squares << 8) + eps_term) << 16);
        for (int32_t i = 0; i < n; ++i) {
            const int64_t y = root > 0 ? ev_rdiv64((int64_t)(x[i] - m) * k, root) : 0;
            const int64_t v = y + output_zero_point;
            out[r * n + i] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
        }
    }
}

void ev_lut(const int8_t *in, int8_t *out, int32_t size, const int8_t *table)
{
    for (int32_t i = 0; i < size; ++i) {
        out[i] = table[in[i] + 128];
    }
}

void ev_concat_part(const int8_t *in, int8_t *out, int32_t outer, int32_t chunk, int32_t out_chunk, int32_t offset)
{
    for (int32_t r = 0; r < outer; ++r) {
        memcpy(out + r * out_chunk + offset, in + r * chunk, (size_t)chunk);
    }
}

void ev_slice(const int8_t *in, int8_t *out, int32_t outer, int32_t in_chunk, int32_t offset, int32_t out_chunk)
{
    for (int32_t r = 0; r < outer; ++r) {
        memcpy(out + r * out_chunk, in + r * in_chunk + offset, (size_t)out_chunk);
    }
}

void ev_transpose4(const int8_t *in, int8_t *out, const int32_t in_shape[4], const int32_t perm[4])
{
    int32_t in_strides[4], out_shape[4], strides[4];
    in_strides[3] = 1;
    for (int32_t d = 2; d >= 0; --d) {
        in_strides[d] = in_strides[d + 1] * in_shape[d + 1];
    }
    for (int32_t d = 0; d < 4; ++d) {
        out_shape[d] = in_shape[perm[d]];
        strides[d] = in_strides[perm[d]];
    }
    int32_t o = 0;
    for (int32_t i0 = 0; i0 < out_shape[0]; ++i0) {
        for (int32_t i1 = 0; i1 < out_shape[1]; ++i1) {
            for (int32_t i2 = 0; i2 < out_shape[2]; ++i2) {
                const int8_t *src = in + i0 * strides[0] + i1 * strides[1] + i2 * strides[2];
                for (int32_t i3 = 0; i3 < out_shape[3]; ++i3) {
                    out[o++] = src[i3 * strides[3]];
                }
            }
        }
    }
}

void ev_copy(const int8_t *in, int8_t *out, int32_t size)
{
    memmove(out, in, (size_t)size);
}
