/* basics.c -- the C appendix's program: arrays through pointers, a loop timed with
 * clock_gettime, the same loop split over threads with OpenMP, and functions that Python
 * calls through ctypes.
 *
 * As a program (OpenMP on):
 *     gcc -O2 -Wall -fopenmp basics.c -o basics
 *     OMP_NUM_THREADS=2 ./basics N REPEATS      prints one line of JSON
 * As a shared library for ctypes (what notebooks/appendix_c.md builds through
 * scripts/bench/compilers.py, without -fopenmp: the pragma is then ignored):
 *     gcc -O2 -DBASICS_NO_MAIN -fPIC -c basics.c && gcc -shared basics.o -o libbasics.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Seconds on the monotonic clock: never jumps when the system time is set. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The sum of x[0] ... x[n-1]. With -fopenmp each thread sums a contiguous block and
 * the partial sums are added at the end (the reduction clause). */
double sum(const double *x, long n) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (long i = 0; i < n; i++)
        s += x[i];
    return s;
}

/* x[i] = a * x[i] + i, in place: the caller's memory is changed through the pointer. */
void axpi(double *x, long n, double a) {
    for (long i = 0; i < n; i++)
        *(x + i) = a * *(x + i) + (double)i;   /* *(x + i) is x[i] */
}

/* How many threads a parallel region would use (1 without OpenMP). */
int threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#ifndef BASICS_NO_MAIN
int main(int argc, char **argv) {
    char *end = NULL;
    long n = argc > 1 ? strtol(argv[1], &end, 10) : 1000000;
    if (argc > 1 && (*end != '\0' || n < 1)) {
        fprintf(stderr, "usage: %s N [REPEATS]  (N a positive integer)\n", argv[0]);
        return 2;
    }
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    if (repeats < 1 || repeats > 1000) {
        fprintf(stderr, "REPEATS must be from 1 to 1000\n");
        return 2;
    }
    double *x = malloc((size_t)n * sizeof *x);   /* an array is a pointer to its first element */
    double *times = malloc((size_t)repeats * sizeof *times);
    if (x == NULL || times == NULL) {
        fprintf(stderr, "cannot allocate %ld doubles\n", n);
        return 1;
    }
    for (long i = 0; i < n; i++)
        x[i] = (double)(i % 8);                  /* integers: the sum is exact */
    double s = 0.0;
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
        s = sum(x, n);
        times[r] = now() - t0;
    }
    printf("{\"n\": %ld, \"threads\": %d, \"sizeof_double\": %zu, "
           "\"bytes_from_x0_to_x1\": %td, \"sum\": %.1f, \"times_s\": [",
           n, threads(), sizeof(double), (char *)&x[1] - (char *)&x[0], s);
    for (int r = 0; r < repeats; r++)
        printf("%s%.9e", r ? ", " : "", times[r]);
    printf("]}\n");
    free(times);
    free(x);
    return 0;
}
#endif
