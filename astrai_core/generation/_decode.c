/* Kernels for decode (one new token per sequence), where PyTorch's per-call costs dominate.
 *
 * Decode reads every weight once per token, so its floor is weight bytes / memory bandwidth, yet at
 * one token PyTorch spends most of its time elsewhere: its one-row GEMMs (oneDNN bfloat16,
 * aten._weight_int8pack_mm) stream weights at 15-19 GB/s on the 2-core development machine, its
 * fused attention takes ~390 us per layer for a bfloat16 query over 600 cached positions, and each
 * of the ~35 small ops of a layer costs microseconds of dispatch (benchmarks/RESULTS.md).
 *
 * matvec: y (M, N) = x (M, K) @ W (N, K)^T for 1-16 rows, one weight row streamed at a time with four
 *   independent accumulators, rows split across threads (~30 GB/s here):
 *   - bfloat16 weights are widened to float32 (a 16-bit shift) and multiplied in float32;
 *   - int8 weights (one float scale per row) multiply x rounded per row to int16 (absmax / 32767),
 *     summed exactly in int32 over blocks of 256 (127 * 32767 * 256 < 2^31) and then in float32, or
 *     where the CPU has AVX512-VNNI as byte dot products on the two bytes of x (dot_i8_vnni);
 *   - float32 weights as they are;
 *   - packed bfloat16 weights (12 bits a weight, lossless; "packed bfloat16" below) are rebuilt in
 *     registers and take the bfloat16 dot products: the same results, 3/4 of the bytes.
 * token: 1-16 tokens of a batch of one (one decode token, or a speculative draft to verify), from ids
 *   to float32 logits, in one call, every weight row read once for all of them: the embedding row,
 *   every layer (RMSNorm, fused q/k/v with optional bias and QK-norm, rotary, the cache write,
 *   grouped-query attention over the filled slots with the softmax in float32, output projection,
 *   RMSNorm, SwiGLU, residuals), the final RMSNorm and the output head; the residual stream is kept in
 *   float32 and rounded to the activation dtype where the model's own forward (astrai_core/model.py,
 *   the reference it is tested against) rounds it before the head.
 * argmax, sample: the next token from a row of logits, greedy or sampled (penalty, temperature, top-k,
 *   top-p, one uniform number), each one call: between two tokens PyTorch's ops run with cold caches.
 *
 * Weights must be contiguous with K a multiple of 32. Paths: AVX-512 (F+BW; level 3 with BF16 and VNNI)
 * and AVX2+FMA, chosen at run time by the CPU; other CPUs and compilers build without them and level()
 * reports 0, so the Python side keeps PyTorch's ops. The GIL is released while the loops run (the GUI
 * keeps going).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_ROWS 16

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define ALWAYS_INLINE __forceinline
#else
#define ALWAYS_INLINE inline
#endif
#define BLOCK 256
#if defined(__GNUC__) && !defined(__clang__)
#define UNROLL4 _Pragma("GCC unroll 4")  /* the row loops of the multi-row dot products: registers, not memory */
#elif defined(__clang__)
#define UNROLL4 _Pragma("unroll 4")
#else
#define UNROLL4
#endif

/* Scratch buffers start on 64-byte boundaries (one cache line, one AVX-512 vector): an input row the
   linears read at another offset splits every vector load across two lines (two plans of the same 1B
   int8 model in one process, their buffers wherever malloc put them, ran ~20% apart). */
static size_t up16(size_t floats) { return (floats + 15) & ~(size_t)15; }
static void *align64(void *raw) { return (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63); }

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_X86 1
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define T256 __attribute__((target("avx2,fma")))
#define T512BF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,avx2,fma")))
#define T512VB __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx512vnni,avx512vbmi,avx2,fma")))
#else
#define HAVE_X86 0
#endif

static int g_level = -1; /* 0 none, 1 AVX2+FMA, 2 AVX-512, 3 AVX-512 with BF16 and VNNI dot products */
static int g_vbmi;       /* level 3 and AVX512-VBMI: packed bfloat16 weights decode in registers */
static int g_pf_compact; /* prefetch int8 and packed bfloat16 weights in software (see PREFETCH) */

static int detect_level(void) {
#if HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni") ? 3 : 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int packed_ok(void) {
#if HAVE_X86
    return detect_level() == 3 && __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

enum { W_BF16 = 0, W_INT8 = 1, W_F32 = 2, W_PBF16 = 3 };  /* weight kinds (W_PBF16: packed bfloat16) */

/* ---- packed bfloat16: the same weights in 12 bits --------------------------------------------
   A bfloat16 is a high byte (sign and the exponent's top 7 bits) and a low byte (the exponent's last
   bit and the 7 mantissa bits). Within one weight matrix the high byte takes few values: each of its
   values covers two binades of one sign, and weights spread over few binades, so each weight is
   stored as its low byte and a 4-bit code into a 16-entry table of high bytes. Code 15 is high byte
   0: the weights of that byte (zeros, subnormals) as they are, and, with low byte 0, the escapes:
   weights whose high byte is none of the table's 15 others, kept exactly in a list per row (col, bf16)
   and put back into their block before its products are taken. SmolLM2-135M's trained weights leave
   0.018% to escapes (its worst matrix 0.08%), normal random ones 0.019%. Decode reads 1.5 bytes a
   weight instead of 2 and rebuilds every weight bit for bit in registers (a VBMI byte lookup and two
   unpacks per 64 weights), so a packed linear's results equal the unpacked one's exactly; where memory
   bounds decode it runs 1.3-1.4x as fast (benchmarks/RESULTS.md, "Packed bfloat16").

   Layout of one (N, K) matrix, K a multiple of 64, in one byte buffer (64-byte aligned):
     [0, 64)           the table: byte i = high byte of code i & 15 (vpermb reads 6 index bits)
     lo   N*K bytes    low bytes; within each block of 64 weights, position p holds weight
                       packed_index(p) (the order unpacklo/unpackhi_epi8 put back in place)
     code N*K/2 bytes  position p's code: low nibble of byte p (p < 32), high nibble of byte p - 32
     eptr (N+1) int32  row n's escapes are entries eptr[n]..eptr[n+1], by ascending column
     ecol E int32, eval E uint16 */
typedef struct {
    const uint8_t *tbl, *lo, *code;
    const int32_t *eptr, *ecol;
    const uint16_t *eval;
} Packed;

static Packed packed_parts(const void *w, long N, long K) {
    Packed p;
    p.tbl = (const uint8_t *)w;
    p.lo = p.tbl + 64;
    p.code = p.lo + (size_t)N * (size_t)K;
    p.eptr = (const int32_t *)(p.code + (size_t)N * (size_t)K / 2);
    p.ecol = p.eptr + N + 1;
    p.eval = (const uint16_t *)(p.ecol + p.eptr[N]);
    return p;
}

#define PACKED_MAX_K 16384  /* the longest packed row (the portable path unpacks one on the stack) */

static size_t packed_size(long N, long K, long E) {
    return 64 + (size_t)N * (size_t)K * 3 / 2 + 4 * ((size_t)N + 1) + 6 * (size_t)E;
}

static inline int packed_index(int p) { /* unpacklo takes bytes 0-7 of each 16-byte lane, unpackhi 8-15 */
    int lane = p >> 4, t = p & 15;
    return t < 8 ? 8 * lane + t : 24 + 8 * lane + t;
}

/* row n of a packed matrix back to bfloat16 (portable; the vector path is unpack_row_512) */
static void unpack_row(const Packed *pk, long n, long K, uint16_t *out) {
    const uint8_t *lo = pk->lo + (size_t)n * (size_t)K, *code = pk->code + (size_t)n * (size_t)K / 2;
    for (long k = 0; k < K; k += 64)
        for (int p = 0; p < 64; p++) {
            int c = p < 32 ? code[k / 2 + p] & 15 : code[k / 2 + p - 32] >> 4;
            out[k + packed_index(p)] = (uint16_t)(pk->tbl[c] << 8 | lo[k + p]);
        }
    for (int32_t e = pk->eptr[n]; e < pk->eptr[n + 1]; e++) out[pk->ecol[e]] = pk->eval[e];
}

#if HAVE_X86
/* ---- AVX-512 ------------------------------------------------------------------------------ */
/* Software prefetch of the weight stream, PF_AHEAD bytes ahead, into L2. The hardware prefetchers
   stop at 4 KB page boundaries; on the Intel Xeon (Sapphire Rapids class, AMX) VM of the development
   machine they left the dot products below short of the memory's read rate. Weights from DRAM, 24
   matrices 8192 x 2048, 2 threads, in one process: bfloat16 21.4 -> 28.3 GB/s, packed 20.3 -> 27.4,
   int8 17.7 -> 26.0, float32 27.6 -> 30.4 (flat from 4 KB to 8 KB ahead, lower below 3 KB).
   On the AMD EPYC (Zen 4) VM it helps the plain formats and hurts the compact ones (whole decode, one
   process, the same engine with and without, 6-8 alternating rounds): float32 1B 1.17x, SmolLM2 1.15x;
   bfloat16 unpacked 1B 1.09x; but int8 1B 0.86x, SmolLM2 0.98x, packed bfloat16 1B 0.955x, SmolLM2
   0.99x. So float32 and bfloat16 always prefetch, int8 and packed only where g_pf_compact (not AMD;
   `prefetch_compact()` switches it for measurements and tests). Prefetching never changes a result. */
#define PF_AHEAD 4096
#define PREFETCH(p) _mm_prefetch((const char *)(p) + PF_AHEAD, _MM_HINT_T2)
#define PREFETCH_IF(pf, p) do { if (pf) PREFETCH(p); } while (0)

T512 static inline __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* float32 x against one row of bfloat16 (widened by a shift) or float32 weights */
T512 static inline __m512 load16(const void *p, long i, int bf16) {
    return bf16 ? bf16x16((const uint16_t *)p + i) : _mm512_loadu_ps((const float *)p + i);
}

T512 static ALWAYS_INLINE float dot_512_t(const void *w, int bf16, const float *x, long K) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
    for (; k + 64 <= K; k += 64) {
        for (long b = 0; b < (bf16 ? 128 : 256); b += 64) PREFETCH((const char *)w + (bf16 ? 2 : 4) * k + b);
        a = _mm512_fmadd_ps(load16(w, k, bf16), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(load16(w, k + 16, bf16), _mm512_loadu_ps(x + k + 16), b);
        c = _mm512_fmadd_ps(load16(w, k + 32, bf16), _mm512_loadu_ps(x + k + 32), c);
        d = _mm512_fmadd_ps(load16(w, k + 48, bf16), _mm512_loadu_ps(x + k + 48), d);
    }
    for (; k < K; k += 16) a = _mm512_fmadd_ps(load16(w, k, bf16), _mm512_loadu_ps(x + k), a);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

T512 static float dot_bf16_512(const uint16_t *w, const float *x, long K) { return dot_512_t(w, 1, x, K); }
T512 static float dot_f32_512(const float *w, const float *x, long K) { return dot_512_t(w, 0, x, K); }

T512 static inline __m512i madd_i8x32(const int8_t *w, const int16_t *x, __m512i acc) {
    __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)w));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(wv, _mm512_loadu_si512((const void *)x)));
}

T512 static float dot_i8_512(const int8_t *w, const int16_t *x, long K) {
    __m512 f = _mm512_setzero_ps();
    for (long k0 = 0; k0 < K; k0 += BLOCK) {
        long k1 = k0 + BLOCK < K ? k0 + BLOCK : K, k = k0;
        __m512i a = _mm512_setzero_si512(), b = a;
        for (; k + 64 <= k1; k += 64) {
            a = madd_i8x32(w + k, x + k, a);
            b = madd_i8x32(w + k + 32, x + k + 32, b);
        }
        for (; k < k1; k += 32) a = madd_i8x32(w + k, x + k, a);
        f = _mm512_add_ps(f, _mm512_cvtepi32_ps(_mm512_add_epi32(a, b)));
    }
    return _mm512_reduce_add_ps(f);
}


/* bfloat16 weights times x rounded to bfloat16, pairs summed in float32 (AVX512-BF16): R rows of x
   (x + r K) against one weight row, each weight vector loaded once for all of them. Each row's sums
   run in the same order whatever R is, so a row's result does not depend on the rows beside it. */
T512BF static ALWAYS_INLINE void dot_bf16_dp_t(const uint16_t *w, const uint16_t *x, long K, int R, float *out) {
    __m512 a[4], b[4];
    UNROLL4 for (int r = 0; r < R; r++) a[r] = b[r] = _mm512_setzero_ps();
    long k = 0;
    for (; k + 64 <= K; k += 64) {
        PREFETCH(w + k);
        PREFETCH(w + k + 32);
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(w + k));
        __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(w + k + 32));
        UNROLL4 for (int r = 0; r < R; r++) {
            a[r] = _mm512_dpbf16_ps(a[r], w0, (__m512bh)_mm512_loadu_si512((const void *)(x + r * K + k)));
            b[r] = _mm512_dpbf16_ps(b[r], w1, (__m512bh)_mm512_loadu_si512((const void *)(x + r * K + k + 32)));
        }
    }
    for (; k < K; k += 32) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(w + k));
        UNROLL4 for (int r = 0; r < R; r++)
            a[r] = _mm512_dpbf16_ps(a[r], w0, (__m512bh)_mm512_loadu_si512((const void *)(x + r * K + k)));
    }
    UNROLL4 for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r]));
}

/* int8 weights times x rounded to int16 (as dot_i8_512), with VNNI byte dot products: x + 32768 is
   split into its high and low bytes (both unsigned, the planes hl[0, K) and hl[K, 2K)), so
   sum(x * w) = 256 * sum(hi * w) + sum(lo * w) - 32768 * sum(w), each sum one vpdpbusd per 64 weights
   (the widening path needs three instructions per 32: it tops out at ~32 GB/s here, below the
   memory's read rate). Exact: a lane sums K / 16 products of at most 255 * 127 (int32 up to K ~ 1M). */
T512BF static inline __m512i sum_to_i64(__m512i v) {  /* 16 int32 lanes -> 8 int64 lanes */
    return _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)),
                            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
}

/* R rows of x (planes at hl + 2 K r) against one weight row: the weight vector and its sum S are
   loaded and taken once for all rows; each row's result is the same whatever R is */
