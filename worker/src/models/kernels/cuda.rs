//! Kernels of ours on CUDA devices, where candle has no fitting op or its
//! op is slow: compiled from the CUDA C below by NVRTC at first use (the
//! NVRTC of the machine it runs on, so the build needs no GPU toolkit
//! beyond candle's own). f32 and bf16 (as raw 16 bits, arithmetic in f32).
//!
//! candle's elementwise kernels index a non-contiguous operand with 64-bit
//! divisions per dimension per element: a bias added by broadcasting, or
//! the heads split out of a projection by permuting, cost more than the
//! GEMM beside them (BLIP-large's image encoder on an H200 in bf16 ran at
//! a third of PyTorch's speed). Here rows and columns are loop indices.
//!
//! Self-attention in bf16 is one kernel, FlashAttention-2's scheme on the
//! tensor cores (`mma.sync`, compute capability 8.0 on): as candle's ops,
//! the scores of every head went to memory and back three times (BLIP-large
//! at batch 64: 680 MB per layer, 3.9 ms of the layer's 8.3 on an H200).

use std::sync::{Mutex, PoisonError};

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
    backend::BackendStorage,
    bail,
    cuda_backend::{
        CudaDType, CudaDevice, CudaStorageSlice, WrapErr,
        cudarc::{
            driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg},
            nvrtc,
        },
    },
};

use super::{depthwise::Geometry, linear::Activation};

const MODULE: &str = "framefleet";

const SOURCE: &str = r#"
__device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load(const unsigned short* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(unsigned short* p, long long i, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays NaN
        p[i] = (unsigned short)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    p[i] = (unsigned short)(u >> 16);
}

// The activations of kernels/linear.rs: 0 none, 1 GELU (erf), 2 QuickGELU, 3 ReLU6.
__device__ __forceinline__ float activate(float v, int act) {
    switch (act) {
    case 1: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case 2: return v / (1.0f + expf(-1.702f * v));
    case 3: return fminf(fmaxf(v, 0.0f), 6.0f);
    default: return v;
    }
}

// V values moved as one access: 16 bytes where the caller found the rows aligned.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack { T v[V]; };

// y = act(x + bias) (+ res where `add_res`: a block's skip connection) over
// [rows, cols], V values per thread (cols % V == 0): blocks down the rows,
// threads along them.
template <typename T, int V>
__device__ void bias_act(const T* x, const T* bias, const T* res, T* y, int rows, int cols, int act,
                         int add_res) {
    typedef Pack<T, V> P;
    int packs = cols / V;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < packs; c += gridDim.x * blockDim.x) {
            long long i = (long long)r * packs + c;
            P a = ((const P*)x)[i], b = ((const P*)bias)[c], e;
            if (add_res) e = ((const P*)res)[i];
#pragma unroll
            for (int k = 0; k < V; ++k) {
                float v = activate(load(a.v, k) + load(b.v, k), act);
                store(a.v, k, add_res ? v + load(e.v, k) : v);
            }
            ((P*)y)[i] = a;
        }
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int w = 16; w > 0; w >>= 1) v += __shfl_xor_sync(0xffffffffu, v, w);
    return v;
}

// LayerNorm over rows of `cols`: a warp per row, V values per access; the
// mean, then the variance about it (the row read again, from cache), in f32.
template <typename T, int V>
__device__ void layer_norm(const T* x, const T* gamma, const T* beta, T* y, int rows, int cols,
                           float eps) {
    typedef Pack<T, V> P;
    const int lane = threadIdx.x % 32, warps = blockDim.x / 32, packs = cols / V;
    for (int r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
        const P* row = (const P*)x + (long long)r * packs;
        float sum = 0.0f;
        for (int c = lane; c < packs; c += 32) {
            P a = row[c];
#pragma unroll
            for (int k = 0; k < V; ++k) sum += load(a.v, k);
        }
        const float mean = warp_sum(sum) / cols;
        float squares = 0.0f;
        for (int c = lane; c < packs; c += 32) {
            P a = row[c];
#pragma unroll
            for (int k = 0; k < V; ++k) {
                float d = load(a.v, k) - mean;
                squares = fmaf(d, d, squares);
            }
        }
        const float inv = 1.0f / sqrtf(warp_sum(squares) / cols + eps);
        P* out = (P*)y + (long long)r * packs;
        for (int c = lane; c < packs; c += 32) {
            P a = row[c], g = ((const P*)gamma)[c], b = ((const P*)beta)[c];
#pragma unroll
            for (int k = 0; k < V; ++k)
                store(a.v, k, fmaf((load(a.v, k) - mean) * inv, load(g.v, k), load(b.v, k)));
            out[c] = a;
        }
    }
}

