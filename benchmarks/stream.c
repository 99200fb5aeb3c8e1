/*
 * stream.c - a small STREAM-like memory bandwidth probe, the compiled reference that
 * benchmarks/stream_compare.py holds wattbench's `membw` workload against.
 *
 * What it measures: sustained bandwidth between the cores and main memory for five kernels on
 * float32 arrays a, b, c of N elements each, every kernel an OpenMP `parallel for` with a static
 * schedule (the arrays are first touched with the same schedule, so each thread's pages live
 * where that thread runs):
 *
 *   copy   c[i] = a[i]                  2 arrays moved
 *   scale  b[i] = s * c[i]              2 arrays moved
 *   add    c[i] = a[i] + b[i]           3 arrays moved
 *   triad  a[i] = b[i] + s * c[i]       3 arrays moved
 *   dot    sum += a[i] * b[i]           2 arrays moved (reduction: float32 SIMD partial sums
 *                                       over blocks, the blocks summed in float64)
 *
 * Bytes are counted as BabelStream (and wattbench) count them: each array once per element,
 * N * sizeof(float) bytes per array; write-allocate traffic is not counted. Rates are decimal
 * (1 GB/s = 1e9 bytes/s). Each kernel runs K times in the order above; every run is timed on
 * its own with omp_get_wtime. The first pass is a warm-up and is left out of the statistics
 * (as in STREAM), so K >= 2.
 *
 * Usage: stream N K
 *
 * Output: comment lines starting with '#', then one line per kernel:
 *   <kernel> best_GBps=<GB/s> median_GBps=<GB/s> best_s=<s> median_s=<s> bytes=<bytes per run> runs=<K-1>
 * and a final line "check ok" or "check FAILED ...". The exit status is 0 when the check passes,
 * 1 when it fails and 2 on a usage or allocation error.
 *
 * The inputs are not constants (constant pages could be deduplicated or compressed by a
 * hypervisor): element i starts from a hash of i, and the check replays the per-element
 * recurrence for a sample of indices.
 */

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_KERNELS 5
#define SCALAR 0.4f
#define ALIGNMENT 4096
#define MAX_RUNS 1000 /* the values decay by 0.96 a pass; 1000 passes stay clear of denormals */
#define CHECK_SAMPLES 4096
#define DOT_BLOCK 4096 /* elements per float32 partial sum in dot */

static const char *const KERNEL_NAMES[N_KERNELS] = {"copy", "scale", "add", "triad", "dot"};
static const int ARRAYS_MOVED[N_KERNELS] = {2, 2, 3, 3, 2};

/* A value in [0.5, 1.5) that depends on the index and the array, cheap to compute. */
static inline float start_value(uint64_t i, uint64_t salt) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (salt * 0xBF58476D1CE4E5B9ull);
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return 0.5f + (float)(x >> 40) / (float)(1ull << 24);
}

static int compare_doubles(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static float *alloc_array(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, ALIGNMENT, n * sizeof(float)) != 0) {
        return NULL;
    }
    return (float *)p;
}