T512BF static ALWAYS_INLINE void dot_i8_vnni_t(const int8_t *w, const uint8_t *hl, long K, int R, float *out,
                                              const int pf) {
    __m512i h[4], l[4], s = _mm512_setzero_si512(), ones = _mm512_set1_epi8(1);
    UNROLL4 for (int r = 0; r < R; r++) h[r] = l[r] = s;
    for (long k = 0; k < K; k += 64) {
        __mmask64 m = k + 64 <= K ? ~0ULL : 0xFFFFFFFFULL;  /* K is a multiple of 32: a last half block */
        PREFETCH_IF(pf, w + k);
        __m512i wv = _mm512_maskz_loadu_epi8(m, w + k);
        UNROLL4 for (int r = 0; r < R; r++) {
            const uint8_t *hi = hl + 2 * K * r, *lo = hi + K;
            h[r] = _mm512_dpbusd_epi32(h[r], _mm512_maskz_loadu_epi8(m, hi + k), wv);
            l[r] = _mm512_dpbusd_epi32(l[r], _mm512_maskz_loadu_epi8(m, lo + k), wv);
        }
        s = _mm512_dpbusd_epi32(s, ones, wv);
    }
    /* in int64 (a row's total leaves int32 from K ~ 66000): 256 H + L - 32768 S */
    __m512i s64 = _mm512_slli_epi64(sum_to_i64(s), 15);
    UNROLL4 for (int r = 0; r < R; r++) {
        __m512i t = _mm512_sub_epi64(_mm512_add_epi64(_mm512_slli_epi64(sum_to_i64(h[r]), 8), sum_to_i64(l[r])), s64);
        out[r] = (float)_mm512_reduce_add_epi64(t);
    }
}


/* one block of 64 packed weights as two vectors of 32 bfloat16 in order: the codes' low nibbles serve
   bytes 0-31, their high nibbles (a 4-bit shift of the upper copy) bytes 32-63 */
T512VB static ALWAYS_INLINE void pbf16_block(const uint8_t *lo, const uint8_t *code, __m512i tbl, __m512i *w0,
                                            __m512i *w1) {
    __m512i lv = _mm512_loadu_si512((const void *)lo);
    __m512i cv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)code));
    __m512i hv = _mm512_permutexvar_epi8(_mm512_mask_srli_epi16(cv, 0xFFFF0000u, cv, 4), tbl);
    *w0 = _mm512_unpacklo_epi8(lv, hv);
    *w1 = _mm512_unpackhi_epi8(lv, hv);
}

/* the block at k with row n's escapes from entry *e on put back (their decoded value is 0: OR) */
T512VB static void pbf16_patch(const Packed *pk, long n, long k, int32_t *e, __m512i *w0, __m512i *w1) {
    uint16_t fix[64] __attribute__((aligned(64))) = {0};
    for (; *e < pk->eptr[n + 1] && pk->ecol[*e] < k + 64; (*e)++) fix[pk->ecol[*e] - k] = pk->eval[*e];
    *w0 = _mm512_or_si512(*w0, _mm512_load_si512((const void *)fix));
    *w1 = _mm512_or_si512(*w1, _mm512_load_si512((const void *)(fix + 32)));
}

/* dot_bf16_dp_t on row n of a packed matrix: the same products in the same order, so the same results */
T512VB static ALWAYS_INLINE void dot_pbf16_t(const Packed *pk, long n, const uint16_t *x, long K, int R, float *out,
                                            const int pf) {
    __m512 a[4], b[4];
    UNROLL4 for (int r = 0; r < R; r++) a[r] = b[r] = _mm512_setzero_ps();
    __m512i tbl = _mm512_loadu_si512((const void *)pk->tbl), w0, w1;
    const uint8_t *lo = pk->lo + (size_t)n * (size_t)K, *code = pk->code + (size_t)n * (size_t)K / 2;
    int32_t e = pk->eptr[n];
    for (long k = 0; k < K;) {
        long stop = e < pk->eptr[n + 1] ? pk->ecol[e] & ~63L : K;  /* blocks up to the next escape's */
        for (; k <= stop && k < K; k += 64) {
            PREFETCH_IF(pf, lo + k);
            if (!(k & 64)) PREFETCH_IF(pf, code + k / 2);  /* 32 code bytes a block: a line every other */
            pbf16_block(lo + k, code + k / 2, tbl, &w0, &w1);
            if (k == stop) pbf16_patch(pk, n, k, &e, &w0, &w1);
            UNROLL4 for (int r = 0; r < R; r++) {
                a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)w0, (__m512bh)_mm512_loadu_si512((const void *)(x + r * K + k)));
                b[r] = _mm512_dpbf16_ps(b[r], (__m512bh)w1,
                                        (__m512bh)_mm512_loadu_si512((const void *)(x + r * K + k + 32)));
            }
        }
    }
    UNROLL4 for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r]));
}

T512VB static void unpack_row_512(const Packed *pk, long n, long K, uint16_t *out) {
    __m512i tbl = _mm512_loadu_si512((const void *)pk->tbl), w0, w1;
    const uint8_t *lo = pk->lo + (size_t)n * (size_t)K, *code = pk->code + (size_t)n * (size_t)K / 2;
    const int pf = g_pf_compact;
    for (long k = 0; k < K; k += 64) {
        PREFETCH_IF(pf, lo + k);
        if (!(k & 64)) PREFETCH_IF(pf, code + k / 2);
        pbf16_block(lo + k, code + k / 2, tbl, &w0, &w1);
        _mm512_storeu_si512((void *)(out + k), w0);
        _mm512_storeu_si512((void *)(out + k + 32), w1);
    }
    for (int32_t e = pk->eptr[n]; e < pk->eptr[n + 1]; e++) out[pk->ecol[e]] = pk->eval[e];
}

/* a row of x rounded to int16 (scale amax / 32767, returned): as int16 values into q16, or split into
   the byte planes of dot_i8_vnni (x + 32768: high bytes hl[0, K), low bytes hl[K, 2K)) when q16 is NULL */
T512 static float quantize_row512(const float *r, long K, int16_t *q16, uint8_t *hl) {
    __m512 mx = _mm512_setzero_ps();
    for (long k = 0; k < K; k += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(r + k)));
    float amax = _mm512_reduce_max_ps(mx);
    float sc = amax > 0.f && isfinite(amax) ? amax / 32767.f : 1.f;
    __m512 inv = _mm512_set1_ps(1.f / sc);
    __m512i lim = _mm512_set1_epi32(32767), off = _mm512_set1_epi32(32768), byte = _mm512_set1_epi32(255);
    for (long k = 0; k < K; k += 16) {  /* round to nearest even, as lrintf */
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(r + k), inv));
        q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
        if (q16) {
            _mm256_storeu_si256((__m256i *)(q16 + k), _mm512_cvtepi32_epi16(q));
        } else {
            __m512i u = _mm512_add_epi32(q, off);
            _mm_storeu_si128((__m128i *)(hl + k), _mm512_cvtepi32_epi8(_mm512_srli_epi32(u, 8)));
            _mm_storeu_si128((__m128i *)(hl + K + k), _mm512_cvtepi32_epi8(_mm512_and_si512(u, byte)));
        }
    }
    return sc;
}

/* exp_nonpos on 16 lanes (the same polynomial) */
T512 static inline __m512 exp_nonpos512(__m512 x) {
    __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(1.4426950409f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.5403530e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* up to 16 bfloat16 (the first `left`) as float32, and float32 rounded (nearest even) to bfloat16 */
T512BF static inline __m512 bf16_load512(const uint16_t *p, long left) {
    __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

T512BF static inline __m512 bf16_round512(__m512 v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}

T512BF static inline void bf16_store512(uint16_t *p, __m512 v, long left) {
    __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}

/* swiglu_bf16 / rmsnorm_bf16 on AVX512-BF16 */
T512BF static void swiglu_bf16_512(const uint16_t *gu, long n, uint16_t *act) {
    __m512 one = _mm512_set1_ps(1.f);
    for (long i = 0; i < n; i += 16) {
        __m512 x = bf16_load512(gu + i, n - i);
        __m512 e = exp_nonpos512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x))), r = _mm512_div_ps(one, _mm512_add_ps(one, e));
        __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 s = _mm512_mul_ps(x, _mm512_mask_mul_ps(r, neg, e, r));
        bf16_store512(act + i, _mm512_mul_ps(bf16_round512(s), bf16_load512(gu + n + i, n - i)), n - i);
    }
}

T512BF static void rmsnorm_bf16_512(const uint16_t *x, const uint16_t *w, float eps, long n, uint16_t *out) {
    __m512 ss = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) {
        __m512 v = bf16_load512(x + i, n - i);
        ss = _mm512_fmadd_ps(v, v, ss);
    }
    __m512 inv = _mm512_set1_ps(1.f / sqrtf(_mm512_reduce_add_ps(ss) / (float)n + eps));
    for (long i = 0; i < n; i += 16)
        bf16_store512(out + i, _mm512_mul_ps(_mm512_mul_ps(bf16_load512(x + i, n - i), inv), bf16_load512(w + i, n - i)),
                      n - i);
}

/* ---- AVX2 --------------------------------------------------------------------------------- */
T256 static inline __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

T256 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

T256 static inline __m256 load8(const void *p, long i, int bf16) {
    return bf16 ? bf16x8((const uint16_t *)p + i) : _mm256_loadu_ps((const float *)p + i);
}

T256 static ALWAYS_INLINE float dot_256_t(const void *w, int bf16, const float *x, long K) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (long k = 0; k < K; k += 32) {
        a = _mm256_fmadd_ps(load8(w, k, bf16), _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(load8(w, k + 8, bf16), _mm256_loadu_ps(x + k + 8), b);
        c = _mm256_fmadd_ps(load8(w, k + 16, bf16), _mm256_loadu_ps(x + k + 16), c);
        d = _mm256_fmadd_ps(load8(w, k + 24, bf16), _mm256_loadu_ps(x + k + 24), d);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
}

T256 static float dot_bf16_256(const uint16_t *w, const float *x, long K) { return dot_256_t(w, 1, x, K); }
T256 static float dot_f32_256(const float *w, const float *x, long K) { return dot_256_t(w, 0, x, K); }

T256 static inline __m256i madd_i8x16(const int8_t *w, const int16_t *x, __m256i acc) {
    __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(wv, _mm256_loadu_si256((const __m256i *)x)));
}

T256 static float dot_i8_256(const int8_t *w, const int16_t *x, long K) {
    __m256 f = _mm256_setzero_ps();
    for (long k0 = 0; k0 < K; k0 += BLOCK) {
        long k1 = k0 + BLOCK < K ? k0 + BLOCK : K;
        __m256i a = _mm256_setzero_si256(), b = a;
        for (long k = k0; k < k1; k += 32) {
            a = madd_i8x16(w + k, x + k, a);
            b = madd_i8x16(w + k + 16, x + k + 16, b);
        }
        f = _mm256_add_ps(f, _mm256_cvtepi32_ps(_mm256_add_epi32(a, b)));
    }
    return hsum256(f);
}
#endif

/* ---- linears: y = x @ W^T for M rows, rows of W split across threads ------------------------ */

typedef struct {
    int kind;           /* W_BF16, W_INT8, W_F32 or W_PBF16 */
    const void *w;      /* (N, K) contiguous */
    const float *scale; /* (N,) per-row scales of int8 weights */
    long N, K;
} Lin;

typedef struct {  /* the input of a linear, prepared once per call */
    long M;
    const float *xf;   /* (M, K) float32 */
    const int16_t *xq; /* (M, K) x rounded per row to int16 (int8 weights; on level 3 as two byte planes),
                          or to bfloat16 (bf16 weights, level 3) */
    const float *xs;   /* (M,) their scales */
    int dp;            /* bf16 weights: xq holds x rounded to bfloat16 for the BF16 dot products */
} Input;

/* int8 weights multiply the input rounded per row to int16: absmax / 32767. Each row of xq holds K
   int16 values, or on level 3 the same 2K bytes as dot_i8_vnni's two byte planes. */
static void quantize_rows(const float *x, long M, long K, int16_t *xq, float *xs) {
    for (long m = 0; m < M; m++) {
        const float *r = x + m * K;
#if HAVE_X86
        if (g_level >= 2) {
            xs[m] = quantize_row512(r, K, g_level == 3 ? NULL : xq + m * K, (uint8_t *)(xq + m * K));
            continue;
        }
#endif
        float amax = 0.f;
        for (long k = 0; k < K; k++) {
            float a = fabsf(r[k]);
            amax = a > amax ? a : amax;
        }
        float sc = amax > 0.f && isfinite(amax) ? amax / 32767.f : 1.f, inv = 1.f / sc;
        for (long k = 0; k < K; k++) xq[m * K + k] = (int16_t)lrintf(r[k] * inv);
        xs[m] = sc;
    }
}

/* what a linear of this kind needs besides float32 x: int16 rows for int8 weights; for bf16 weights
   under bf16 activations (x_bf16: the input is bfloat16-valued anyway) on level 3, bfloat16 rows */
static int prepare_input(int kind, const float *x, long M, long K, int x_bf16, int16_t *xq, float *xs) {
    if (kind == W_INT8) {
        quantize_rows(x, M, K, xq, xs);
    } else if ((kind == W_BF16 || kind == W_PBF16) && g_level == 3 && x_bf16) {
        for (long i = 0; i < M * K; i++) ((uint16_t *)xq)[i] = f32_to_bf16(x[i]);
        return 1;
    }
    return 0;
}

/* results v[0..R) of weight row n for x rows m.. into y (M, N): float32 yf, or bfloat16 yb */
static inline void put_rows(const float *v, long R, long N, long n, long m, float *yf, uint16_t *yb) {
    for (long r = 0; r < R; r++) {
        if (yb) yb[(m + r) * N + n] = f32_to_bf16(v[r]);
        else yf[(m + r) * N + n] = v[r];
    }
}

#if HAVE_X86
/* rows n0..n1 of y (M, N) by the AVX512-BF16 / VNNI dot products (bf16 weights under x rounded to
   bfloat16, or int8 weights), x's rows four at a time; the kind is fixed per instance, so nothing is
   dispatched per weight row (that cost ~2% of an int8 SmolLM2 token) */
