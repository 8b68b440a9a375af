/* stream_triad.c -- the C/OpenMP reference for the book's STREAM triad.
 *
 * Computes a[i] = b[i] + s * c[i] over three arrays of n doubles, the way the STREAM
 * benchmark (McCalpin) does: arrays initialised in parallel by the threads that later use
 * them ("first touch"), the kernel repeated ntimes, each repetition timed on its own with
 * omp_get_wtime(). It counts 3 * 8 * n bytes per triad, as STREAM does.
 *
 * Two variants of the kernel run in the same process, on the same arrays:
 *   plain     -- the loop as written; the compiler vectorises it (-O3 -march=native).
 *                This is the reference the book's numba triad is compared with.
 *   streaming -- the same loop with non-temporal ("streaming") stores written with AVX
 *                intrinsics, which skip the read-for-ownership of a[] (only when the
 *                compiler targets AVX; otherwise it reports "streaming_available": false).
 *
 * Build:  gcc -O3 -march=native -fopenmp stream_triad.c -o stream_triad
 * Run:    OMP_NUM_THREADS=4 ./stream_triad N NTIMES
 * Output: one line of JSON with the per-repetition times in seconds.
 *
 * As a shared library (what scripts/bench/stream.py builds, so that the C and the numba
 * kernels run in one process, on the same arrays, on the same OpenMP thread pool):
 *         gcc -O3 -march=native -fopenmp -shared -fPIC -DSTREAM_TRIAD_NO_MAIN \
 *             stream_triad.c -o libstream_triad.so
 * and call stream_triad(a, b, c, s, n, threads) / stream_triad_streaming(...).
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

static void triad_plain(double *restrict a, const double *restrict b,
                        const double *restrict c, double s, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

static int triad_streaming(double *restrict a, const double *restrict b,
                           const double *restrict c, double s, long n) {
#ifdef __AVX__
    /* Same static split as the plain loop; each thread peels to a 32-byte boundary,
     * then stores 4 doubles at a time around the caches. */
#pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        long chunk = (n + nt - 1) / nt;
        long lo = (long)t * chunk, hi = lo + chunk < n ? lo + chunk : n;
        long i = lo;
        const __m256d vs = _mm256_set1_pd(s);
        for (; i < hi && ((size_t)(a + i) & 31) != 0; i++)
            a[i] = b[i] + s * c[i];
        for (; i + 4 <= hi; i += 4) {
            __m256d v = _mm256_add_pd(_mm256_loadu_pd(b + i),
                                      _mm256_mul_pd(vs, _mm256_loadu_pd(c + i)));
            _mm256_stream_pd(a + i, v);
        }
        for (; i < hi; i++)
            a[i] = b[i] + s * c[i];
        _mm_sfence();
    }
    return 1;
#else
    triad_plain(a, b, c, s, n);
    return 0;
#endif
}

/* Entry points for ctypes: set the thread count, then run one triad. */
void stream_triad(double *a, const double *b, const double *c, double s, long n,
                  int threads) {
    if (threads > 0)
        omp_set_num_threads(threads);
    triad_plain(a, b, c, s, n);
}

int stream_triad_streaming(double *a, const double *b, const double *c, double s, long n,
                           int threads) {
    if (threads > 0)
        omp_set_num_threads(threads);
    return triad_streaming(a, b, c, s, n);
}

#ifndef STREAM_TRIAD_NO_MAIN
static void print_times(const char *name, const double *t, int k) {
    printf("\"%s\": [", name);
    for (int j = 0; j < k; j++)
        printf("%s%.9e", j ? ", " : "", t[j]);
    printf("]");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s N NTIMES\n", argv[0]);
        return 2;
    }
    char *end;
    errno = 0;
    long n = strtol(argv[1], &end, 10);
    if (errno || *end || n < 1) {
        fprintf(stderr, "N must be a positive integer, got '%s'\n", argv[1]);
        return 2;
    }
    int ntimes = (int)strtol(argv[2], &end, 10);
    if (*end || ntimes < 1) {
        fprintf(stderr, "NTIMES must be a positive integer, got '%s'\n", argv[2]);
        return 2;
    }
    /* 2 MiB alignment and MADV_HUGEPAGE: large arrays get huge pages, as NumPy asks for its
     * own large arrays on Linux, so both sides pay the same page-fault and TLB costs. */
    const size_t align = 2u << 20;
    size_t bytes = (size_t)n * sizeof(double);
    size_t padded = (bytes + align - 1) / align * align;
    double *a = aligned_alloc(align, padded), *b = aligned_alloc(align, padded),
           *c = aligned_alloc(align, padded);
#ifdef MADV_HUGEPAGE
    if (a && b && c) {
        madvise(a, padded, MADV_HUGEPAGE);
        madvise(b, padded, MADV_HUGEPAGE);
        madvise(c, padded, MADV_HUGEPAGE);
    }
#endif
    double *t_plain = malloc(ntimes * sizeof(double)), *t_nt = malloc(ntimes * sizeof(double));
    if (!a || !b || !c || !t_plain || !t_nt) {
        fprintf(stderr, "cannot allocate 3 arrays of %ld doubles\n", n);
        return 1;
    }
    const double s = 3.0;
    /* First touch: each page is mapped by the thread that will use it in the kernel. */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        a[i] = 0.0;
        b[i] = 2.0;
        c[i] = 0.5;
    }
    triad_plain(a, b, c, s, n); /* warm-up: threads started, pages mapped */
    int have_nt = 0;
    for (int k = 0; k < ntimes; k++) {
        double t0 = omp_get_wtime();
        triad_plain(a, b, c, s, n);
        t_plain[k] = omp_get_wtime() - t0;
        t0 = omp_get_wtime();
        have_nt = triad_streaming(a, b, c, s, n);
        t_nt[k] = omp_get_wtime() - t0;
    }
    /* Check: every a[i] must be 2 + 3 * 0.5 = 3.5. */
    long bad = 0;
#pragma omp parallel for reduction(+ : bad)
    for (long i = 0; i < n; i++)
        bad += a[i] != 3.5;
    printf("{\"n\": %ld, \"ntimes\": %d, \"threads\": %d, \"errors\": %ld, "
           "\"streaming_available\": %s, ",
           n, ntimes, omp_get_max_threads(), bad, have_nt ? "true" : "false");
    print_times("triad_s", t_plain, ntimes);
    printf(", ");
    print_times("triad_streaming_s", t_nt, ntimes);
    printf("}\n");
    free(a); free(b); free(c); free(t_plain); free(t_nt);
    return bad != 0;
}
#endif /* STREAM_TRIAD_NO_MAIN */