// [B, N, P*H*D] -> [P, B, H, N, D], part 0 times `scale`: a block per input row.
template <typename T>
__device__ void split_heads(const T* x, T* y, int rows, int n, int parts, int heads, int d,
                            float scale) {
    int hd = heads * d, width = parts * hd;
    long long part = (long long)rows * hd;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int b = r / n, t = r - b * n;
        for (int c = threadIdx.x; c < width; c += blockDim.x) {
            int p = c / hd, rest = c - p * hd, h = rest / d, e = rest - h * d;
            float v = load(x, (long long)r * width + c);
            store(y, p * part + (((long long)b * heads + h) * n + t) * d + e, p == 0 ? v * scale : v);
        }
    }
}

// [B, H, N, D] -> [B, N, H*D]: a block per output row.
template <typename T>
__device__ void merge_heads(const T* x, T* y, int rows, int n, int heads, int d) {
    int hd = heads * d;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int b = r / n, t = r - b * n;
        for (int c = threadIdx.x; c < hd; c += blockDim.x) {
            int h = c / d, e = c - h * d;
            store(y, (long long)r * hd + c, load(x, (((long long)b * heads + h) * n + t) * d + e));
        }
    }
}

#define BOTH(NAME, ARGS, CALL) \
    extern "C" __global__ void NAME##_f32 ARGS { typedef float T; CALL; } \
    extern "C" __global__ void NAME##_bf16 ARGS { typedef unsigned short T; CALL; }

BOTH(bias_act, (const void* x, const void* b, const void* e, void* y, int rows, int cols, int act,
                int add_res),
     (bias_act<T, 1>((const T*)x, (const T*)b, (const T*)e, (T*)y, rows, cols, act, add_res)))
BOTH(bias_act_x16, (const void* x, const void* b, const void* e, void* y, int rows, int cols,
                    int act, int add_res),
     (bias_act<T, 16 / sizeof(T)>((const T*)x, (const T*)b, (const T*)e, (T*)y, rows, cols, act,
                                  add_res)))
BOTH(layer_norm, (const void* x, const void* g, const void* b, void* y, int rows, int cols, float eps),
     (layer_norm<T, 1>((const T*)x, (const T*)g, (const T*)b, (T*)y, rows, cols, eps)))
BOTH(layer_norm_x16, (const void* x, const void* g, const void* b, void* y, int rows, int cols,
                      float eps),
     (layer_norm<T, 16 / sizeof(T)>((const T*)x, (const T*)g, (const T*)b, (T*)y, rows, cols, eps)))
BOTH(split_heads, (const void* x, void* y, int rows, int n, int parts, int heads, int d, float scale),
     split_heads((const T*)x, (T*)y, rows, n, parts, heads, d, scale))
BOTH(merge_heads, (const void* x, void* y, int rows, int n, int heads, int d),
     merge_heads((const T*)x, (T*)y, rows, n, heads, d))

// kernels/depthwise/ on NHWC f32: a block per output row, a thread per
// (pixel, channel) of it (coalesced loads), taps in the CPU kernel's order
// (bias, then row by row), so results agree to float rounding.
extern "C" __global__ void depthwise_nhwc_f32(
    const float* x, const float* w, const float* bias, float* y, int rows, int h, int wd,
    int c, int k, int stride, int top, int left, int oh, int ow, int relu6)
{
    int width = ow * c;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        int n = r / oh, oy = r - n * oh, y0 = oy * stride - top;
        const float* image = x + (long long)n * h * wd * c;
        for (int j = threadIdx.x; j < width; j += blockDim.x) {
            int ox = j / c, ch = j - ox * c, x0 = ox * stride - left;
            float acc = bias[ch];
            for (int ky = 0; ky < k; ++ky) {
                int iy = y0 + ky;
                if (iy < 0 || iy >= h) continue;
                const float* row = image + (long long)iy * wd * c + ch;
                const float* taps = w + ky * k * c + ch;
                for (int kx = 0; kx < k; ++kx) {
                    int ix = x0 + kx;
                    if (ix < 0 || ix >= wd) continue;
                    acc = fmaf(row[(long long)ix * c], taps[kx * c], acc);
                }
            }
            if (relu6) acc = fminf(fmaxf(acc, 0.0f), 6.0f);
            y[(long long)r * width + j] = acc;
        }
    }
}