T512BF static ALWAYS_INLINE void lin_rows_dp_t(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0,
                                              long n1, int kind, const int pf) {
    long K = l->K, M = in->M;
    float v[4];
    for (long n = n0; n < n1; n++)
        for (long m = 0; m < M; m += 4) {
            long R = M - m < 4 ? M - m : 4;
            if (kind == W_BF16) {
                const uint16_t *w = (const uint16_t *)l->w + n * K, *x = (const uint16_t *)in->xq + m * K;
                switch (R) {
                case 1: dot_bf16_dp_t(w, x, K, 1, v); break;
                case 2: dot_bf16_dp_t(w, x, K, 2, v); break;
                case 3: dot_bf16_dp_t(w, x, K, 3, v); break;
                default: dot_bf16_dp_t(w, x, K, 4, v); break;
                }
            } else {
                const int8_t *w = (const int8_t *)l->w + n * K;
                const uint8_t *x = (const uint8_t *)(in->xq + m * K);
                switch (R) {
                case 1: dot_i8_vnni_t(w, x, K, 1, v, pf); break;
                case 2: dot_i8_vnni_t(w, x, K, 2, v, pf); break;
                case 3: dot_i8_vnni_t(w, x, K, 3, v, pf); break;
                default: dot_i8_vnni_t(w, x, K, 4, v, pf); break;
                }
                for (long r = 0; r < R; r++) v[r] = v[r] * l->scale[n] * in->xs[m + r];
            }
            put_rows(v, R, l->N, n, m, yf, yb);
        }
}

T512BF static void lin_rows_bf16_dp(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0, long n1) {
    lin_rows_dp_t(l, in, yf, yb, n0, n1, W_BF16, 0);
}

T512BF static void lin_rows_i8_vnni(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0, long n1) {
    if (g_pf_compact) lin_rows_dp_t(l, in, yf, yb, n0, n1, W_INT8, 1);
    else lin_rows_dp_t(l, in, yf, yb, n0, n1, W_INT8, 0);
}

/* lin_rows_bf16_dp for packed bfloat16 weights (its own instance: VBMI is not in T512BF's set) */
T512VB static ALWAYS_INLINE void lin_rows_pbf16_t(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0,
                                                 long n1, const int pf) {
    long K = l->K, M = in->M;
    Packed pk = packed_parts(l->w, l->N, K);
    float v[4];
    for (long n = n0; n < n1; n++)
        for (long m = 0; m < M; m += 4) {
            long R = M - m < 4 ? M - m : 4;
            const uint16_t *x = (const uint16_t *)in->xq + m * K;
            switch (R) {
            case 1: dot_pbf16_t(&pk, n, x, K, 1, v, pf); break;
            case 2: dot_pbf16_t(&pk, n, x, K, 2, v, pf); break;
            case 3: dot_pbf16_t(&pk, n, x, K, 3, v, pf); break;
            default: dot_pbf16_t(&pk, n, x, K, 4, v, pf); break;
            }
            put_rows(v, R, l->N, n, m, yf, yb);
        }
}

T512VB static void lin_rows_pbf16(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0, long n1) {
    if (g_pf_compact) lin_rows_pbf16_t(l, in, yf, yb, n0, n1, 1);
    else lin_rows_pbf16_t(l, in, yf, yb, n0, n1, 0);
}
#endif

/* y[m..m+R) of weight row n, R <= 4, by the AVX-512 / AVX2 kernels */
static void dot_rows(const Lin *l, long n, const Input *in, long m, long R, float *out) {
#if HAVE_X86
    long K = l->K;
    int wide = g_level >= 2;
    switch (l->kind) {
    case W_BF16: {
        const uint16_t *w = (const uint16_t *)l->w + n * K;
        for (long r = 0; r < R; r++)
            out[r] = wide ? dot_bf16_512(w, in->xf + (m + r) * K, K) : dot_bf16_256(w, in->xf + (m + r) * K, K);
        return;
    }
    case W_INT8: {
        const int8_t *w = (const int8_t *)l->w + n * K;
        for (long r = 0; r < R; r++)
            out[r] = wide ? dot_i8_512(w, in->xq + (m + r) * K, K) : dot_i8_256(w, in->xq + (m + r) * K, K);
        for (long r = 0; r < R; r++) out[r] = out[r] * l->scale[n] * in->xs[m + r];
        return;
    }
    default: {
        const float *w = (const float *)l->w + n * K;
        for (long r = 0; r < R; r++)
            out[r] = wide ? dot_f32_512(w, in->xf + (m + r) * K, K) : dot_f32_256(w, in->xf + (m + r) * K, K);
        return;
    }
    }
#else
    (void)l; (void)n; (void)in; (void)m;
    for (long r = 0; r < R; r++) out[r] = 0.f;
#endif
}

/* rows n0..n1 of y (M, N): float32 into yf, or bfloat16 into yb */
static void lin_rows(const Lin *l, const Input *in, float *yf, uint16_t *yb, long n0, long n1) {
#if HAVE_X86
    if (l->kind == W_BF16 && in->dp) {
        lin_rows_bf16_dp(l, in, yf, yb, n0, n1);
        return;
    }
    if (l->kind == W_INT8 && g_level == 3) {
        lin_rows_i8_vnni(l, in, yf, yb, n0, n1);
        return;
    }
    if (l->kind == W_PBF16 && in->dp && g_vbmi) {
        lin_rows_pbf16(l, in, yf, yb, n0, n1);
        return;
    }
#endif
    float v[4];
    uint16_t row[PACKED_MAX_K];  /* packed weights on the other paths: each row unpacked, then as bfloat16 */
    Packed pk = l->kind == W_PBF16 ? packed_parts(l->w, l->N, l->K) : (Packed){0};
    Lin one = {W_BF16, row, NULL, 1, l->K};
    for (long n = n0; n < n1; n++) {
        if (l->kind == W_PBF16) unpack_row(&pk, n, l->K, row);
        for (long m = 0; m < in->M; m += 4) {
            long R = in->M - m < 4 ? in->M - m : 4;
            if (l->kind == W_PBF16) dot_rows(&one, 0, in, m, R, v);
            else dot_rows(l, n, in, m, R, v);
            put_rows(v, R, l->N, n, m, yf, yb);
        }
    }
}

static void lin_run(const Lin *l, const Input *in, float *yf, uint16_t *yb, int threads) {
#ifdef _OPENMP
    if (threads > 1 && l->N >= 64) {
        #pragma omp parallel num_threads(threads)
        {
            long t = omp_get_thread_num(), T = omp_get_num_threads();
            long chunk = (l->N + T - 1) / T, a = t * chunk, b = a + chunk < l->N ? a + chunk : l->N;
            if (a < b) lin_rows(l, in, yf, yb, a, b);
        }
        return;
    }
#else
    (void)threads;
#endif
    lin_rows(l, in, yf, yb, 0, l->N);
}

