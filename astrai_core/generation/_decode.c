/* Kernels for decode (one new token per sequence), where PyTorch's per-call costs dominate.
 *
 * matvec: y (M, N) = x (M, K) @ W (N, K)^T for a few rows M.
 *
 * Decode reads every weight once per token, so its speed is weight bytes / memory bandwidth.
 * PyTorch's CPU paths for one row (oneDNN bfloat16 GEMM, aten._weight_int8pack_mm) stream weights
 * at roughly a third of this machine's bandwidth (benchmarks/RESULTS.md, "Generation"); these loops
 * stream one weight row at a time, contiguously, with enough independent accumulators to keep the
 * loads in flight, and split the rows across threads.
 *
 *   bfloat16 weights: each weight widened to float32 (a 16-bit shift) and multiplied in float32.
 *   int8 weights, one float scale per output row: x is quantized per input row to int16
 *     (absmax / 32767, ~1e-5 relative), products summed exactly in int32 over blocks of 256
 *     (127 * 32767 * 256 < 2^31, so no overflow) and the blocks summed in float32.
 *
 * attend: one query per sequence against the filled part of a key/value cache (grouped heads,
 * softmax in float32); PyTorch's fused attention spends ~390 us per layer on a bfloat16 query over
 * 600 cached positions, of which almost nothing is arithmetic.
 *
 * x and y are float32 or bfloat16 (flags), contiguous. Weights must be contiguous with K a multiple
 * of 32. Paths: AVX-512 (F+BW) and AVX2+FMA, chosen at run time by the CPU; other CPUs and
 * compilers build without them and ``level()`` reports 0, so the Python side keeps PyTorch's
 * kernels. The GIL is released while the loops run, so other Python threads (the GUI) keep going.
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
#define BLOCK 256

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_X86 1
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define T256 __attribute__((target("avx2,fma")))
#else
#define HAVE_X86 0
#endif

static int g_level = -1; /* 0 none, 1 AVX2+FMA, 2 AVX-512 */