// One query per (image, head) against N keys and values, softmax(q·kᵀ)·v with q
// already scaled: a decoding step's cross-attention to the image tokens. A block
// of 128 threads per (image, head), `n` scores in shared memory after 32 floats of
// reduction scratch; memory-bound, so every load is a pack of V values. q, out:
// [rows, d]; k, v: [rows, n, d]; d / V a power of two up to 32 (checked by the caller).
template <typename T, int V>
__device__ void decode_attention(const T* q, const T* k, const T* v, T* out, int n, int d) {
    typedef Pack<T, V> P;
    extern __shared__ float shared[];
    float* scratch = shared;      // 32: warp partials, then the max and the sum
    float* scores = shared + 32;  // n
    const int row = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int warps = blockDim.x / 32, packs = d / V;
    const P* qp = (const P*)(q + (long long)row * d);
    const P* kp = (const P*)(k + (long long)row * n * d);
    const P* vp = (const P*)(v + (long long)row * n * d);

    // Scores: `packs` threads per key, a pack of q each.
    {
        const int c = threadIdx.x % packs, per_pass = blockDim.x / packs;
        P qa = qp[c];
        float qv[V];
#pragma unroll
        for (int i = 0; i < V; ++i) qv[i] = load(qa.v, i);
        for (int j0 = 0; j0 < n; j0 += per_pass) {
            const int j = j0 + threadIdx.x / packs;
            float dot = 0.0f;
            if (j < n) {
                P ka = kp[(long long)j * packs + c];
#pragma unroll
                for (int i = 0; i < V; ++i) dot = fmaf(qv[i], load(ka.v, i), dot);
            }
            for (int w = packs / 2; w > 0; w >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, w);
            if (j < n && c == 0) scores[j] = dot;
        }
    }
    __syncthreads();

    // The max, then the exponentials and their sum, over the block.
    float x = __int_as_float(0xff800000);
    for (int j = threadIdx.x; j < n; j += blockDim.x) x = fmaxf(x, scores[j]);
    for (int w = 16; w > 0; w >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, w));
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = scratch[0];
    for (int w = 1; w < warps; ++w) x = fmaxf(x, scratch[w]);
    __syncthreads();  // scratch is reused for the sum
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float p = expf(scores[j] - x);
        scores[j] = p;
        sum += p;
    }
    sum = warp_sum(sum);
    if (lane == 0) scratch[warp] = sum;
    __syncthreads();
    sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += scratch[w];

    // Output: a pack of columns per thread over every `groups`-th key, then the
    // groups' partial sums added through shared memory (over the scores, done with).
    const int c = threadIdx.x % packs, group = threadIdx.x / packs, groups = blockDim.x / packs;
    float acc[V];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = 0.0f;
    for (int j = group; j < n; j += groups) {
        const float p = scores[j];
        P va = vp[(long long)j * packs + c];
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] = fmaf(p, load(va.v, i), acc[i]);
    }
    __syncthreads();
    float* partial = scores;  // [groups][d]: the caller sizes it max(n, groups * d)
#pragma unroll
    for (int i = 0; i < V; ++i) partial[group * d + c * V + i] = acc[i];
    __syncthreads();
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float total = 0.0f;
        for (int g = 0; g < groups; ++g) total += partial[g * d + e];
        store(out + (long long)row * d, e, total / sum);
    }
}

BOTH(decode_attention, (const void* q, const void* k, const void* v, void* out, int n, int d),
     (decode_attention<T, 16 / sizeof(T)>((const T*)q, (const T*)k, (const T*)v, (T*)out, n, d)))

// Self-attention softmax(q·kᵀ·scale)·v in bf16 on tensor cores, FlashAttention-2's
// scheme: straight from the fused projection [B, N, 3, H, 64] to [B, N, H, 64],
// the scores never leaving registers. A block of 4 warps takes 128 queries of one
// (image, head), 32 per warp as two 16-row tiles that share every key and value
// fragment read from shared memory; keys and values pass in tiles of 64, the
// next tile loading (cp.async) while this one is used. Scores, softmax and sums
// in f32; probabilities rounded to bf16 for the p·v product.
#define FA_D 64
#define FA_TILE 64
#define FA_QUERIES 128
// bf16 per shared row: 16 bytes of padding put the 8 rows one mma operand
// reads on distinct banks.
#define FA_STRIDE (FA_D + 8)
#define FA_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ unsigned shared_address(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// 16 bytes global -> shared, or zeros where `valid` is false.
__device__ __forceinline__ void copy16(unsigned short* dst, const unsigned short* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(shared_address(dst)), "l"(src), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned short p[2];
    store(p, 0, lo);
    store(p, 1, hi);
    return (unsigned)p[0] | ((unsigned)p[1] << 16);
}