/* ---- one-query attention over a cache --------------------------------------------------------- */
#if HAVE_X86
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static inline float load_f(const void *p, long i, int bf16) {
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* e^x for x <= 0, vectorizable: 2^(x log2 e) split into 2^n * 2^f, |f| <= 1/2, with the degree-6
   Taylor series of 2^f (relative error ~1e-7); below -87 the result is 0 as far as a softmax cares */
static inline float exp_nonpos(float x) {
    float t = (x < -87.f ? -87.f : x) * 1.4426950409f;
    float n = rintf(t), f = t - n;
    float p = 1.5403530e-4f;
    p = p * f + 1.3333558e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

typedef struct {
    const float *q;  /* (B, nh, hs) float32 */
    const void *k, *v; /* cache (B, nkv, S_max, hs) */
    float *out;      /* (B, nh, hs) float32 */
    int bf16;        /* cache dtype */
    long B, nh, nkv, S, S_max, hs;
    float scale;
    const uint16_t *qb; /* (B, nh, hs) the query in bfloat16 (bfloat16 caches), else NULL */
} Attn;

/* scores (G, n) -> e^(score - max) in place, with each row's max m and sum l (the partial softmax
   that attend_run merges across threads) */
CLONES static void softmax_part(float *sc, long n, long G, float *m, float *l) {
    for (long g = 0; g < G; g++) {
        float *r = sc + g * n, mx = -INFINITY, sum = 0.f;
        #pragma omp simd reduction(max : mx)
        for (long s = 0; s < n; s++) mx = r[s] > mx ? r[s] : mx;
        #pragma omp simd reduction(+ : sum)
        for (long s = 0; s < n; s++) {
            r[s] = exp_nonpos(r[s] - mx);
            sum += r[s];
        }
        m[g] = mx;
        l[g] = sum;
    }
}

/* One query per head, the G heads of a key/value group together (each key and value row is read
   once for all of them), over positions s0..s1 of the cache: unnormalized out (G, hs), the running
   max m (G) and the sum of exponentials l (G), to be merged with the other threads' ranges. Scores
   (G, n) in `sc`. Written so the compiler vectorizes every inner loop over hs (clones for AVX-512,
   AVX2 and plain x86-64). */
static ALWAYS_INLINE void attend_part_t(const float *q, const void *k, const void *v, int bf16,
                                                                long s0, long s1, long hs, long G, float scale,
                                                                float *sc, float *out, float *m, float *l) {
    long n = s1 - s0;
    for (long s = s0; s < s1; s++) {
        float kr[1024];
        if (bf16) {
            const uint16_t *p = (const uint16_t *)k + s * hs;
            #pragma omp simd
            for (long i = 0; i < hs; i++) kr[i] = bf16_to_f32(p[i]);
        } else {
            memcpy(kr, (const float *)k + s * hs, (size_t)hs * sizeof(float));
        }
        for (long g = 0; g < G; g++) {
            const float *qg = q + g * hs;
            float d = 0.f;
            #pragma omp simd reduction(+ : d)
            for (long i = 0; i < hs; i++) d += qg[i] * kr[i];
            sc[g * n + (s - s0)] = d * scale;
        }
    }
    softmax_part(sc, n, G, m, l);
    memset(out, 0, (size_t)(G * hs) * sizeof(float));
    for (long s = s0; s < s1; s++) {
        float vr[1024];
        if (bf16) {
            const uint16_t *p = (const uint16_t *)v + s * hs;
            #pragma omp simd
            for (long i = 0; i < hs; i++) vr[i] = bf16_to_f32(p[i]);
        } else {
            memcpy(vr, (const float *)v + s * hs, (size_t)hs * sizeof(float));
        }
        for (long g = 0; g < G; g++) {
            float pg = sc[g * n + (s - s0)], *og = out + g * hs;
            #pragma omp simd
            for (long i = 0; i < hs; i++) og[i] += pg * vr[i];
        }
    }
}

CLONES static void attend_part(const float *q, const void *k, const void *v, int bf16, long s0, long s1, long hs,
                               long G, float scale, float *sc, float *out, float *m, float *l) {
    if (bf16) attend_part_t(q, k, v, 1, s0, s1, hs, G, scale, sc, out, m, l);
    else attend_part_t(q, k, v, 0, s0, s1, hs, G, scale, sc, out, m, l);
}

#if HAVE_X86
/* lane j of the result = the sum of the lanes of p[j]: W horizontal sums as one transpose-and-add tree
   (45 instructions for 16 sums where 16 separate reductions take ~130) */
T512 static inline __m512 sums16(const __m512 *p) {
    __m512 u[8], w[4];
    for (int i = 0; i < 8; i++)
        u[i] = _mm512_add_ps(_mm512_unpacklo_ps(p[2 * i], p[2 * i + 1]), _mm512_unpackhi_ps(p[2 * i], p[2 * i + 1]));
    for (int i = 0; i < 4; i++) { /* per 128-bit lane: the lane's partial sums of rows 4i..4i+3 */
        __m512d a = _mm512_castps_pd(u[2 * i]), b = _mm512_castps_pd(u[2 * i + 1]);
        w[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x44), _mm512_shuffle_f32x4(w[0], w[1], 0xEE));
    __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x44), _mm512_shuffle_f32x4(w[2], w[3], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
}

T256 static inline __m256 sums8(const __m256 *p) {
    __m256 u[4], w[2];
    for (int i = 0; i < 4; i++)
        u[i] = _mm256_add_ps(_mm256_unpacklo_ps(p[2 * i], p[2 * i + 1]), _mm256_unpackhi_ps(p[2 * i], p[2 * i + 1]));
    for (int i = 0; i < 2; i++) {
        __m256d a = _mm256_castps_pd(u[2 * i]), b = _mm256_castps_pd(u[2 * i + 1]);
        w[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(w[0], w[1], 0x20), _mm256_permute2f128_ps(w[0], w[1], 0x31));
}

/* Lane-wise partial products of key row `row` with the G queries into p[g][j]: float32 FMAs on the
   widened key, or (DP) AVX512-BF16 dot products of the bfloat16 key with the bfloat16 query qb; the
   query is bfloat16-valued whenever the cache is (plan_step rounds it), so both give the same sums
   up to float32 rounding. */
#define DOTS_FMA(VEC, W, LOAD, ZERO, FMA, LOADU)                                                               \
    VEC d[8];                                                                                                  \
    for (long g = 0; g < G; g++) d[g] = ZERO();                                                                \
    for (long i = 0; i < hs; i += W) {                                                                         \
        VEC kv = LOAD(k, row * hs + i, bf16);                                                                  \
        for (long g = 0; g < G; g++) d[g] = FMA(kv, LOADU(q + g * hs + i), d[g]);                              \
    }                                                                                                          \
    for (long g = 0; g < G; g++) p[g][j] = d[g];
#define DOTS_DP(VEC, W, LOAD, ZERO, FMA, LOADU)                                                                \
    VEC d[8];                                                                                                  \
    for (long g = 0; g < G; g++) d[g] = ZERO();                                                                \
    for (long i = 0; i < hs; i += 32) {                                                                        \
        __m512bh kv = (__m512bh)_mm512_loadu_si512((const void *)((const uint16_t *)k + row * hs + i));       \
        for (long g = 0; g < G; g++)                                                                           \
            d[g] = _mm512_dpbf16_ps(d[g], kv, (__m512bh)_mm512_loadu_si512((const void *)(qb + g * hs + i)));  \
    }                                                                                                          \
    for (long g = 0; g < G; g++) p[g][j] = d[g];

/* The same with vector intrinsics, for G <= 8 heads per group (a constant in each instance, so the
   accumulators stay in registers): scores W positions at a time (every head's partial products, then
   one sums tree per head), the softmax, then the weighted sum of values in one pass over the positions
   with CW vectors of hs per head held in registers (CW a constant too; hs a multiple of CW * W).
   One body, instantiated for AVX-512 (16 lanes; with BF16 dot products for bfloat16 caches where the
   CPU has them) and AVX2 (8 lanes; most laptops without AVX-512 take that path). */
#define PART_KERNEL(NAME, TARGET, VEC, W, LOAD, ZERO, FMA, LOADU, SET1, STORE, MUL, SUMS, RSUM, DOTS)            \
    TARGET static ALWAYS_INLINE void NAME(const float *q, const uint16_t *qb, const void *k, const void *v,      \
                                          int bf16, long s0, long s1, long hs, const long G, const long CW,    \
                                          float scale, float *sc, float *out, float *m, float *l) {             \
        long n = s1 - s0, s = s0;                                                                              \
        VEC p[8][W], acc[32];                                                                                  \
        (void)qb;                                                                                              \
        for (; s + W <= s1; s += W) {                                                                          \
            for (long j = 0; j < W; j++) {                                                                     \
                long row = s + j;                                                                              \
                DOTS(VEC, W, LOAD, ZERO, FMA, LOADU)                                                           \
            }                                                                                                  \
            for (long g = 0; g < G; g++) STORE(sc + g * n + (s - s0), MUL(SUMS(p[g]), SET1(scale)));           \
        }                                                                                                      \
        for (; s < s1; s++) {                                                                                  \
            long row = s, j = 0;                                                                               \
            DOTS(VEC, W, LOAD, ZERO, FMA, LOADU)                                                               \
            for (long g = 0; g < G; g++) sc[g * n + (s - s0)] = RSUM(p[g][0]) * scale;                         \
        }                                                                                                      \
        softmax_part(sc, n, G, m, l);                                                                          \
        for (long i0 = 0; i0 < hs; i0 += CW * W) {                                                             \
            for (long a = 0; a < G * CW; a++) acc[a] = ZERO();                                                 \
            for (long t = 0; t < n; t++) {                                                                     \
                VEC vv[4];                                                                                     \
                for (long c = 0; c < CW; c++) vv[c] = LOAD(v, (s0 + t) * hs + i0 + c * W, bf16);               \
                for (long g = 0; g < G; g++) {                                                                 \
                    VEC pg = SET1(sc[g * n + t]);                                                              \
                    for (long c = 0; c < CW; c++) acc[g * CW + c] = FMA(pg, vv[c], acc[g * CW + c]);           \
                }                                                                                              \
            }                                                                                                  \
            for (long g = 0; g < G; g++)                                                                       \
                for (long c = 0; c < CW; c++) STORE(out + g * hs + i0 + c * W, acc[g * CW + c]);              \
        }                                                                                                      \
    }
PART_KERNEL(part512_t, T512, __m512, 16, load16, _mm512_setzero_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
            _mm512_set1_ps, _mm512_storeu_ps, _mm512_mul_ps, sums16, _mm512_reduce_add_ps, DOTS_FMA)
PART_KERNEL(part512dp_t, T512BF, __m512, 16, load16, _mm512_setzero_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
            _mm512_set1_ps, _mm512_storeu_ps, _mm512_mul_ps, sums16, _mm512_reduce_add_ps, DOTS_DP)
PART_KERNEL(part256_t, T256, __m256, 8, load8, _mm256_setzero_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
            _mm256_set1_ps, _mm256_storeu_ps, _mm256_mul_ps, sums8, hsum256, DOTS_FMA)
#undef PART_KERNEL
#undef DOTS_FMA
#undef DOTS_DP

/* One instance per group size 1..8 and per values width: CW vectors of hs per pass where
   G * CW + CW accumulators and loads fit the registers (R of them) and divide hs, else one.
   Returns 0 when this path does not apply (hs not a multiple of the vector width, more than 8 heads). */
#define PART_CASE(FN, NG, R, WIDTH)                                                                            \
    case NG: {                                                                                                 \
        const long cw = (NG + 1) * 4 <= R ? 4 : (NG + 1) * 2 <= R ? 2 : 1;                                     \
        if (hs % (cw * WIDTH)) {                                                                               \
            if (bf16) FN(q, qb, k, v, 1, s0, s1, hs, NG, 1, scale, sc, out, m, l);                             \
            else FN(q, qb, k, v, 0, s0, s1, hs, NG, 1, scale, sc, out, m, l);                                  \
        } else if (bf16) FN(q, qb, k, v, 1, s0, s1, hs, NG, cw, scale, sc, out, m, l);                         \
        else FN(q, qb, k, v, 0, s0, s1, hs, NG, cw, scale, sc, out, m, l);                                     \
        return 1;                                                                                              \
    }
#define PART_DISPATCH(FN, WIDTH, R)                                                                            \
    if (hs % WIDTH) return 0;                                                                                  \
    switch (G) {                                                                                               \
        PART_CASE(FN, 1, R, WIDTH) PART_CASE(FN, 2, R, WIDTH) PART_CASE(FN, 3, R, WIDTH)                       \
        PART_CASE(FN, 4, R, WIDTH) PART_CASE(FN, 5, R, WIDTH) PART_CASE(FN, 6, R, WIDTH)                       \
        PART_CASE(FN, 7, R, WIDTH) PART_CASE(FN, 8, R, WIDTH)                                                  \
    default:                                                                                                   \
        return 0;                                                                                              \
    }

T256 static int attend_part256(const float *q, const void *k, const void *v, int bf16, long s0, long s1, long hs,
                               long G, float scale, float *sc, float *out, float *m, float *l) {
    const uint16_t *qb = NULL;
    PART_DISPATCH(part256_t, 8, 14)
}

T512 static int attend_part512(const float *q, const void *k, const void *v, int bf16, long s0, long s1, long hs,
                               long G, float scale, float *sc, float *out, float *m, float *l) {
    const uint16_t *qb = NULL;
    PART_DISPATCH(part512_t, 16, 28)
}

/* bfloat16 cache on AVX512-BF16: the keys meet the query (qb, bfloat16) in bfloat16 dot products */
T512BF static int attend_part512dp(const float *q, const uint16_t *qb, const void *k, const void *v, long s0, long s1,
                                   long hs, long G, float scale, float *sc, float *out, float *m, float *l) {
    if (hs % 32 || G > 8) return 0;
    const int bf16 = 1;
    PART_DISPATCH(part512dp_t, 16, 28)
}
#undef PART_DISPATCH
#undef PART_CASE

#endif

/* positions s0..s1 for every head: partial outputs po (B*nh, hs), pm, pl (B*nh) */
static void attend_range(const Attn *a, long s0, long s1, float *sc, float *po, float *pm, float *pl) {
    long G = a->nh / a->nkv;
    size_t esz = a->bf16 ? 2 : 4;
    for (long b = 0; b < a->B; b++)
        for (long g = 0; g < a->nkv; g++) {
            size_t off = (size_t)((b * a->nkv + g) * a->S_max) * (size_t)a->hs * esz;
            long h = b * a->nh + g * G;
#if HAVE_X86
            const char *kp = (const char *)a->k + off, *vp = (const char *)a->v + off;
            if (g_level == 3 && a->qb && attend_part512dp(a->q + h * a->hs, a->qb + h * a->hs, kp, vp, s0, s1, a->hs, G,
                                                         a->scale, sc, po + h * a->hs, pm + h, pl + h))
                continue;
            if (g_level >= 2 && attend_part512(a->q + h * a->hs, kp, vp, a->bf16, s0, s1, a->hs, G, a->scale, sc,
                                               po + h * a->hs, pm + h, pl + h))
                continue;
            if (g_level == 1 && attend_part256(a->q + h * a->hs, kp, vp, a->bf16, s0, s1, a->hs, G, a->scale, sc,
                                               po + h * a->hs, pm + h, pl + h))
                continue;
#endif
            attend_part(a->q + h * a->hs, (const char *)a->k + off, (const char *)a->v + off, a->bf16, s0, s1, a->hs,
                        G, a->scale, sc, po + h * a->hs, pm + h, pl + h);
        }
}

/* The positions are split across threads (every thread reads its share of the cache, whatever the
   number of heads), then the parts are merged: out = sum_t po_t e^(m_t - M) / sum_t l_t e^(m_t - M).
   scratch: attend_scratch() floats */
static size_t attend_scratch(long nh, long nkv, long hs, long S_cap, int threads) {
    return (size_t)threads * (up16((size_t)(nh / nkv) * (size_t)S_cap) + up16((size_t)nh * (size_t)(hs + 2)));
}

/* thread t's part of the scratch: scores (G, S), then (returned) po (H, hs), pm (H), pl (H); *scores
   gets where the scores start when not NULL */
static float *attend_part_out(const Attn *a, float *scratch, long t, float **scores) {
    size_t H = (size_t)(a->B * a->nh), sc = up16((size_t)(a->nh / a->nkv) * (size_t)a->S);
    float *part = scratch + (size_t)t * (sc + up16(H * (size_t)(a->hs + 2)));
    if (scores) *scores = part;
    return part + sc;
}

/* thread t of nt: its share of the positions, then (after every thread's) its share of the heads merged */
static void attend_thread(const Attn *a, float *scratch, long t, long nt) {
    long H = a->B * a->nh, hs = a->hs;
    float *sc, *po = attend_part_out(a, scratch, t, &sc);
    attend_range(a, a->S * t / nt, a->S * (t + 1) / nt, sc, po, po + H * hs, po + H * hs + H);
#ifdef _OPENMP
    if (nt > 1) {
        #pragma omp barrier
    }
#endif
    for (long h = H * t / nt; h < H * (t + 1) / nt; h++) {
        float M = -INFINITY, L = 0.f, w[64];
        for (long u = 0; u < nt; u++) {
            float mu = attend_part_out(a, scratch, u, NULL)[H * hs + h];
            M = mu > M ? mu : M;
        }
        for (long u = 0; u < nt; u++) {
            const float *pu = attend_part_out(a, scratch, u, NULL);
            w[u] = expf(pu[H * hs + h] - M);
            L += pu[H * hs + H + h] * w[u];
        }
        float *o = a->out + h * hs;
        for (long i = 0; i < hs; i++) o[i] = 0.f;
        for (long u = 0; u < nt; u++) {
            const float *pu = attend_part_out(a, scratch, u, NULL) + h * hs;
            float wu = w[u] / L;
            for (long i = 0; i < hs; i++) o[i] += pu[i] * wu;
        }
    }
}

static void attend_run(const Attn *a, float *scratch, int threads) {
#ifdef _OPENMP
    if (threads > 1 && a->S >= 32 * threads) {
        #pragma omp parallel num_threads(threads < 64 ? threads : 64)
        attend_thread(a, scratch, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#else
    (void)threads;
#endif
    attend_thread(a, scratch, 0, 1);
}

/* ---- the fused decode step: every layer of one token ------------------------------------------ */
typedef struct {
    const void *in_norm, *post_norm, *q_norm, *k_norm, *qkv_bias; /* activation dtype; NULL when absent */
    Lin qkv, o, gate_up, down;
} Layer;

typedef struct {
    long L, C, nh, nkv, hs, I; /* layers, hidden, heads, kv heads, head dim, intermediate */
    float eps;
    int bf16;                  /* activation (and cache, norm, bias, rope table, embedding) dtype */
    Layer *layers;
    const void *embed;         /* (rows, C) embedding table, activation dtype */
    long embed_rows;
    const void *final_norm;    /* (C,) */
    Lin head;                  /* (vocab, C) */
    void *raw;                 /* the scratch's allocation */
    float *buf;                /* scratch, sized in make_plan for S_cap positions and R rows (64-byte aligned) */
    size_t off[9];             /* where each of plan_layout's pieces starts in buf (floats) */
    long S_cap;
    long R;                    /* the most tokens one step takes (<= MAX_ROWS) */
    int threads;               /* the most threads the scratch is sized for */
} Plan;

static void rmsnorm(const float *x, const void *w, int bf16, float eps, long n, float *out) {
    float ss = 0.f;
    #pragma omp simd reduction(+ : ss)
    for (long i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.f / sqrtf(ss / (float)n + eps);
    for (long i = 0; i < n; i++) out[i] = x[i] * r * load_f(w, i, bf16);
}

/* act = silu(gate) * up for gu = [gate | up] (n each); sigmoid through e^-|g| so the vectorized
   exp_nonpos serves both signs (glibc's expf does not vectorize without -ffast-math) */
CLONES static void swiglu(const float *gu, long n, float *act) {
    #pragma omp simd
    for (long i = 0; i < n; i++) {
        float g = gu[i], e = exp_nonpos(-fabsf(g)), r = 1.f / (1.f + e);
        act[i] = g * (g >= 0.f ? r : e * r) * gu[n + i];
    }
}

static void swiglu_bf16(const uint16_t *gu, long n, uint16_t *act) {
#if HAVE_X86
    if (g_level == 3) {
        swiglu_bf16_512(gu, n, act);
        return;
    }
#endif
    for (long i = 0; i < n; i++) {
        float x = bf16_to_f32(gu[i]), e = exp_nonpos(-fabsf(x)), r = 1.f / (1.f + e);
        act[i] = f32_to_bf16(bf16_to_f32(f32_to_bf16(x * (x >= 0.f ? r : e * r))) * bf16_to_f32(gu[n + i]));
    }
}

/* silu(gate) * up over the rows of a prefill, gu (M, 2n) -> act (M, n): float32, or bfloat16 rounded as
   PyTorch's F.silu(gate) * up rounds (silu to bfloat16, then the product) */
static void swiglu_rows(const void *gu, void *act, long M, long n, int bf16, int threads) {
#if defined(_OPENMP)
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && M > 1)
#else
    (void)threads;
#endif
    for (long m = 0; m < M; m++) {
        if (!bf16) {
            swiglu((const float *)gu + m * 2 * n, n, (float *)act + m * n);
            continue;
        }
        swiglu_bf16((const uint16_t *)gu + m * 2 * n, n, (uint16_t *)act + m * n);
    }
}

static void rmsnorm_bf16(const uint16_t *x, const uint16_t *w, float eps, long n, uint16_t *out) {
#if HAVE_X86
    if (g_level == 3) {
        rmsnorm_bf16_512(x, w, eps, n, out);
        return;
    }
#endif
    float ss = 0.f;
    #pragma omp simd reduction(+ : ss)
    for (long i = 0; i < n; i++) ss += bf16_to_f32(x[i]) * bf16_to_f32(x[i]);
    float inv = 1.f / sqrtf(ss / (float)n + eps);
    #pragma omp simd
    for (long i = 0; i < n; i++) out[i] = f32_to_bf16(bf16_to_f32(x[i]) * inv * bf16_to_f32(w[i]));
}

/* RMSNorm over the rows of a bfloat16 prefill, x (M, n) -> out (M, n) with a bfloat16 weight: sums in
   float32, x * (1 / rms) * w rounded once to bfloat16, as F.rms_norm rounds (whose bfloat16 path took
   0.6-1.35 ms for 512 x 1536 on the Intel Xeon development VM, this 0.1) */
static void rmsnorm_rows_bf16(const uint16_t *x, const uint16_t *w, float eps, long M, long n, uint16_t *out,
                              int threads) {
#if defined(_OPENMP)
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && M > 1)
#else
    (void)threads;
#endif
    for (long m = 0; m < M; m++) rmsnorm_bf16(x + m * n, w, eps, n, out + m * n);
}

/* rotate-half rotary: out_i = x_i cos_i + x_{(i + hs/2) % hs} sin_i (sin signed, see model.apply_rope) */
static void rope(float *x, const void *cos, const void *sin, int bf16, long hs) {
    float tmp[1024];
    long h = hs / 2;
    for (long i = 0; i < hs; i++) tmp[i] = x[i];
    for (long i = 0; i < hs; i++) x[i] = tmp[i] * load_f(cos, i, bf16) + tmp[(i + h) % hs] * load_f(sin, i, bf16);
}

static void store_f(void *p, long i, float v, int bf16) {
    if (bf16) ((uint16_t *)p)[i] = f32_to_bf16(v);
    else ((float *)p)[i] = v;
}

static void plan_free(PyObject *capsule) {
    Plan *p = (Plan *)PyCapsule_GetPointer(capsule, "astrai.decode_plan");
    if (!p) return;
    free(p->layers);
    free(p->raw);
    free(p);
}

/* the step's scratch (floats): per row x, h (C), qkv, att, gate/up, act; row scales (16), attention,
   and the linears' rounded inputs (int16 or bytes, kmax values per row); each piece 64-byte aligned.
   Returns the total. */
static size_t plan_layout(Plan *p) {
    long C = p->C, nq = p->nh * p->hs, nk = p->nkv * p->hs, I = p->I, kmax = C > I ? C : I;
    kmax = kmax > nq ? kmax : nq;
    size_t R = (size_t)p->R;
    size_t len[9] = {R * (size_t)C, R * (size_t)C, R * (size_t)(nq + 2 * nk), R * (size_t)nq, R * (size_t)(2 * I),
                     R * (size_t)I, 16, attend_scratch(p->nh, p->nkv, p->hs, p->S_cap, p->threads),
                     (R * (size_t)kmax + 1) / 2};
    size_t total = 0;
    for (int i = 0; i < 9; i++) {
        p->off[i] = total;
        total += up16(len[i]);
    }
    return total;
}

static void run_linear(const Lin *l, const float *x, long M, int x_bf16, float *y, int16_t *xq, float *xs,
                       int threads) {
    Input in = {M, x, xq, xs, 0};
    in.dp = prepare_input(l->kind, x, M, l->K, x_bf16, xq, xs);
    lin_run(l, &in, y, NULL, threads);
}

/* tokens toks[0..T) at slots slot..slot+T-1 (rotary rows cos/sin of the first, the next ones following)
   through the embedding, every layer, the final norm and the head into logits (T, vocab) float32; the
   cache (L, 1, nkv, S_max, hs) gets their keys/values, and row t attends to slots 0..slot+t. Every
   weight row is read once for all T rows, and row t's logits are bit for bit those of T one-token steps
   (each row's work is the one-token step's, in the same order): a speculative draft is verified in one
   pass over the weights. */
static void plan_step(Plan *p, const long *toks, long T, const void *cos, const void *sin, void *kc, void *vc,
                      long slot, long S_max, int threads, float *logits) {
    long C = p->C, nq = p->nh * p->hs, nk = p->nkv * p->hs, W = nq + 2 * nk, I = p->I, hs = p->hs;
    float *x = p->buf + p->off[0], *h = p->buf + p->off[1], *qkv = p->buf + p->off[2], *att = p->buf + p->off[3];
    float *gu = p->buf + p->off[4], *act = p->buf + p->off[5], *xs = p->buf + p->off[6], *scores = p->buf + p->off[7];
    int16_t *xq = (int16_t *)(p->buf + p->off[8]);
    int bf16 = p->bf16;
    size_t esz = bf16 ? 2 : 4;
    for (long t = 0; t < T; t++) {
        const char *row = (const char *)p->embed + (size_t)toks[t] * (size_t)C * esz;
        for (long i = 0; i < C; i++) x[t * C + i] = load_f(row, i, bf16);
    }
    for (long l = 0; l < p->L; l++) {
        const Layer *ly = &p->layers[l];
        for (long t = 0; t < T; t++) rmsnorm(x + t * C, ly->in_norm, bf16, p->eps, C, h + t * C);
        run_linear(&ly->qkv, h, T, bf16, qkv, xq, xs, threads);
        size_t layer_off = (size_t)l * (size_t)p->nkv * (size_t)S_max * (size_t)hs;
        for (long t = 0; t < T; t++) {
            float *q = qkv + t * W, *k = q + nq, *v = k + nk;
            size_t rope_off = (size_t)t * (size_t)hs * esz;  /* this row's rotary position */
            const char *c = (const char *)cos + rope_off, *sn = (const char *)sin + rope_off;
            if (ly->qkv_bias)
                for (long i = 0; i < W; i++) q[i] += load_f(ly->qkv_bias, i, bf16);
            for (long hd = 0; hd < p->nh; hd++) {
                if (ly->q_norm) rmsnorm(q + hd * hs, ly->q_norm, bf16, p->eps, hs, q + hd * hs);
                rope(q + hd * hs, c, sn, bf16, hs);
            }
            for (long g = 0; g < p->nkv; g++) {
                if (ly->k_norm) rmsnorm(k + g * hs, ly->k_norm, bf16, p->eps, hs, k + g * hs);
                rope(k + g * hs, c, sn, bf16, hs);
                size_t off = layer_off + ((size_t)g * (size_t)S_max + (size_t)(slot + t)) * (size_t)hs;
                for (long i = 0; i < hs; i++) {
                    store_f((char *)kc + off * esz, i, k[g * hs + i], bf16);
                    store_f((char *)vc + off * esz, i, v[g * hs + i], bf16);
                }
            }
            uint16_t *qb = NULL;  /* the query in bfloat16, in xq (free between the q/k/v and output linears) */
            if (bf16) {  /* the cache holds bf16: the query meets keys rounded as PyTorch's path rounds them */
                qb = (uint16_t *)xq;
                for (long i = 0; i < nq; i++) {
                    qb[i] = f32_to_bf16(q[i]);
                    q[i] = bf16_to_f32(qb[i]);
                }
            }
            Attn a = {q, (char *)kc + layer_off * esz, (char *)vc + layer_off * esz, att + t * nq, bf16,
                      1, p->nh, p->nkv, slot + t + 1, S_max, hs, 1.f / sqrtf((float)hs), qb};
            attend_run(&a, scores, threads);
        }
        run_linear(&ly->o, att, T, bf16, h, xq, xs, threads);
        for (long i = 0; i < T * C; i++) x[i] += h[i];
        for (long t = 0; t < T; t++) rmsnorm(x + t * C, ly->post_norm, bf16, p->eps, C, h + t * C);
        run_linear(&ly->gate_up, h, T, bf16, gu, xq, xs, threads);
        for (long t = 0; t < T; t++) swiglu(gu + t * 2 * I, I, act + t * I);
        run_linear(&ly->down, act, T, bf16, h, xq, xs, threads);
        for (long i = 0; i < T * C; i++) x[i] += h[i];
    }
    if (bf16)  /* the model's forward hands a bfloat16 stream to the final norm, and its output to the head */
        for (long i = 0; i < T * C; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    for (long t = 0; t < T; t++) rmsnorm(x + t * C, p->final_norm, bf16, p->eps, C, h + t * C);
    if (bf16)
        for (long i = 0; i < T * C; i++) h[i] = bf16_to_f32(f32_to_bf16(h[i]));
    run_linear(&p->head, h, T, bf16, logits, xq, xs, threads);
}

/* ---- argmax of a row of logits ---------------------------------------------------------------- */
/* Greedy decoding's choice, the one tensor op left between two tokens: torch.argmax walks 49k float32
   logits at ~1 element per ns, and right after a token has streamed the weights through the caches it
   runs ~3x slower than that. Same answer as torch.argmax: the first of equal maxima; the first NaN if
   there is one. Two passes over x (it is in cache): the maximum (vectorized, as softmax_part's), then
   its first position. */
CLONES static long argmax_f32(const float *x, long n) {
    float best = -INFINITY;
    int nan = 0;
    #pragma omp simd reduction(max : best) reduction(| : nan)
    for (long i = 0; i < n; i++) {
        best = x[i] > best ? x[i] : best;
        nan |= x[i] != x[i];
    }
    long i = 0;
    if (nan)
        while (x[i] == x[i]) i++;
    else
        while (x[i] != best) i++;
    return i;
}

/* ---- sampling a token from a row of logits ------------------------------------------------------ */
/* The choice astrai_core/generation/sampling.py's torch functions make (the reference and the fallback):
   repetition penalty, temperature, top-k, top-p, then one uniform u in [0, 1) against the cumulative
   probabilities, in one call. Between two tokens each torch op runs with the caches cold from the weights
   just streamed: the ~20 ops of a top-p draw took ~1 ms per SmolLM2 token that way. The GIL is held
   throughout, so one pair of scratch buffers (grown to the largest vocabulary seen) serves every caller. */
typedef struct { float w; int32_t id; } Cand;

static float *g_w;     /* the row as e^(z - max z) */
static Cand *g_cand;   /* the top candidates */
static long g_cap;

static int cand_desc(const void *a, const void *b) {  /* largest weight first, then the lower id */
    const Cand *x = (const Cand *)a, *y = (const Cand *)b;
    if (x->w != y->w) return x->w < y->w ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

CLONES static double row_sum(const float *w, long n) {
    double s = 0.;
    #pragma omp simd reduction(+ : s)
    for (long i = 0; i < n; i++) s += w[i];
    return s;
}

/* the first token of w[0, n) whose cumulative weight passes u * the total (whole blocks of 64 skipped by
   their sums); where rounding leaves u * total at the total, the last token with weight. A zero weight
   is never picked. */
static long pick_row(const float *w, long n, double u) {
    double t = u * row_sum(w, n), cum = 0.;
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        double b = row_sum(w + i, 64);
        if (cum + b > t) break;
        cum += b;
    }
    for (; i < n; i++)
        if ((cum += w[i]) > t && w[i] > 0.f) return i;
    for (i = n - 1; i > 0 && !(w[i] > 0.f); i--) {}
    return i;
}

/* the same over candidates c[0, n) in their order */
static long pick_cand(const Cand *c, long n, double u) {
    double total = 0., cum = 0.;
    for (long i = 0; i < n; i++) total += c[i].w;
    double t = u * total;
    for (long i = 0; i < n; i++)
        if ((cum += c[i].w) > t && c[i].w > 0.f) return c[i].id;
    long i = n - 1;
    while (i > 0 && !(c[i].w > 0.f)) i--;
    return c[i].id;
}

CLONES static void scale_row(float *w, long n, float t) {
    #pragma omp simd
    for (long i = 0; i < n; i++) w[i] /= t;
}

CLONES static void flush_tiny(float *w, long n) {  /* exp_nonpos stops at e^-87: a -inf logit must weigh nothing */
    #pragma omp simd
    for (long i = 0; i < n; i++) w[i] = w[i] < 1e-37f ? 0.f : w[i];
}

/* x: n logits; prev: n_prev ids seen so far (the penalty applies once per id) */
static long sample_row(const float *x, long n, const int64_t *prev, long n_prev, float penalty, float temperature,
                       long top_k, float top_p, double u) {
    float *w = g_w, mx, sum;
    memcpy(w, x, (size_t)n * sizeof(float));
    for (long j = 0; j < n_prev; j++) {  /* from the input's value: an id seen twice is penalized once */
        float v = x[prev[j]];
        w[prev[j]] = v > 0.f ? v / penalty : v * penalty;
    }
    if (temperature <= 0.f) return argmax_f32(w, n);
    scale_row(w, n, temperature > 1e-5f ? temperature : 1e-5f);
    softmax_part(w, n, 1, &mx, &sum);
    flush_tiny(w, n);
    if (top_k <= 0 && top_p >= 1.f) return pick_row(w, n, u);
    long k = top_k > 0 && top_k < n ? top_k : n, c;
    double total = row_sum(w, n);
    /* candidates: every token within a factor `cut` of the largest (e^-8, widened by squaring), until they
       hold the top k, or (no top-k) at least the mass top-p needs: both are a prefix of the sorted vocabulary */
    for (float cut = 3.3546e-4f;; cut = cut > 1e-30f ? cut * cut : 0.f) {
        double mass = 0.;
        c = 0;
        for (long i = 0; i < n; i++)
            if (w[i] >= cut && w[i] > 0.f) {
                g_cand[c].w = w[i];
                g_cand[c++].id = (int32_t)i;
                mass += w[i];
            }
        if (cut == 0.f || (top_k > 0 ? c >= k : mass >= (double)top_p * total)) break;
    }
    qsort(g_cand, (size_t)c, sizeof(Cand), cand_desc);
    if (c > k) c = k;
    if (top_p < 1.f) {  /* the nucleus, over the probabilities renormalized to the top-k when there is one */
        double base = 0., cum = 0.;
        if (top_k > 0) for (long i = 0; i < c; i++) base += g_cand[i].w;
        else base = total;
        long keep = 0;
        while (keep < c && cum < (double)top_p * base) cum += g_cand[keep++].w;
        c = keep;
    }
    return pick_cand(g_cand, c, u);
}

/* ---- prefill attention: T new queries of a batch of one over the cache, causally -----------------
   Query t (position start + t) sees keys 0 .. start + t. Flash-style (the scores of a block of rows
   never leave the cache): for each key/value head, blocks of PA_ROWS query rows (PA_ROWS / G
   positions x the G heads of the group) meet the keys PA_KB at a time, with a running softmax in
   float32. bfloat16 (AVX512-BF16): scores and values in bfloat16 dot products, the weights rounded to
   bfloat16 for the values' products (as PyTorch's CPU flash attention does); keys repacked as
   (block, hs/2, PA_KB, 2) and values as (block, PA_KB/2, hs, 2), so both products are one broadcast
   and four dpbf16 per pair of elements. float32 (AVX-512): FMAs, keys repacked as (block, hs, PA_KB),
   values as they are. hs a multiple of 64; elsewhere PyTorch's SDPA runs. */
#define PA_KB 64
#define PA_ROWS 48
#define PA_RT 6 /* rows per register tile */

typedef struct {
    const void *q;     /* (T, nh, hs) */
    const void *k, *v; /* (nkv, S_max, hs) */
    void *out;         /* (T, nh, hs) */
    long T, start, nh, nkv, hs, S_max;
    float scale;
    int f32;           /* float32 tensors, else bfloat16 */
} PAttn;

#if HAVE_X86
/* keys and values of head h, block b (keys b*PA_KB ..) in the product layouts; zeros past n keys */
static ALWAYS_INLINE void pa_pack_t(const PAttn *a, long h, long b, long n, void *kt, void *vp, const int f32) {
    long hs = a->hs;
    size_t off = (size_t)h * (size_t)(a->S_max * hs);
    for (long j = 0; j < PA_KB; j++) {
        long s = b * PA_KB + j;
        for (long d = 0; d < hs; d++) {
            if (f32) {
                const float *k = (const float *)a->k + off, *v = (const float *)a->v + off;
                ((float *)kt)[d * PA_KB + j] = s < n ? k[s * hs + d] : 0.f;
                ((float *)vp)[j * hs + d] = s < n ? v[s * hs + d] : 0.f;
            } else {
                const uint16_t *k = (const uint16_t *)a->k + off, *v = (const uint16_t *)a->v + off;
                ((uint16_t *)kt)[((d >> 1) * PA_KB + j) * 2 + (d & 1)] = s < n ? k[s * hs + d] : 0;
                ((uint16_t *)vp)[((j >> 1) * hs + d) * 2 + (j & 1)] = s < n ? v[s * hs + d] : 0;
            }
        }
    }
}

/* scores s (PA_RT, PA_KB) of the rows at qr against one key block kt */
T512BF static void pa_scores_bf(const void *const *qr, const uint16_t *kt, long hs, float *s) {
    __m512 acc[PA_RT][4];
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (long d = 0; d < hs / 2; d++) {
        __m512bh kk[4];
        for (int c = 0; c < 4; c++) kk[c] = (__m512bh)_mm512_loadu_si512((const void *)(kt + (d * PA_KB + 16 * c) * 2));
        for (int r = 0; r < PA_RT; r++) {
            int32_t pair;
            memcpy(&pair, (const uint16_t *)qr[r] + 2 * d, 4);
            __m512bh qq = (__m512bh)_mm512_set1_epi32(pair);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], qq, kk[c]);
        }
    }
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(s + r * PA_KB + 16 * c, acc[r][c]);
}

T512 static void pa_scores_f32(const void *const *qr, const float *kt, long hs, float *s) {
    __m512 acc[PA_RT][4];
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    for (long d = 0; d < hs; d++) {
        __m512 kk[4];
        for (int c = 0; c < 4; c++) kk[c] = _mm512_loadu_ps(kt + d * PA_KB + 16 * c);
        for (int r = 0; r < PA_RT; r++) {
            __m512 qq = _mm512_set1_ps(((const float *)qr[r])[d]);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(qq, kk[c], acc[r][c]);
        }
    }
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(s + r * PA_KB + 16 * c, acc[r][c]);
}

/* o (PA_RT rows of stride hs, columns c0 .. c0+63) = o * alpha + p (PA_RT, PA_KB) @ values block vp */
T512BF static void pa_values_bf(const void *p, const uint16_t *vp, long hs, long c0, const float *alpha,
                                             float *o) {
    __m512 acc[PA_RT][4];
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++)
            acc[r][c] = _mm512_mul_ps(_mm512_loadu_ps(o + r * hs + c0 + 16 * c), _mm512_set1_ps(alpha[r]));
    for (long j = 0; j < PA_KB / 2; j++) {
        __m512bh vv[4];
        for (int c = 0; c < 4; c++) vv[c] = (__m512bh)_mm512_loadu_si512((const void *)(vp + (j * hs + c0 + 16 * c) * 2));
        for (int r = 0; r < PA_RT; r++) {
            int32_t pair;
            memcpy(&pair, (const uint16_t *)p + r * PA_KB + 2 * j, 4);
            __m512bh pp = (__m512bh)_mm512_set1_epi32(pair);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pp, vv[c]);
        }
    }
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + r * hs + c0 + 16 * c, acc[r][c]);
}