static int detect_level(void) {
#if HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
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

#if HAVE_X86
/* ---- AVX-512 ------------------------------------------------------------------------------ */
T512 static inline __m512 bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

T512 static float dot_bf16_512(const uint16_t *w, const float *x, long K) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    long k = 0;
    for (; k + 64 <= K; k += 64) {
        a = _mm512_fmadd_ps(bf16x16(w + k), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(bf16x16(w + k + 16), _mm512_loadu_ps(x + k + 16), b);
        c = _mm512_fmadd_ps(bf16x16(w + k + 32), _mm512_loadu_ps(x + k + 32), c);
        d = _mm512_fmadd_ps(bf16x16(w + k + 48), _mm512_loadu_ps(x + k + 48), d);
    }
    for (; k < K; k += 16) a = _mm512_fmadd_ps(bf16x16(w + k), _mm512_loadu_ps(x + k), a);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

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

T256 static float dot_bf16_256(const uint16_t *w, const float *x, long K) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (long k = 0; k < K; k += 32) {
        a = _mm256_fmadd_ps(bf16x8(w + k), _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(bf16x8(w + k + 8), _mm256_loadu_ps(x + k + 8), b);
        c = _mm256_fmadd_ps(bf16x8(w + k + 16), _mm256_loadu_ps(x + k + 16), c);
        d = _mm256_fmadd_ps(bf16x8(w + k + 24), _mm256_loadu_ps(x + k + 24), d);
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
}

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

/* ---- the row loops, split across threads ------------------------------------------------- */
typedef struct {
    int kind;           /* 0 bfloat16 weights, 1 int8 weights */
    const void *w;      /* (N, K) */
    const float *scale; /* (N,) int8 row scales */
    const float *xf;    /* (M, K) float32 activations (bfloat16 path) */
    const int16_t *xq;  /* (M, K) int16 activations (int8 path) */
    const float *xs;    /* (M,) their scales */
    void *y;            /* (M, N) */
    int y_bf16;
    long M, N, K;
} Job;

static void run_rows(const Job *j, long n0, long n1) {
#if HAVE_X86
    for (long n = n0; n < n1; n++) {
        for (long m = 0; m < j->M; m++) {
            float v;
            if (j->kind == 0) {
                const uint16_t *w = (const uint16_t *)j->w + n * j->K;
                v = g_level == 2 ? dot_bf16_512(w, j->xf + m * j->K, j->K) : dot_bf16_256(w, j->xf + m * j->K, j->K);
            } else {
                const int8_t *w = (const int8_t *)j->w + n * j->K;
                v = (g_level == 2 ? dot_i8_512(w, j->xq + m * j->K, j->K) : dot_i8_256(w, j->xq + m * j->K, j->K))
                    * j->scale[n] * j->xs[m];
            }
            if (j->y_bf16) ((uint16_t *)j->y)[m * j->N + n] = f32_to_bf16(v);
            else ((float *)j->y)[m * j->N + n] = v;
        }
    }
#else
    (void)j; (void)n0; (void)n1;
#endif
}

static void run_job(const Job *j, int threads) {
#ifdef _OPENMP
    if (threads > 1 && j->N >= 64) {
        #pragma omp parallel num_threads(threads)
        {
            long t = omp_get_thread_num(), T = omp_get_num_threads();
            long chunk = (j->N + T - 1) / T, a = t * chunk, b = a + chunk < j->N ? a + chunk : j->N;
            if (a < b) run_rows(j, a, b);
        }
        return;
    }
#else
    (void)threads;
#endif
    run_rows(j, 0, j->N);
}

/* ---- Python glue ---------------------------------------------------------------------------- */
static int as_ptr(PyObject *o, void **p) {
    *p = PyLong_AsVoidPtr(o);
    return !(*p == NULL && PyErr_Occurred());
}

/* matvec(kind, w, scale, x, x_bf16, y, y_bf16, M, N, K, threads) -> None; pointers are ints */
static PyObject *matvec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "matvec takes 11 arguments");
        return NULL;
    }
    Job j;
    void *w, *scale, *x, *y;
    j.kind = (int)PyLong_AsLong(args[0]);
    if (!as_ptr(args[1], &w) || !as_ptr(args[2], &scale) || !as_ptr(args[3], &x) || !as_ptr(args[5], &y)) return NULL;
    int x_bf16 = PyObject_IsTrue(args[4]);
    j.y_bf16 = PyObject_IsTrue(args[6]);
    j.M = PyLong_AsLong(args[7]);
    j.N = PyLong_AsLong(args[8]);
    j.K = PyLong_AsLong(args[9]);
    int threads = (int)PyLong_AsLong(args[10]);
    if (PyErr_Occurred()) return NULL;
    if (g_level <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "no vector path for this CPU");
        return NULL;
    }
    if (j.M < 1 || j.M > MAX_ROWS || j.N < 1 || j.K < 32 || j.K % 32 || (j.kind != 0 && j.kind != 1)) {
        PyErr_Format(PyExc_ValueError, "matvec: unsupported shape M=%ld N=%ld K=%ld kind=%d", j.M, j.N, j.K, j.kind);
        return NULL;
    }
    j.w = w;
    j.y = y;
    j.scale = (const float *)scale;
    /* activations in float32 (and int16 for int8 weights): M*K values, small next to the weights */
    size_t mk = (size_t)j.M * (size_t)j.K;
    float *xf = (float *)malloc(mk * sizeof(float) + mk * sizeof(int16_t) + (size_t)j.M * sizeof(float));
    if (!xf) return PyErr_NoMemory();
    int16_t *xq = (int16_t *)(xf + mk);
    float *xs = (float *)(xq + mk);
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; i < mk; i++) xf[i] = x_bf16 ? bf16_to_f32(((const uint16_t *)x)[i]) : ((const float *)x)[i];
    if (j.kind == 1) {
        for (long m = 0; m < j.M; m++) {
            const float *r = xf + m * j.K;
            float amax = 0.f;
            for (long k = 0; k < j.K; k++) amax = fmaxf(amax, fabsf(r[k]));
            float s = amax > 0.f && isfinite(amax) ? amax / 32767.f : 1.f;
            float inv = 1.f / s;
            for (long k = 0; k < j.K; k++) xq[m * j.K + k] = (int16_t)lrintf(r[k] * inv);
            xs[m] = s;
        }
    }
    j.xf = xf;
    j.xq = xq;
    j.xs = xs;
    run_job(&j, threads);
    Py_END_ALLOW_THREADS
    free(xf);
    Py_RETURN_NONE;
}


/* ---- decode attention ------------------------------------------------------------------------ */
#if HAVE_X86
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