// c += a·b: a 16×16 (row-major fragment), b 16×8 (column-major fragment), c 16×8
// f32. Registers only, so not volatile: the compiler may interleave the products.
__device__ __forceinline__ void mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 64 rows from `first` of one head's queries, keys or values into shared memory.
__device__ __forceinline__ void load_tile(unsigned short* dst, const unsigned short* head,
                                          long long token_stride, int first, int n) {
    for (int i = threadIdx.x; i < FA_TILE * (FA_D / 8); i += blockDim.x) {
        int r = i / (FA_D / 8), c = i % (FA_D / 8), token = first + r;
        copy16(dst + r * FA_STRIDE + c * 8, head + (long long)min(token, n - 1) * token_stride + c * 8,
               token < n);
    }
}

#if __CUDA_ARCH__ >= 800
extern "C" __global__ void __launch_bounds__(128) flash_attention_bf16(
    const unsigned short* qkv, unsigned short* out, int n, int heads, float scale_log2)
{
    // [buffer][keys, values]; the queries pass through buffer 1 before the loop.
    __shared__ __align__(16) unsigned short kv[2][2][FA_TILE * FA_STRIDE];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int b = blockIdx.y / heads, h = blockIdx.y % heads, first = blockIdx.x * FA_QUERIES;
    const long long token_stride = 3LL * heads * FA_D;
    const unsigned short* q = qkv + (long long)b * n * token_stride + h * FA_D;
    const unsigned short* k = q + heads * FA_D;
    const unsigned short* v = k + heads * FA_D;
    const int tiles = (n + FA_TILE - 1) / FA_TILE;

    load_tile(kv[1][0], q, token_stride, first, n);
    load_tile(kv[1][1], q, token_stride, first + FA_TILE, n);
    load_tile(kv[0][0], k, token_stride, 0, n);
    load_tile(kv[0][1], v, token_stride, 0, n);
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();

    // This warp's 32 queries as mma A fragments, two tiles of 16 rows.
    unsigned qf[2][FA_D / 16][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int kk = 0; kk < FA_D / 16; ++kk) {
            const unsigned short* p =
                kv[1][warp / 2] + ((warp % 2) * 32 + mt * 16 + g) * FA_STRIDE + kk * 16 + 2 * t;
            qf[mt][kk][0] = *(const unsigned*)p;
            qf[mt][kk][1] = *(const unsigned*)(p + 8 * FA_STRIDE);
            qf[mt][kk][2] = *(const unsigned*)(p + 8);
            qf[mt][kk][3] = *(const unsigned*)(p + 8 * FA_STRIDE + 8);
        }
    }
    __syncthreads();  // buffer 1 is free for the keys and values of tile 1

    float o[2][FA_D / 8][4];  // output rows g and g + 8 of each tile, 8 columns per fragment
    float m[2][2], l[2][2];   // running max and sum of rows g and g + 8 of each tile
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
        m[mt][0] = m[mt][1] = FA_NEG_INF;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int i = 0; i < FA_D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    }

    for (int j = 0; j < tiles; ++j) {
        const int buf = j & 1;
        if (j + 1 < tiles) {
            load_tile(kv[buf ^ 1][0], k, token_stride, (j + 1) * FA_TILE, n);
            load_tile(kv[buf ^ 1][1], v, token_stride, (j + 1) * FA_TILE, n);
            asm volatile("cp.async.commit_group;\n" ::);
            asm volatile("cp.async.wait_group 1;\n" ::);
        } else {
            asm volatile("cp.async.wait_group 0;\n" ::);
        }
        __syncthreads();
        const unsigned short* ks = kv[buf][0];
        const unsigned short* vs = kv[buf][1];

        // s = q·kᵀ: 2 × 16 queries × 64 keys, 8 keys per fragment.
        float s[2][FA_TILE / 8][4];
#pragma unroll
        for (int nt = 0; nt < FA_TILE / 8; ++nt) {
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < FA_D / 16; ++kk) {
                const unsigned short* p = ks + (nt * 8 + g) * FA_STRIDE + kk * 16 + 2 * t;
                const unsigned b0 = *(const unsigned*)p, b1 = *(const unsigned*)(p + 8);
                mma(s[0][nt], qf[0][kk], b0, b1);
                mma(s[1][nt], qf[1][kk], b0, b1);
            }
            const int key = j * FA_TILE + nt * 8 + 2 * t;
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                if (key >= n) s[mt][nt][0] = s[mt][nt][2] = FA_NEG_INF;
                if (key + 1 >= n) s[mt][nt][1] = s[mt][nt][3] = FA_NEG_INF;
            }
        }

        // Online softmax: rows g (values 0, 1) and g + 8 (values 2, 3) of each
        // tile, each spread over the 4 threads of a quad. Tile 0 holds key 0,
        // so the running maxima are finite from the first tile on.
        unsigned pa[2][FA_TILE / 16][4];  // p as mma A fragments, 16 keys each
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                float x = m[mt][half];
#pragma unroll
                for (int nt = 0; nt < FA_TILE / 8; ++nt)
                    x = fmaxf(x, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
                x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
                x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
                const float alpha = exp2f((m[mt][half] - x) * scale_log2), shift = x * scale_log2;
                m[mt][half] = x;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < FA_TILE / 8; ++nt) {
                    float* e = &s[mt][nt][2 * half];
                    e[0] = exp2f(fmaf(e[0], scale_log2, -shift));
                    e[1] = exp2f(fmaf(e[1], scale_log2, -shift));
                    sum += e[0] + e[1];
                }
                l[mt][half] = l[mt][half] * alpha + sum;