T512 static void pa_values_f32(const void *p, const float *vp, long hs, long c0, const float *alpha,
                                            float *o) {
    __m512 acc[PA_RT][4];
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++)
            acc[r][c] = _mm512_mul_ps(_mm512_loadu_ps(o + r * hs + c0 + 16 * c), _mm512_set1_ps(alpha[r]));
    for (long j = 0; j < PA_KB; j++) {
        __m512 vv[4];
        for (int c = 0; c < 4; c++) vv[c] = _mm512_loadu_ps(vp + j * hs + c0 + 16 * c);
        for (int r = 0; r < PA_RT; r++) {
            __m512 pp = _mm512_set1_ps(((const float *)p)[r * PA_KB + j]);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(pp, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < PA_RT; r++)
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + r * hs + c0 + 16 * c, acc[r][c]);
}

/* one block of query rows of head group h: positions t0 .. t0+nt, nr = nt * G rows (row r is position
   t0 + r / G, head h*G + r % G). Scratch: s, o floats and p (floats, or bfloat16 in their first half) */
static ALWAYS_INLINE void pa_block_t(const PAttn *a, const void *kt, const void *vp, long h, long t0, long nt,
                                     float *s, float *p, float *o, const int f32) {
    long hs = a->hs, G = a->nh / a->nkv, nr = nt * G, R = (nr + PA_RT - 1) / PA_RT * PA_RT;
    size_t es = f32 ? 4 : 2, kb_bytes = (size_t)PA_KB * (size_t)hs * es;
    long kend = a->start + t0 + nt; /* keys the last position sees */
    float m[PA_ROWS + PA_RT], l[PA_ROWS + PA_RT], alpha[PA_ROWS + PA_RT];
    const void *qr[PA_ROWS + PA_RT];
    long pos[PA_ROWS + PA_RT];
    for (long r = 0; r < R; r++) {
        long rr = r < nr ? r : 0; /* padding rows repeat row 0; their results are dropped */
        qr[r] = (const char *)a->q + ((size_t)(t0 + rr / G) * (size_t)a->nh + (size_t)(h * G + rr % G)) * (size_t)hs * es;
        pos[r] = a->start + t0 + rr / G;
        m[r] = -INFINITY;
        l[r] = 0.f;
    }
    memset(o, 0, (size_t)(R * hs) * sizeof(float));
    for (long b = 0; b * PA_KB < kend; b++) {
        const char *ktb = (const char *)kt + (size_t)b * kb_bytes, *vpb = (const char *)vp + (size_t)b * kb_bytes;
        for (long r = 0; r < R; r += PA_RT) {
            if (f32) pa_scores_f32(qr + r, (const float *)ktb, hs, s + r * PA_KB);
            else pa_scores_bf(qr + r, (const uint16_t *)ktb, hs, s + r * PA_KB);
        }
        for (long r = 0; r < R; r++) {
            float *sr = s + r * PA_KB, mx = m[r];
            long valid = pos[r] - b * PA_KB + 1; /* keys of this block the row sees */
            if (valid > PA_KB) valid = PA_KB;
            for (long j = 0; j < PA_KB; j++) {
                sr[j] = j < valid ? sr[j] * a->scale : -INFINITY;
                mx = sr[j] > mx ? sr[j] : mx;
            }
            float sum = 0.f, *pf = p + r * PA_KB;
            uint16_t *pb = (uint16_t *)p + r * PA_KB;
            #pragma omp simd reduction(+ : sum)
            for (long j = 0; j < PA_KB; j++) {
                float e = exp_nonpos(sr[j] - mx);
                e = sr[j] == -INFINITY ? 0.f : e;
                if (f32) {
                    pf[j] = e;
                } else {
                    uint32_t u;
                    memcpy(&u, &e, 4);
                    pb[j] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
                }
                sum += e;
            }
            alpha[r] = m[r] == -INFINITY ? 0.f : exp_nonpos(m[r] - mx);
            l[r] = l[r] * alpha[r] + sum;
            m[r] = mx;
        }
        for (long r = 0; r < R; r += PA_RT)
            for (long c0 = 0; c0 < hs; c0 += 64) {
                if (f32) pa_values_f32(p + r * PA_KB, (const float *)vpb, hs, c0, alpha + r, o + r * hs);
                else pa_values_bf((const uint16_t *)p + r * PA_KB, (const uint16_t *)vpb, hs, c0, alpha + r, o + r * hs);
            }
    }
    for (long r = 0; r < nr; r++) {
        size_t at = ((size_t)(t0 + r / G) * (size_t)a->nh + (size_t)(h * G + r % G)) * (size_t)hs;
        float inv = 1.f / l[r];
        for (long d = 0; d < hs; d++) {
            if (f32) ((float *)a->out)[at + d] = o[r * hs + d] * inv;
            else ((uint16_t *)a->out)[at + d] = f32_to_bf16(o[r * hs + d] * inv);
        }
    }
}