static int parse_count(const char *text, long long min, long long max, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    long long n_arg = 0, k_arg = 0;
    if (argc != 3 || parse_count(argv[1], 1, (long long)(SIZE_MAX / sizeof(float)), &n_arg) != 0 ||
        parse_count(argv[2], 2, MAX_RUNS, &k_arg) != 0) {
        fprintf(stderr, "usage: %s N K\n  N: elements per float32 array (>= 1)\n  K: runs of each kernel (2..%d)\n",
                argc > 0 ? argv[0] : "stream", MAX_RUNS);
        return 2;
    }
    const size_t n = (size_t)n_arg;
    const int k = (int)k_arg;
    const float s = SCALAR;

    float *a = alloc_array(n), *b = alloc_array(n), *c = alloc_array(n);
    double *times = malloc(sizeof(double) * (size_t)N_KERNELS * (size_t)k);
    if (!a || !b || !c || !times) {
        fprintf(stderr, "stream: cannot allocate 3 arrays of %zu bytes\n", n * sizeof(float));
        return 2;
    }

    /* First touch with the kernels' schedule. */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        a[i] = start_value(i, 1);
        b[i] = start_value(i, 2);
        c[i] = start_value(i, 3);
    }

    printf("# stream.c: float32, N=%zu elements (%zu bytes per array), K=%d runs per kernel\n", n,
           n * sizeof(float), k);
    printf("# threads=%d wtick=%.3g s\n", omp_get_max_threads(), omp_get_wtick());

    double sum = 0.0;
    for (int r = 0; r < k; r++) {
        double t;

        t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) c[i] = a[i];
        times[0 * k + r] = omp_get_wtime() - t;

        t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = s * c[i];
        times[1 * k + r] = omp_get_wtime() - t;

        t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) c[i] = a[i] + b[i];
        times[2 * k + r] = omp_get_wtime() - t;

        t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        times[3 * k + r] = omp_get_wtime() - t;

        /* Blocks of DOT_BLOCK elements, each summed in float32 SIMD lanes, the block sums added
         * in float64: without the blocks the float32 sum over 1e8 terms drifts by percent, and
         * a plain `reduction` is not vectorised (a scalar add chain is latency-bound, not
         * memory-bound). */
        double partial = 0.0;
        t = omp_get_wtime();
#pragma omp parallel for schedule(static) reduction(+ : partial)
        for (size_t start = 0; start < n; start += DOT_BLOCK) {
            const size_t end = n - start > DOT_BLOCK ? start + DOT_BLOCK : n;
            float block = 0.0f;
#pragma omp simd reduction(+ : block)
            for (size_t i = start; i < end; i++) block += a[i] * b[i];
            partial += block;
        }
        times[4 * k + r] = omp_get_wtime() - t;
        sum = partial;
    }

    for (int kernel = 0; kernel < N_KERNELS; kernel++) {
        double *kt = times + (size_t)kernel * k + 1; /* drop the warm-up pass */
        const int runs = k - 1;
        qsort(kt, (size_t)runs, sizeof(double), compare_doubles);
        const double best_s = kt[0];
        const double median_s = runs % 2 ? kt[runs / 2] : 0.5 * (kt[runs / 2 - 1] + kt[runs / 2]);
        const double bytes = (double)ARRAYS_MOVED[kernel] * (double)n * sizeof(float);
        printf("%s best_GBps=%.3f median_GBps=%.3f best_s=%.9f median_s=%.9f bytes=%.0f runs=%d\n",
               KERNEL_NAMES[kernel], bytes / best_s * 1e-9, bytes / median_s * 1e-9, best_s, median_s, bytes, runs);
    }

    /* Check: replay the recurrence for sampled elements; dot against a float64 sum. */
    double worst = 0.0;
    const size_t step = n > CHECK_SAMPLES ? n / CHECK_SAMPLES : 1;
    for (size_t i = 0; i < n; i += step) {
        float ea = start_value(i, 1), eb = start_value(i, 2), ec = start_value(i, 3);
        for (int r = 0; r < k; r++) {
            ec = ea;
            eb = s * ec;
            ec = ea + eb;
            ea = eb + s * ec;
        }
        const float got[3] = {a[i], b[i], c[i]}, want[3] = {ea, eb, ec};
        for (int j = 0; j < 3; j++) {
            const double err = fabs((double)got[j] - (double)want[j]) / fabs((double)want[j]);
            if (err > worst) worst = err;
        }
    }
    double dot_ref = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : dot_ref)
    for (size_t i = 0; i < n; i++) dot_ref += (double)a[i] * (double)b[i];
    const double dot_err = fabs(sum - dot_ref) / fabs(dot_ref);
    /* Blocked float32 partial sums stay within ~1e-6 of float64; a dropped block is off by far more. */
    if (worst <= 1e-5 && dot_err <= 1e-5) {
        printf("check ok max_rel_error=%.3g dot_rel_error=%.3g\n", worst, dot_err);
    } else {
        printf("check FAILED max_rel_error=%.3g dot_rel_error=%.3g\n", worst, dot_err);
        return 1;
    }

    free(a);
    free(b);
    free(c);
    free(times);
    return 0;
}