#pragma unroll
                for (int i = 0; i < FA_D / 8; ++i) {
                    o[mt][i][2 * half] *= alpha;
                    o[mt][i][2 * half + 1] *= alpha;
                }
            }
            // s's accumulator fragments are the A fragments of p as they stand.
#pragma unroll
            for (int kk = 0; kk < FA_TILE / 16; ++kk) {
                pa[mt][kk][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][kk][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][kk][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][kk][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
        }

        // o += p·v, 16 keys per step; v's B fragments come transposed by ldmatrix.
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; ++kk) {
#pragma unroll
            for (int dp = 0; dp < FA_D / 16; ++dp) {
                const int mi = lane / 8, r = lane % 8;
                const unsigned short* p =
                    vs + (kk * 16 + (mi & 1) * 8 + r) * FA_STRIDE + (2 * dp + (mi >> 1)) * 8;
                unsigned b0, b1, b2, b3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                             : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(shared_address(p)));
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    mma(o[mt][2 * dp], pa[mt][kk], b0, b1);
                    mma(o[mt][2 * dp + 1], pa[mt][kk], b2, b3);
                }
            }
        }
        // Every warp is done with this tile before the next iteration loads over it.
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float sum = l[mt][half];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float inv = 1.0f / sum;
            const int row = first + warp * 32 + mt * 16 + half * 8 + g;
            if (row >= n) continue;
            unsigned short* dst = out + (((long long)b * n + row) * heads + h) * FA_D + 2 * t;
#pragma unroll
            for (int i = 0; i < FA_D / 8; ++i)
                *(unsigned*)(dst + i * 8) = pack_bf16(o[mt][i][2 * half] * inv, o[mt][i][2 * half + 1] * inv);
        }
    }
}
#endif
"#;

/// The PTX of `SOURCE` for `dev`'s architecture (the tensor-core kernels
/// need the instructions of theirs), compiled once per architecture.
fn ptx(dev: &CudaDevice) -> Result<&'static str> {
    static PTX: Mutex<Vec<((i32, i32), &'static str)>> = Mutex::new(Vec::new());
    let cc = capability(dev)?;
    let mut compiled = PTX.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ptx)) = compiled.iter().find(|(c, _)| *c == cc) {
        return Ok(ptx);
    }
    let opts = nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)],
        ..Default::default()
    };
    let ptx = nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| candle_core::Error::Msg(format!("cannot compile the CUDA kernels: {e}")))?;
    // Once per architecture in a process: leaked, as candle keeps modules.
    let ptx: &'static str = ptx.to_src().leak();
    compiled.push((cc, ptx));
    Ok(ptx)
}

/// `dev`'s compute capability, (major, minor).
fn capability(dev: &CudaDevice) -> Result<(i32, i32)> {
    dev.cuda_stream().context().compute_capability().w()
}

/// `kernels::depthwise` on a CUDA device: `[x, w, bias]` f32 storages and
/// their layouts; returns `[batch, oh, ow, c]`.
pub(super) fn depthwise_nhwc(
    [(xs, xl), (ws, wl), (bs, bl)]: [(&CudaStorage, &Layout); 3],
    batch: usize,
    g: &Geometry,
) -> Result<CudaStorage> {
    let (CudaStorageSlice::F32(x), CudaStorageSlice::F32(w), CudaStorageSlice::F32(b)) =
        (&xs.slice, &ws.slice, &bs.slice)
    else {
        bail!("depthwise-nhwc supports f32 only");
    };
    let (oh, ow) = (g.h.div_ceil(g.stride), g.w.div_ceil(g.stride));
    let sizes = [
        batch * oh,
        g.h,
        g.w,
        g.c,
        g.k,
        g.stride,
        g.top,
        g.left,
        oh,
        ow,
        usize::from(g.relu6),
    ]
    .map(int)
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let inputs = [view(x, xl)?, view(w, wl)?, view(b, bl)?];
    let len = batch * oh * ow * g.c;
    launch(
        xs,
        "depthwise_nhwc",
        &inputs,
        len,
        &sizes,
        None,
        grid(blocks(batch * oh), 1),
    )
}