T512BF static void pa_pack_bf(const PAttn *a, long h, long b, long n, void *kt, void *vp) { pa_pack_t(a, h, b, n, kt, vp, 0); }
T512 static void pa_pack_f32(const PAttn *a, long h, long b, long n, void *kt, void *vp) { pa_pack_t(a, h, b, n, kt, vp, 1); }
T512BF static void pa_block_bf(const PAttn *a, const void *kt, const void *vp, long h, long t0, long nt, float *s,
                               float *p, float *o) {
    pa_block_t(a, kt, vp, h, t0, nt, s, p, o, 0);
}
T512 static void pa_block_f32(const PAttn *a, const void *kt, const void *vp, long h, long t0, long nt, float *s,
                              float *p, float *o) {
    pa_block_t(a, kt, vp, h, t0, nt, s, p, o, 1);
}

/* the whole prefill attention; 0 when this path does not apply or memory ran out */
static int pa_run(const PAttn *a, int threads) {
    long G = a->nh / a->nkv, hs = a->hs, n = a->start + a->T;
    if (g_level < (a->f32 ? 2 : 3) || hs % 64 || hs > 512 || G < 1 || G > PA_ROWS || a->nh % a->nkv) return 0;
    long nb = (n + PA_KB - 1) / PA_KB, per = PA_ROWS / G; /* positions per block of rows */
    long nq = (a->T + per - 1) / per;
    size_t kb_bytes = (size_t)PA_KB * (size_t)hs * (a->f32 ? 4 : 2), head_bytes = (size_t)nb * kb_bytes;
    size_t tile = (size_t)(PA_ROWS + PA_RT) * (2 * PA_KB + (size_t)hs); /* floats: s, p, o */
    if (threads < 1) threads = 1;
    char *packed = malloc(2 * (size_t)a->nkv * head_bytes);
    float *scratch = malloc((size_t)threads * tile * sizeof(float));
    if (!packed || !scratch) {
        free(packed);
        free(scratch);
        return 0;
    }
    char *kt = packed, *vp = packed + (size_t)a->nkv * head_bytes;
    #pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num();
#else
        int t = 0;
#endif
        float *s = scratch + (size_t)t * tile, *p = s + (size_t)(PA_ROWS + PA_RT) * PA_KB;
        float *o = p + (size_t)(PA_ROWS + PA_RT) * PA_KB;
        #pragma omp for schedule(static)
        for (long i = 0; i < a->nkv * nb; i++) {
            if (a->f32) pa_pack_f32(a, i / nb, i % nb, n, kt + (size_t)i * kb_bytes, vp + (size_t)i * kb_bytes);
            else pa_pack_bf(a, i / nb, i % nb, n, kt + (size_t)i * kb_bytes, vp + (size_t)i * kb_bytes);
        }
        /* the last blocks of positions see the most keys: hand them out first */
        #pragma omp for schedule(dynamic, 1)
        for (long i = 0; i < a->nkv * nq; i++) {
            long h = i % a->nkv, qb = nq - 1 - i / a->nkv, t0 = qb * per;
            long nt = a->T - t0 < per ? a->T - t0 : per;
            if (a->f32) pa_block_f32(a, kt + (size_t)h * head_bytes, vp + (size_t)h * head_bytes, h, t0, nt, s, p, o);
            else pa_block_bf(a, kt + (size_t)h * head_bytes, vp + (size_t)h * head_bytes, h, t0, nt, s, p, o);
        }
    }
    free(packed);
    free(scratch);
    return 1;
}
#else
static int pa_run(const PAttn *a, int threads) {
    (void)a;
    (void)threads;
    return 0;
}
#endif

/* ---- Python glue ------------------------------------------------------------------------------ */
static int as_ptr(PyObject *o, void **p) {
    *p = PyLong_AsVoidPtr(o);
    return !(*p == NULL && PyErr_Occurred());
}

static int need_level(void) {
    if (g_level > 0) return 1;
    PyErr_SetString(PyExc_RuntimeError, "no vector path for this CPU");
    return 0;
}

/* attend_prefill(q, k, v, out, f32, T, start, nh, nkv, hs, S_max, scale, threads) -> bool (False: this
   CPU or shape has no kernel, use SDPA); pointers are ints, every tensor contiguous, float32 (f32) or
   bfloat16 */
static PyObject *attend_prefill(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "attend_prefill takes 13 arguments");
        return NULL;
    }
    void *q, *k, *v, *out;
    if (!as_ptr(args[0], &q) || !as_ptr(args[1], &k) || !as_ptr(args[2], &v) || !as_ptr(args[3], &out)) return NULL;
    PAttn a = {q, k, v, out, PyLong_AsLong(args[5]), PyLong_AsLong(args[6]), PyLong_AsLong(args[7]),
               PyLong_AsLong(args[8]), PyLong_AsLong(args[9]), PyLong_AsLong(args[10]), (float)PyFloat_AsDouble(args[11]),
               PyObject_IsTrue(args[4])};
    int threads = (int)PyLong_AsLong(args[12]);
    if (PyErr_Occurred()) return NULL;
    if (a.T < 1 || a.start < 0 || a.nkv < 1 || a.nh < 1 || a.start + a.T > a.S_max) {
        PyErr_Format(PyExc_ValueError, "attend_prefill: bad shape T=%ld start=%ld S_max=%ld", a.T, a.start, a.S_max);
        return NULL;
    }
    int done;
    Py_BEGIN_ALLOW_THREADS
    done = pa_run(&a, threads);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(done);
}

/* swiglu(gu, act, M, n, threads) -> None: act (M, n) = silu(gate) * up of gu (M, 2n) = [gate | up],
   both contiguous float32; pointers are ints */