static inline float load_f(const void *p, long i, int bf16) {
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* one (sequence, head): q (hs) against keys/values (S, hs) -> out (hs); scratch holds S floats */
CLONES static void attend_head(const float *q, const void *k, const void *v, int bf16, long S, long hs,
                               float scale, float *scores, float *acc) {
    float mx = -INFINITY;
    for (long s = 0; s < S; s++) {
        float d = 0.f;
        if (bf16) {
            const uint16_t *kr = (const uint16_t *)k + s * hs;
            for (long i = 0; i < hs; i++) d += q[i] * bf16_to_f32(kr[i]);
        } else {
            const float *kr = (const float *)k + s * hs;
            for (long i = 0; i < hs; i++) d += q[i] * kr[i];
        }
        d *= scale;
        scores[s] = d;
        mx = d > mx ? d : mx;
    }
    float sum = 0.f;
    for (long s = 0; s < S; s++) {
        scores[s] = expf(scores[s] - mx);
        sum += scores[s];
    }
    for (long i = 0; i < hs; i++) acc[i] = 0.f;
    for (long s = 0; s < S; s++) {
        float p = scores[s];
        if (bf16) {
            const uint16_t *vr = (const uint16_t *)v + s * hs;
            for (long i = 0; i < hs; i++) acc[i] += p * bf16_to_f32(vr[i]);
        } else {
            const float *vr = (const float *)v + s * hs;
            for (long i = 0; i < hs; i++) acc[i] += p * vr[i];
        }
    }
    for (long i = 0; i < hs; i++) acc[i] /= sum;
}

typedef struct {
    const void *q, *k, *v;
    void *out;
    int bf16;
    long B, nh, nkv, S, S_max, hs;
    float scale;
} Attn;

/* heads h0..h1 (flattened sequence*head); buf holds S + 2*hs floats of scratch */
static void attend_range(const Attn *a, long h0, long h1, float *buf) {
    float *q = buf + a->S, *acc = q + a->hs;
    long group = a->nh / a->nkv;
    for (long bh = h0; bh < h1; bh++) {
        long b = bh / a->nh, h = bh % a->nh, g = h / group;
        for (long i = 0; i < a->hs; i++) q[i] = load_f(a->q, bh * a->hs + i, a->bf16);
        size_t off = (size_t)((b * a->nkv + g) * a->S_max) * (size_t)a->hs;
        size_t esz = a->bf16 ? 2 : 4;
        attend_head(q, (const char *)a->k + off * esz, (const char *)a->v + off * esz, a->bf16, a->S, a->hs,
                    a->scale, buf, acc);
        for (long i = 0; i < a->hs; i++) {
            if (a->bf16) ((uint16_t *)a->out)[bh * a->hs + i] = f32_to_bf16(acc[i]);
            else ((float *)a->out)[bh * a->hs + i] = acc[i];
        }
    }
}

/* attend(q, k, v, out, bf16, B, nh, nkv, S, S_max, hs, scale, threads): q/out (B, nh, hs), k/v the
   cache (B, nkv, S_max, hs) of which the first S positions are used; pointers are ints */
static PyObject *attend(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "attend takes 13 arguments");
        return NULL;
    }
    Attn a;
    void *q, *k, *v, *out;
    if (!as_ptr(args[0], &q) || !as_ptr(args[1], &k) || !as_ptr(args[2], &v) || !as_ptr(args[3], &out)) return NULL;
    a.bf16 = PyObject_IsTrue(args[4]);
    a.B = PyLong_AsLong(args[5]);
    a.nh = PyLong_AsLong(args[6]);
    a.nkv = PyLong_AsLong(args[7]);
    a.S = PyLong_AsLong(args[8]);
    a.S_max = PyLong_AsLong(args[9]);
    a.hs = PyLong_AsLong(args[10]);
    a.scale = (float)PyFloat_AsDouble(args[11]);
    int threads = (int)PyLong_AsLong(args[12]);
    if (PyErr_Occurred()) return NULL;
    if (a.B < 1 || a.nkv < 1 || a.nh % a.nkv || a.S < 1 || a.S > a.S_max || a.hs < 1) {
        PyErr_Format(PyExc_ValueError, "attend: unsupported shape B=%ld nh=%ld nkv=%ld S=%ld S_max=%ld hs=%ld",
                     a.B, a.nh, a.nkv, a.S, a.S_max, a.hs);
        return NULL;
    }
    a.q = q; a.k = k; a.v = v; a.out = out;
    long total = a.B * a.nh, per = a.S + 2 * a.hs;
#ifndef _OPENMP
    threads = 1;
#endif
    if (threads < 1 || total < 2 || a.S < 64) threads = 1;
    float *scratch = (float *)malloc((size_t)threads * (size_t)per * sizeof(float));
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
    if (threads > 1) {
        #pragma omp parallel num_threads(threads)
        {
            long t = omp_get_thread_num(), T = omp_get_num_threads();
            long chunk = (total + T - 1) / T, lo = t * chunk, hi = lo + chunk < total ? lo + chunk : total;
            if (lo < hi) attend_range(&a, lo, hi, scratch + t * per);
        }
    } else
#endif
    attend_range(&a, 0, total, scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
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
    return PyLong_FromLong(g_level);
}

static PyMethodDef methods[] = {
    {"matvec", (PyCFunction)(void (*)(void))matvec, METH_FASTCALL, "y = x @ W.T for a few rows (see module doc)"},
    {"attend", (PyCFunction)(void (*)(void))attend, METH_FASTCALL, "one-query attention over a KV cache (see module doc)"},
    {"level", level, METH_NOARGS, "vector path in use: 0 none, 1 AVX2+FMA, 2 AVX-512"},
    {"set_level", set_level, METH_O, "cap the vector path (for tests); returns the level now in use"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_decode", "Decode kernels: matrix-vector products and one-query attention.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__decode(void) {
    g_level = detect_level();
    return PyModule_Create(&module);
}