/// Whether these kernels serve `t`: on a CUDA device, in f32 or bf16.
pub fn serves(t: &Tensor) -> bool {
    t.device().is_cuda() && matches!(t.dtype(), DType::F32 | DType::BF16)
}

/// `i32` for a kernel's size argument.
fn int(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("{v} does not fit a CUDA kernel's sizes")))
}

/// Runs kernel `name` (suffixed by the dtype) with `inputs`, a fresh output
/// of `len` values, then `sizes` and `scale`, launched as `grid` says.
#[allow(unsafe_code)]
fn launch<T: CudaDType + DeviceRepr>(
    storage: &CudaStorage,
    name: &str,
    inputs: &[CudaView<'_, T>],
    len: usize,
    sizes: &[i32],
    scale: Option<f32>,
    grid: LaunchConfig,
) -> Result<CudaStorage> {
    let dev = storage.device();
    let suffix = match storage.dtype() {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        other => bail!("{name}: no CUDA kernel for {other:?}"),
    };
    let func = dev.get_or_load_custom_func(&format!("{name}_{suffix}"), MODULE, ptx(dev)?)?;
    // SAFETY: every element is written by the kernel.
    let mut y = unsafe { dev.alloc::<T>(len)? };
    let mut args = func.builder();
    for input in inputs {
        args.arg(input);
    }
    args.arg(&mut y);
    for size in sizes {
        args.arg(size);
    }
    if let Some(scale) = &scale {
        args.arg(scale);
    }
    // SAFETY: the arguments match the kernel's signature in `SOURCE`, and
    // the sizes are the operands' own, checked by the caller.
    unsafe { args.launch(grid) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// `launch` on one operand, f32 or bf16.
fn launch_one(
    (xs, xl): (&CudaStorage, &Layout),
    name: &str,
    len: usize,
    sizes: &[i32],
    scale: Option<f32>,
    grid: LaunchConfig,
) -> Result<CudaStorage> {
    match &xs.slice {
        CudaStorageSlice::F32(x) => launch(xs, name, &[view(x, xl)?], len, sizes, scale, grid),
        CudaStorageSlice::BF16(x) => launch(xs, name, &[view(x, xl)?], len, sizes, scale, grid),
        _ => bail!("{name}: no kernel for {:?}", xs.dtype()),
    }
}

/// A contiguous operand's values.
fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.slice(start..end)),
        None => bail!("a CUDA kernel of ours needs contiguous operands"),
    }
}

/// Blocks for `n` rows, at most 65535 (the grid's y limit; kernels stride).
fn blocks(n: usize) -> u32 {
    n.clamp(1, 65_535) as u32
}

/// `x` × `y` blocks of 256 threads.
fn grid(x: u32, y: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x.max(1), y.max(1), 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The variant of kernel `name` for rows of `cols` values whose operands
/// start at `offsets`: `{name}_x16`, 16 bytes per access, where every row
/// starts 16-byte aligned (candle's buffers are; one bf16 per access ran at
/// a fifth of an H200's bandwidth), else `name`, one value per access.
/// Returns the kernel's name and its values per access.
fn per_access(name: &str, dtype: DType, cols: usize, offsets: &[usize]) -> (String, usize) {
    let per16 = 16 / dtype.size_in_bytes();
    if std::iter::once(&cols)
        .chain(offsets)
        .all(|v| v % per16 == 0)
    {
        (format!("{name}_x16"), per16)
    } else {
        (name.to_string(), 1)
    }
}

/// `launch` on three operands of one dtype, f32 or bf16.
#[allow(clippy::too_many_arguments)]
fn launch_three(
    [(s1, l1), (s2, l2), (s3, l3)]: [(&CudaStorage, &Layout); 3],
    name: &str,
    len: usize,
    sizes: &[i32],
    scale: Option<f32>,
    grid: LaunchConfig,
) -> Result<CudaStorage> {
    use CudaStorageSlice::{BF16, F32};
    match (&s1.slice, &s2.slice, &s3.slice) {
        (F32(a), F32(b), F32(c)) => {
            let inputs = [view(a, l1)?, view(b, l2)?, view(c, l3)?];
            launch(s1, name, &inputs, len, sizes, scale, grid)
        }
        (BF16(a), BF16(b), BF16(c)) => {
            let inputs = [view(a, l1)?, view(b, l2)?, view(c, l3)?];
            launch(s1, name, &inputs, len, sizes, scale, grid)
        }
        _ => bail!(
            "{name}: no kernel for {:?}, {:?} and {:?} operands",
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    }
}

/// `act(x + bias)`, plus `residual` where given (a block's skip
/// connection), for `x` and `residual` `[rows, cols]` and `bias` `[cols]`,
/// in one pass.
pub fn bias_act(
    x: &Tensor,
    bias: &Tensor,
    act: Activation,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let op = BiasAct {
        act,
        residual: residual.is_some(),
    };
    // Without a residual the kernel is passed `x` in its place, unread.
    x.apply_op3_no_bwd(&bias.contiguous()?, residual.as_ref().unwrap_or(&x), &op)
}

struct BiasAct {
    act: Activation,
    residual: bool,
}

impl CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("bias-act runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        es: &CudaStorage,
        el: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, cols) = xl.shape().dims2()?;
        if bl.dims() != [cols] || el.dims() != xl.dims() {
            bail!(
                "bias-act: bias {:?} and residual {:?} for {:?}",
                bl.dims(),
                el.dims(),
                xl.dims()
            );
        }
        let act = match self.act {
            Activation::Identity => 0,
            Activation::Gelu => 1,
            Activation::QuickGelu => 2,
            Activation::Relu6 => 3,
        };
        let sizes = [int(rows)?, int(cols)?, act, i32::from(self.residual)];
        let offsets = [xl.start_offset(), bl.start_offset(), el.start_offset()];
        let (name, per) = per_access("bias_act", xs.dtype(), cols, &offsets);
        let grid = grid((cols / per).div_ceil(256) as u32, blocks(rows));
        let operands = [(xs, xl), (bs, bl), (es, el)];
        let y = launch_three(operands, &name, rows * cols, &sizes, None, grid)?;
        Ok((y, xl.shape().clone()))
    }
}