static PyObject *swiglu_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "swiglu takes 6 arguments");
        return NULL;
    }
    void *gu, *act;
    if (!as_ptr(args[0], &gu) || !as_ptr(args[1], &act)) return NULL;
    long M = PyLong_AsLong(args[2]), n = PyLong_AsLong(args[3]);
    int bf16 = PyObject_IsTrue(args[4]), threads = (int)PyLong_AsLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (M < 0 || n < 0) {
        PyErr_Format(PyExc_ValueError, "swiglu: bad shape M=%ld n=%ld", M, n);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    swiglu_rows(gu, act, M, n, bf16, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *rmsnorm_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "rmsnorm takes 7 arguments");
        return NULL;
    }
    void *x, *w, *out;
    if (!as_ptr(args[0], &x) || !as_ptr(args[1], &w) || !as_ptr(args[2], &out)) return NULL;
    long M = PyLong_AsLong(args[3]), n = PyLong_AsLong(args[4]);
    double eps = PyFloat_AsDouble(args[5]);
    int threads = (int)PyLong_AsLong(args[6]);
    if (PyErr_Occurred()) return NULL;
    if (M < 0 || n <= 0) {
        PyErr_Format(PyExc_ValueError, "rmsnorm: bad shape M=%ld n=%ld", M, n);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rmsnorm_rows_bf16((const uint16_t *)x, (const uint16_t *)w, (float)eps, M, n, (uint16_t *)out, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* matvec(kind, w, scale, x, x_bf16, y, y_bf16, M, N, K, threads) -> None; pointers are ints */
static PyObject *matvec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "matvec takes 11 arguments");
        return NULL;
    }
    Lin l;
    void *w, *scale, *x, *y;
    l.kind = (int)PyLong_AsLong(args[0]);
    if (!as_ptr(args[1], &w) || !as_ptr(args[2], &scale) || !as_ptr(args[3], &x) || !as_ptr(args[5], &y)) return NULL;
    int x_bf16 = PyObject_IsTrue(args[4]), y_bf16 = PyObject_IsTrue(args[6]);
    long M = PyLong_AsLong(args[7]);
    l.N = PyLong_AsLong(args[8]);
    l.K = PyLong_AsLong(args[9]);
    int threads = (int)PyLong_AsLong(args[10]);
    if (PyErr_Occurred() || !need_level()) return NULL;
    if (M < 1 || M > MAX_ROWS || l.N < 1 || l.K < 32 || l.K % 32 || l.kind < W_BF16 || l.kind > W_PBF16 ||
        (l.kind == W_PBF16 && (l.K % 64 || l.K > PACKED_MAX_K))) {
        PyErr_Format(PyExc_ValueError, "matvec: unsupported shape M=%ld N=%ld K=%ld kind=%d", M, l.N, l.K, l.kind);
        return NULL;
    }
    l.w = w;
    l.scale = (const float *)scale;
    size_t mk = (size_t)M * (size_t)l.K;  /* K % 32 == 0: every row of xf and xq starts 64-byte aligned */
    void *raw = malloc((up16(mk) + 16 + up16((mk + 1) / 2)) * sizeof(float) + 64);
    if (!raw) return PyErr_NoMemory();
    float *xf = (float *)align64(raw), *xs = xf + up16(mk);
    int16_t *xq = (int16_t *)(xs + 16);
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < mk; i++) xf[i] = load_f(x, (long)i, x_bf16);
    Input in = {M, xf, xq, xs, 0};
    in.dp = prepare_input(l.kind, xf, M, l.K, x_bf16, xq, xs);
    lin_run(&l, &in, y_bf16 ? NULL : (float *)y, y_bf16 ? (uint16_t *)y : NULL, threads);
    Py_END_ALLOW_THREADS
    free(raw);
    Py_RETURN_NONE;
}

/* dequant(w, scales, out, out_bf16, N, K, threads): out (N, K) = w (int8) * scales[n] per row, in
   float32 or bfloat16 (round to nearest even): the weight for a prefill GEMM, scale folded in */
CLONES static void dequant_rows(const int8_t *w, const float *sc, void *out, int bf16, long n0, long n1, long K) {
    for (long n = n0; n < n1; n++) {
        const int8_t *r = w + n * K;
        float s = sc[n];
        if (bf16) {
            uint16_t *o = (uint16_t *)out + n * K;
            #pragma omp simd
            for (long k = 0; k < K; k++) {
                float f = (float)r[k] * s;
                uint32_t u;
                memcpy(&u, &f, 4);
                o[k] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* finite: no NaN case */
            }
        } else {
            float *o = (float *)out + n * K;
            #pragma omp simd
            for (long k = 0; k < K; k++) o[k] = (float)r[k] * s;
        }
    }
}

static PyObject *dequant(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "dequant takes 7 arguments");
        return NULL;
    }
    void *w, *sc, *out;
    if (!as_ptr(args[0], &w) || !as_ptr(args[1], &sc) || !as_ptr(args[2], &out)) return NULL;
    int bf16 = PyObject_IsTrue(args[3]);
    long N = PyLong_AsLong(args[4]), K = PyLong_AsLong(args[5]);
    int threads = (int)PyLong_AsLong(args[6]);
    if (PyErr_Occurred()) return NULL;
    if (!w || !sc || !out || N < 1 || K < 1) {
        PyErr_SetString(PyExc_ValueError, "dequant: empty weight or null pointer");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
    #pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        long t = omp_get_thread_num(), T = omp_get_num_threads();
        dequant_rows((const int8_t *)w, (const float *)sc, out, bf16, N * t / T, N * (t + 1) / T, K);
    }
#else
    (void)threads;
    dequant_rows((const int8_t *)w, (const float *)sc, out, bf16, 0, N, K);
#endif
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* ---- packing bfloat16 weights (the layout above packed_parts) ---------------------------------- */
/* the high bytes' table of w (nk weights): the 15 most frequent nonzero high bytes (ties: the lower
   byte) by frequency, then 0; fewer than 15 values leave 0 in the unused entries. Returns the escapes. */
static long pack_table(const uint16_t *w, size_t nk, uint8_t high[16], int threads) {
    size_t hist[4][256] = {{0}};
    long blocks = (long)(nk / 4);
#ifdef _OPENMP
    #pragma omp parallel num_threads(threads > 0 ? threads : 1)
#endif
    {
        size_t h[4][256] = {{0}};  /* four counters break the chain of increments to one bin */
#ifdef _OPENMP
        #pragma omp for schedule(static)
#endif
        for (long b = 0; b < blocks; b++) {
            const uint16_t *q = w + 4 * (size_t)b;
            h[0][q[0] >> 8]++; h[1][q[1] >> 8]++; h[2][q[2] >> 8]++; h[3][q[3] >> 8]++;
        }
#ifdef _OPENMP
        #pragma omp critical
#endif
        for (int v = 0; v < 256; v++) hist[0][v] += h[0][v] + h[1][v] + h[2][v] + h[3][v];
    }
    for (size_t i = 4 * (size_t)blocks; i < nk; i++) hist[0][w[i] >> 8]++;
    (void)threads;
    hist[0][0] = 0;  /* high byte 0 is code 15's */
    long E = 0;
    for (int c = 0; c < 16; c++) {
        int best = 0;
        for (int b = 1; b < 256; b++) best = hist[0][b] > hist[0][best] ? b : best;
        high[c] = c < 15 ? (uint8_t)best : 0;
        if (c < 15) hist[0][best] = 0;
    }
    for (int b = 1; b < 256; b++) E += (long)hist[0][b];
    return E;
}

/* code[b]: the code of high byte b, 255 for an escape */
static void pack_codes(const uint8_t high[16], uint8_t code[256]) {
    memset(code, 255, 256);
    for (int c = 0; c < 15; c++)
        if (high[c]) code[high[c]] = (uint8_t)c;
    code[0] = 15;
}

#if HAVE_X86
/* one row's low bytes and codes (escapes: low byte 0, code 15), 64 weights at a time: packus puts the
   words' low (high) bytes of weights 0-31 and 32-63 in packed_index order, and the codes come from a
   256-entry byte lookup (two 128-entry VBMI lookups, picked by the top bit). Returns the row's escapes. */
T512VB static int32_t pack_row_512(const uint16_t *r, long K, const uint8_t code[256], uint8_t *l, uint8_t *c) {
    __m512i t0 = _mm512_loadu_si512((const void *)code), t1 = _mm512_loadu_si512((const void *)(code + 64));
    __m512i t2 = _mm512_loadu_si512((const void *)(code + 128)), t3 = _mm512_loadu_si512((const void *)(code + 192));
    __m512i low = _mm512_set1_epi16(0xFF), nib = _mm512_set1_epi8(15), none = _mm512_set1_epi8(-1);
    int32_t esc = 0;
    for (long k = 0; k < K; k += 64) {
        __m512i w0 = _mm512_loadu_si512((const void *)(r + k)), w1 = _mm512_loadu_si512((const void *)(r + k + 32));
        __m512i lv = _mm512_packus_epi16(_mm512_and_si512(w0, low), _mm512_and_si512(w1, low));
        __m512i hv = _mm512_packus_epi16(_mm512_srli_epi16(w0, 8), _mm512_srli_epi16(w1, 8));
        __m512i cv = _mm512_mask_blend_epi8(_mm512_movepi8_mask(hv), _mm512_permutex2var_epi8(t0, hv, t1),
                                            _mm512_permutex2var_epi8(t2, hv, t3));
        __mmask64 e = _mm512_cmpeq_epi8_mask(cv, none);
        esc += (int32_t)__builtin_popcountll(e);
        _mm512_storeu_si512((void *)(l + k), _mm512_maskz_mov_epi8(~e, lv));
        cv = _mm512_and_si512(cv, nib);
        __m256i lo = _mm512_castsi512_si256(cv), hi = _mm512_extracti64x4_epi64(cv, 1);
        _mm256_storeu_si256((__m256i *)(c + k / 2), _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
    }
    return esc;
}
#endif

static int pack_args(PyObject *const *args, void **w, long *N, long *K) {
    if (!as_ptr(args[0], w)) return 0;
    *N = PyLong_AsLong(args[1]);
    *K = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return 0;
    if (!*w || *N < 1 || *K < 64 || *K % 64 || *K > PACKED_MAX_K || (double)*N * (double)*K > 2e9) {
        PyErr_Format(PyExc_ValueError, "pack: unsupported bfloat16 matrix (%ld, %ld): K must be a multiple of 64 "
                     "up to %d", *N, *K, PACKED_MAX_K);
        return 0;
    }
    return 1;
}

/* packed_size(w, N, K, threads) -> (bytes, escapes, table): what pack(w, ...) needs, how many weights it
   lists apart, and its table of high bytes (16 bytes, pack's argument) */
static PyObject *packed_size_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *w;
    long N, K, E;
    uint8_t high[16];
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "packed_size takes 4 arguments");
        return NULL;
    }
    if (!pack_args(args, &w, &N, &K)) return NULL;
    int threads = (int)PyLong_AsLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    Py_BEGIN_ALLOW_THREADS
    E = pack_table((const uint16_t *)w, (size_t)N * (size_t)K, high, threads);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(nly#)", (Py_ssize_t)packed_size(N, K, E), E, (const char *)high, (Py_ssize_t)16);
}

/* pack(w, N, K, table, out, threads): w (N, K) bfloat16 into out (packed_size's bytes, 64-byte aligned),
   under packed_size's table. Needs the vector path (VBMI). */
static PyObject *pack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *w, *out;
    long N, K;
    char *table;
    Py_ssize_t tlen;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "pack takes 6 arguments");
        return NULL;
    }
    if (!pack_args(args, &w, &N, &K) || PyBytes_AsStringAndSize(args[3], &table, &tlen) < 0 || !as_ptr(args[4], &out))
        return NULL;
    int threads = (int)PyLong_AsLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (!out || (uintptr_t)out % 64 || tlen != 16 || !g_vbmi) {
        PyErr_SetString(PyExc_ValueError, "pack: needs VBMI, a 16-byte table and a 64-byte aligned output");
        return NULL;
    }
#if HAVE_X86
    const uint16_t *src = (const uint16_t *)w;
    uint8_t code[256], *o = (uint8_t *)out;
    pack_codes((const uint8_t *)table, code);
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 64; i++) o[i] = (uint8_t)table[i & 15];
    uint8_t *lo = o + 64, *cd = lo + (size_t)N * (size_t)K;
    int32_t *eptr = (int32_t *)(cd + (size_t)N * (size_t)K / 2), *ecol = eptr + N + 1;
    eptr[0] = 0;
    #pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (long n = 0; n < N; n++)  /* low bytes and codes, the row's escapes counted */
        eptr[n + 1] = pack_row_512(src + (size_t)n * (size_t)K, K, code, lo + (size_t)n * (size_t)K,
                                   cd + (size_t)n * (size_t)K / 2);
    for (long n = 0; n < N; n++) eptr[n + 1] += eptr[n];
    uint16_t *eval = (uint16_t *)(ecol + eptr[N]);
    #pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (long n = 0; n < N; n++) {  /* the escapes, by column */
        const uint16_t *r = src + (size_t)n * (size_t)K;
        for (int32_t e = eptr[n], k = 0; e < eptr[n + 1]; k++)
            if (code[r[k] >> 8] == 255) {
                ecol[e] = k;
                eval[e++] = r[k];
            }
    }
    Py_END_ALLOW_THREADS
#endif
    (void)threads;
    Py_RETURN_NONE;
}

/* unpack(p, N, K, out, threads): a packed (N, K) matrix back to bfloat16 (the weight for a prefill GEMM) */
static PyObject *unpack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *w, *out;
    long N, K;
    if (nargs != 5 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "unpack takes 5 or 7 arguments");
        return NULL;
    }
    if (!pack_args(args, &w, &N, &K) || !as_ptr(args[3], &out)) return NULL;
    int threads = (int)PyLong_AsLong(args[4]);
    long n0 = nargs == 7 ? PyLong_AsLong(args[5]) : 0, n1 = nargs == 7 ? PyLong_AsLong(args[6]) : N;
    if (PyErr_Occurred()) return NULL;
    if (n0 < 0 || n1 > N || n0 > n1) {
        PyErr_SetString(PyExc_ValueError, "unpack: rows out of range");
        return NULL;
    }
    if (!out) {
        PyErr_SetString(PyExc_ValueError, "unpack: null output");
        return NULL;
    }
    Packed pk = packed_parts(w, N, K);
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
    #pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
#endif
    for (long n = n0; n < n1; n++) {
        uint16_t *r = (uint16_t *)out + (size_t)(n - n0) * (size_t)K;
#if HAVE_X86
        if (g_vbmi) {
            unpack_row_512(&pk, n, K, r);
            continue;
        }
#endif
        unpack_row(&pk, n, K, r);
    }
    Py_END_ALLOW_THREADS
    (void)threads;
    Py_RETURN_NONE;
}