/// LayerNorm of `x`'s rows (its last dimension) with `gamma` and `beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        &LayerNorm(eps as f32),
    )
}

struct LayerNorm(f32);

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("layer-norm runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let cols = xl.dims().last().copied().unwrap_or(0);
        if cols == 0 || gl.dims() != [cols] || bl.dims() != [cols] {
            bail!(
                "layer-norm: gamma {:?} and beta {:?} for {:?}",
                gl.dims(),
                bl.dims(),
                xl.dims()
            );
        }
        let rows = xl.shape().elem_count() / cols;
        let offsets = [xl.start_offset(), gl.start_offset(), bl.start_offset()];
        let (name, _) = per_access("layer_norm", xs.dtype(), cols, &offsets);
        // A warp per row, 8 per block.
        let grid = grid(rows.div_ceil(8).clamp(1, 1 << 20) as u32, 1);
        let operands = [(xs, xl), (gs, gl), (bs, bl)];
        let y = launch_three(
            operands,
            &name,
            rows * cols,
            &[int(rows)?, int(cols)?],
            Some(self.0),
            grid,
        )?;
        Ok((y, xl.shape().clone()))
    }
}

/// `[B, N, P·H·D]` → `[P, B, H, N, D]`, part 0 times `scale`.
pub fn split_heads(x: &Tensor, parts: usize, heads: usize, scale: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&SplitHeads {
        parts,
        heads,
        scale: scale as f32,
    })
}

struct SplitHeads {
    parts: usize,
    heads: usize,
    scale: f32,
}

impl CustomOp1 for SplitHeads {
    fn name(&self) -> &'static str {
        "split-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("split-heads runs on CUDA devices only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, n, width) = xl.shape().dims3()?;
        let (p, h) = (self.parts, self.heads);
        if p * h == 0 || width % (p * h) != 0 {
            bail!("split-heads: {width} values per token are not {p} × {h} heads");
        }
        let d = width / (p * h);
        let sizes = [int(b * n)?, int(n)?, int(p)?, int(h)?, int(d)?];
        let grid = grid(blocks(b * n), 1);
        let len = b * n * width;
        let y = launch_one((xs, xl), "split_heads", len, &sizes, Some(self.scale), grid)?;
        Ok((y, Shape::from((p, b, h, n, d))))
    }
}

/// `[B, H, N, D]` → `[B, N, H·D]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&MergeHeads)
}

struct MergeHeads;

impl CustomOp1 for MergeHeads {
    fn name(&self) -> &'static str {
        "merge-heads"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("merge-heads runs on CUDA devices only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, h, n, d) = xl.shape().dims4()?;
        let sizes = [int(b * n)?, int(n)?, int(h)?, int(d)?];
        let grid = grid(blocks(b * n), 1);
        let len = b * h * n * d;
        let y = launch_one((xs, xl), "merge_heads", len, &sizes, None, grid)?;
        Ok((y, Shape::from((b, n, h * d))))
    }
}

/// The head size `flash_attention_bf16` is written for (`FA_D`): BLIP's,
/// CLIP's and DINOv2's ViTs all have heads of 64.
const FLASH_HEAD: usize = 64;

/// Whether `flash_attention` serves `qkv` `[B, N, 3·H·D]` of `heads`
/// heads: bf16, heads of `FLASH_HEAD`, on a CUDA device with bf16 tensor
/// cores (compute capability 8.0 on), B·H within a grid's y.
pub fn flash_serves(qkv: &Tensor, heads: usize) -> Result<bool> {
    let Device::Cuda(dev) = qkv.device() else {
        return Ok(false);
    };
    let (b, _, width) = qkv.dims3()?;
    Ok(qkv.dtype() == DType::BF16
        && width == 3 * heads * FLASH_HEAD
        && b * heads <= 65_535
        && capability(dev)? >= (8, 0))
}

/// Self-attention from the fused projection `qkv` `[B, N, 3·H·D]` to
/// `[B, N, H·D]` in one kernel (`flash_attention_bf16`), queries times
/// `scale`; where `flash_serves`.
pub fn flash_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&FlashAttention {
        heads,
        scale: scale as f32,
    })
}

struct FlashAttention {
    heads: usize,
    scale: f32,
}

impl CustomOp1 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("flash-attention runs on CUDA devices only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b, n, width) = xl.shape().dims3()?;
        let h = self.heads;
        if width != 3 * h * FLASH_HEAD || b * h > 65_535 {
            bail!(
                "flash-attention: {b} × {width} values per token are not 3 × {h} heads of {FLASH_HEAD}"
            );
        }
        let CudaStorageSlice::BF16(x) = &xs.slice else {
            bail!("flash-attention supports bf16 only");
        };
        // 128 queries of one (image, head) per block of 4 warps (`FA_QUERIES`).
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(128).max(1) as u32, (b * h) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let scale_log2 = self.scale * std::f32::consts::LOG2_E;
        let y = launch(
            xs,
            "flash_attention",
            &[view(x, xl)?],
            b * n * h * FLASH_HEAD,
            &[int(n)?, int(h)?],
            Some(scale_log2),
            cfg,
        )?;
        Ok((y, Shape::from((b, n, h * FLASH_HEAD))))
    }
}

/// Whether `decode_attention` serves `q` `[B, H, 1, D]` against `k` and `v`
/// `[B, H, N, D]`: on CUDA in f32 or bf16, contiguous keys and values, D a
/// power-of-two number (up to 32) of 16-byte packs, the scores in 48 KB of
/// shared memory.
pub fn decode_serves(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let (&[b, h, 1, d], &[kb, kh, n, kd]) = (q.dims(), k.dims()) else {
        return false;
    };
    let per16 = 16 / q.dtype().size_in_bytes();
    serves(q)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype()
        && (kb, kh, kd) == (b, h, d)
        && v.dims() == k.dims()
        && k.is_contiguous()
        && v.is_contiguous()
        && n > 0
        && d % per16 == 0
        && (d / per16).is_power_of_two()
        && d / per16 <= 32
        && decode_shared_bytes(n, per16) <= 48 * 1024
}

/// Threads per block of `decode_attention_*`.
const DECODE_THREADS: usize = 128;

/// The shared memory of `decode_attention_*`: 32 floats of scratch, then
/// the scores or the thread groups' partial outputs, whichever is larger.
fn decode_shared_bytes(n: usize, per16: usize) -> usize {
    4 * (32 + n.max(DECODE_THREADS * per16))
}

/// `softmax(q·kᵀ)·v` for one query per (image, head), `q` already scaled:
/// a decoding step's attention to the image tokens, where `decode_serves`.
/// candle's batched products read the keys and values at 1.75 TB/s on an
/// H200 (BLIP-large at batch 256: 0.26 ms per layer and step).
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    q.contiguous()?.apply_op3_no_bwd(k, v, &DecodeAttention)
}

struct DecodeAttention;

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("decode-attention runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, h, _, d) = ql.shape().dims4()?;
        let (_, _, n, _) = kl.shape().dims4()?;
        let cfg = LaunchConfig {
            grid_dim: ((b * h).max(1) as u32, 1, 1),
            block_dim: (DECODE_THREADS as u32, 1, 1),
            shared_mem_bytes: decode_shared_bytes(n, 16 / qs.dtype().size_in_bytes()) as u32,
        };
        let operands = [(qs, ql), (ks, kl), (vs, vl)];
        let sizes = [int(n)?, int(d)?];
        let y = launch_three(operands, "decode_attention", b * h * d, &sizes, None, cfg)?;
        Ok((y, ql.shape().clone()))
    }
}