/* a linear from items i..i+2 of tuple t: (kind, weight, scales) */
static int parse_lin(PyObject *t, Py_ssize_t i, long N, long K, Lin *l) {
    void *w, *s;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, i));
    if (PyErr_Occurred() || !as_ptr(PyTuple_GET_ITEM(t, i + 1), &w) || !as_ptr(PyTuple_GET_ITEM(t, i + 2), &s))
        return 0;
    if (kind < W_BF16 || kind > W_PBF16 || !w || (kind == W_INT8 && !s) ||
        (kind == W_PBF16 && (K % 64 || K > PACKED_MAX_K))) {
        PyErr_SetString(PyExc_ValueError, "plan: a linear needs a known kind and its weight pointer");
        return 0;
    }
    l->kind = (int)kind; l->w = w; l->scale = (const float *)s; l->N = N; l->K = K;
    return 1;
}

/* plan((L, C, nh, nkv, hs, I, eps, bf16, S_cap, rows, threads), layers, top) -> capsule (rows: the most
   tokens one step takes, 1..16).
   layers: L tuples (in_norm, post_norm, q_norm, k_norm, qkv_bias, then (kind, weight, scales) for each of
   qkv, o, gate_up and down) of ints (pointers: 0 = absent); top: (embed, embed_rows, final_norm, head_kind,
   head_w, head_s, vocab). The tensors must outlive the plan. */
static PyObject *make_plan(PyObject *self, PyObject *args) {
    (void)self;
    long L, C, nh, nkv, hs, I, S_cap, R;
    double eps;
    int bf16, threads;
    PyObject *layers, *top;
    if (!PyArg_ParseTuple(args, "(lllllldilli)O!O!", &L, &C, &nh, &nkv, &hs, &I, &eps, &bf16, &S_cap, &R, &threads,
                          &PyList_Type, &layers, &PyTuple_Type, &top))
        return NULL;
    if (!need_level()) return NULL;
    if (L < 1 || PyList_GET_SIZE(layers) != L || C % 32 || (nh * hs) % 32 || I % 32 || nkv < 1 || nh % nkv ||
        hs > 1024 || S_cap < 1 || R < 1 || R > MAX_ROWS || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "plan: unsupported model shape for the fused decode step");
        return NULL;
    }
    Plan *p = (Plan *)calloc(1, sizeof(Plan));
    if (!p) return PyErr_NoMemory();
    p->L = L; p->C = C; p->nh = nh; p->nkv = nkv; p->hs = hs; p->I = I; p->eps = (float)eps; p->bf16 = bf16;
    p->S_cap = S_cap;
    p->R = R;
    p->threads = threads;
    p->layers = (Layer *)calloc((size_t)L, sizeof(Layer));
    long nq = nh * hs, nk = nkv * hs;
    p->raw = malloc(plan_layout(p) * sizeof(float) + 64);
    p->buf = p->raw ? (float *)align64(p->raw) : NULL;
    PyObject *capsule = PyCapsule_New(p, "astrai.decode_plan", plan_free);
    if (!capsule) {
        free(p->layers); free(p->raw); free(p);
        return NULL;
    }
    if (!p->layers || !p->buf) {
        Py_DECREF(capsule);
        return PyErr_NoMemory();
    }
    void *embed, *final_norm;
    if (PyTuple_GET_SIZE(top) != 7 || !as_ptr(PyTuple_GET_ITEM(top, 0), &embed) ||
        !as_ptr(PyTuple_GET_ITEM(top, 2), &final_norm) ||
        !parse_lin(top, 3, PyLong_AsLong(PyTuple_GET_ITEM(top, 6)), C, &p->head) ||
        (p->embed_rows = PyLong_AsLong(PyTuple_GET_ITEM(top, 1))) < 1 || p->head.N < 1 || !embed || !final_norm) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "plan: top is (embed, rows, norm, kind, w, s, vocab)");
        Py_DECREF(capsule);
        return NULL;
    }
    p->embed = embed;
    p->final_norm = final_norm;
    for (long l = 0; l < L; l++) {
        PyObject *t = PyList_GET_ITEM(layers, l);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 17) {
            PyErr_SetString(PyExc_ValueError, "plan: each layer is a tuple of 17 ints");
            Py_DECREF(capsule);
            return NULL;
        }
        Layer *ly = &p->layers[l];
        void *ptr[5];
        for (int i = 0; i < 5; i++)
            if (!as_ptr(PyTuple_GET_ITEM(t, i), &ptr[i])) { Py_DECREF(capsule); return NULL; }
        ly->in_norm = ptr[0]; ly->post_norm = ptr[1]; ly->q_norm = ptr[2]; ly->k_norm = ptr[3]; ly->qkv_bias = ptr[4];
        if (!ly->in_norm || !ly->post_norm || !parse_lin(t, 5, nq + 2 * nk, C, &ly->qkv) ||
            !parse_lin(t, 8, C, nq, &ly->o) || !parse_lin(t, 11, 2 * I, C, &ly->gate_up) ||
            !parse_lin(t, 14, C, I, &ly->down)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "plan: missing norm weight");
            Py_DECREF(capsule);
            return NULL;
        }
    }
    return capsule;
}

/* token(plan, toks, cos, sin, k_cache, v_cache, slot, S_max, threads, logits): toks a tuple of 1..rows
   token ids for slots slot.., cos/sin the rotary row of the first position (hs; the others follow),
   caches (L, 1, nkv, S_max, hs), all in the plan's activation dtype; logits (len(toks), vocab) float32 out */
static PyObject *token(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "token takes 10 arguments");
        return NULL;
    }
    Plan *p = (Plan *)PyCapsule_GetPointer(args[0], "astrai.decode_plan");
    if (!p) return NULL;
    if (!PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) < 1 || PyTuple_GET_SIZE(args[1]) > p->R) {
        PyErr_Format(PyExc_ValueError, "token: toks must be a tuple of 1 to %ld token ids", p->R);
        return NULL;
    }
    long T = (long)PyTuple_GET_SIZE(args[1]), toks[MAX_ROWS];
    for (long t = 0; t < T; t++) {
        toks[t] = PyLong_AsLong(PyTuple_GET_ITEM(args[1], t));
        if (PyErr_Occurred()) return NULL;
        if (toks[t] < 0 || toks[t] >= p->embed_rows) {
            PyErr_Format(PyExc_ValueError, "token: id %ld outside the embedding (%ld rows)", toks[t], p->embed_rows);
            return NULL;
        }
    }
    void *cos, *sin, *kc, *vc, *logits;
    if (!as_ptr(args[2], &cos) || !as_ptr(args[3], &sin) || !as_ptr(args[4], &kc) || !as_ptr(args[5], &vc) ||
        !as_ptr(args[9], &logits))
        return NULL;
    long slot = PyLong_AsLong(args[6]), S_max = PyLong_AsLong(args[7]);
    int threads = (int)PyLong_AsLong(args[8]);
    if (PyErr_Occurred()) return NULL;
    if (slot < 0 || slot + T > S_max || slot + T > p->S_cap || threads < 1) {
        PyErr_Format(PyExc_ValueError, "token: slots %ld..%ld outside the cache (%ld slots, plan for %ld)", slot,
                     slot + T - 1, S_max, p->S_cap);
        return NULL;
    }
    if (!cos || !sin || !kc || !vc || !logits) {
        PyErr_SetString(PyExc_ValueError, "token: null pointer");
        return NULL;
    }
    if (threads > p->threads) threads = p->threads;
    Py_BEGIN_ALLOW_THREADS
    plan_step(p, toks, T, cos, sin, kc, vc, slot, S_max, threads, (float *)logits);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* argmax(x, n) -> index: x a pointer to n >= 1 float32 values */
static PyObject *argmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *x;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "argmax takes 2 arguments");
        return NULL;
    }
    long n = PyLong_AsLong(args[1]);
    if (!as_ptr(args[0], &x) || (n == -1 && PyErr_Occurred()) || !need_level()) return NULL;
    if (!x || n < 1) {
        PyErr_SetString(PyExc_ValueError, "argmax of an empty or null row");
        return NULL;
    }
    return PyLong_FromLong(argmax_f32((const float *)x, n));
}

/* sample(x, n, prev, n_prev, penalty, temperature, top_k, top_p, u) -> id: x n float32 logits, prev n_prev
   int64 ids (pointers as ints), u uniform in [0, 1); temperature <= 0 is greedy (on the penalized row) */
static PyObject *sample(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    void *x, *prev;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "sample takes 9 arguments");
        return NULL;
    }
    long n = PyLong_AsLong(args[1]), n_prev = PyLong_AsLong(args[3]), top_k = PyLong_AsLong(args[6]);
    double penalty = PyFloat_AsDouble(args[4]), temperature = PyFloat_AsDouble(args[5]);
    double top_p = PyFloat_AsDouble(args[7]), u = PyFloat_AsDouble(args[8]);
    if (!as_ptr(args[0], &x) || !as_ptr(args[2], &prev) || PyErr_Occurred() || !need_level()) return NULL;
    if (!x || n < 1 || n > INT32_MAX || n_prev < 0 || (n_prev && !prev) || !(u >= 0. && u < 1.) || !(penalty > 0.)) {
        PyErr_SetString(PyExc_ValueError, "sample: empty row, bad ids, u outside [0, 1) or penalty <= 0");
        return NULL;
    }
    for (long j = 0; j < n_prev; j++)
        if (((const int64_t *)prev)[j] < 0 || ((const int64_t *)prev)[j] >= n) {
            PyErr_Format(PyExc_ValueError, "sample: previous id %lld outside the vocabulary of %ld",
                         (long long)((const int64_t *)prev)[j], n);
            return NULL;
        }
    if (n > g_cap) {
        float *w = malloc((size_t)n * sizeof(float));
        Cand *c = malloc((size_t)n * sizeof(Cand));
        if (!w || !c) {
            free(w);
            free(c);
            return PyErr_NoMemory();
        }
        free(g_w);
        free(g_cand);
        g_w = w, g_cand = c, g_cap = n;
    }
    return PyLong_FromLong(sample_row((const float *)x, n, (const int64_t *)prev, n_prev, (float)penalty,
                                      (float)temperature, top_k, (float)top_p, u));
}

static PyObject *packed_fast(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyBool_FromLong(g_vbmi);
}

/* whether the CPU has AMX bfloat16 tiles, which PyTorch's CPU GEMM and flash attention use */
static PyObject *amx(PyObject *self, PyObject *args) {
    (void)self; (void)args;
#if HAVE_X86
    __builtin_cpu_init();
    return PyBool_FromLong(__builtin_cpu_supports("amx-bf16") != 0);
#else
    return PyBool_FromLong(0);
#endif
}

static int prefetch_compact_default(void) {
#if HAVE_X86
    __builtin_cpu_init();
    return !__builtin_cpu_is("amd");
#else
    return 0;
#endif
}

/* prefetch_compact([on]): whether int8 and packed bfloat16 weights are prefetched in software (the
   CPU's default: not on AMD); with an argument, switch it (None: back to the default) */
static PyObject *prefetch_compact(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "prefetch_compact takes at most one argument");
        return NULL;
    }
    if (nargs == 1) {
        if (args[0] == Py_None) g_pf_compact = prefetch_compact_default();
        else {
            int on = PyObject_IsTrue(args[0]);
            if (on < 0) return NULL;
            g_pf_compact = on;
        }
    }
    return PyBool_FromLong(g_pf_compact);
}

static PyObject *level(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyLong_FromLong(g_level);
}

/* set_level(n): use at most path n (tests exercise the AVX2 path on an AVX-512 CPU) */
static PyObject *set_level(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    int best = detect_level();
    g_level = n < best ? (int)(n < 0 ? 0 : n) : best;
    g_vbmi = g_level == 3 && packed_ok();
    return PyLong_FromLong(g_level);
}

static PyMethodDef methods[] = {
    {"matvec", (PyCFunction)(void (*)(void))matvec, METH_FASTCALL, "y = x @ W.T for a few rows"},
    {"dequant", (PyCFunction)(void (*)(void))dequant, METH_FASTCALL, "int8 rows times their scales -> float32/bfloat16"},
    {"plan", make_plan, METH_VARARGS, "prepare the fused decode step for a model's weights"},
    {"token", (PyCFunction)(void (*)(void))token, METH_FASTCALL, "decode tokens of one sequence: ids to float32 logits"},
    {"attend_prefill", (PyCFunction)(void (*)(void))attend_prefill, METH_FASTCALL, "causal attention of new queries over the cache (float32 or bfloat16)"},
    {"swiglu", (PyCFunction)(void (*)(void))swiglu_py, METH_FASTCALL, "silu(gate) * up over rows of [gate | up], float32 or bfloat16"},
    {"rmsnorm", (PyCFunction)(void (*)(void))rmsnorm_py, METH_FASTCALL, "RMSNorm over bfloat16 rows"},
    {"argmax", (PyCFunction)(void (*)(void))argmax, METH_FASTCALL, "index of the largest float32 (torch.argmax's answer)"},
    {"sample", (PyCFunction)(void (*)(void))sample, METH_FASTCALL, "penalty, temperature, top-k, top-p and a draw: one token id"},
    {"amx", amx, METH_NOARGS, "whether the CPU has AMX bfloat16 tiles"},
    {"prefetch_compact", (PyCFunction)(void (*)(void))prefetch_compact, METH_FASTCALL,
     "whether int8 and packed bfloat16 weights are prefetched in software; an argument switches it (None: default)"},
    {"packed_size", (PyCFunction)(void (*)(void))packed_size_py, METH_FASTCALL, "bytes and escapes of a packed bfloat16 matrix"},
    {"pack", (PyCFunction)(void (*)(void))pack, METH_FASTCALL, "bfloat16 (N, K) -> 12-bit packed bytes (lossless)"},
    {"unpack", (PyCFunction)(void (*)(void))unpack, METH_FASTCALL, "packed bytes -> bfloat16 (N, K)"},
    {"packed_fast", packed_fast, METH_NOARGS, "whether packed bfloat16 decodes in registers here (VBMI)"},
    {"level", level, METH_NOARGS, "vector path in use: 0 none, 1 AVX2+FMA, 2 AVX-512, 3 AVX-512 with BF16 and VNNI dot products"},
    {"set_level", set_level, METH_O, "cap the vector path (for tests); returns the level now in use"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_decode",
                                    "Decode kernels: matrix-vector products, one-query attention, the fused step.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__decode(void) {
    g_level = detect_level();
    g_vbmi = packed_ok();
    g_pf_compact = prefetch_compact_default();
    return PyModule_Create(&module);
}
