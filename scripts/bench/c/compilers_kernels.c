/* compilers_kernels.c -- two small kernels for chapter 3 (compilers and flags).
 *
 * scripts/bench/compilers.py compiles this file once per flag set (-O0, -O2, -O3,
 * -O3 -march=native, ...) into a shared library and calls the functions through ctypes,
 * so every flag set runs exactly the same source on exactly the same data.
 *
 *   matmul: C = A B for n x n single-precision matrices, in i-k-j loop order.  The inner
 *           loop walks B and C along rows with unit stride and has no loop-carried
 *           dependence, so a compiler may turn it into SIMD instructions.
 *   dot:    a single-precision dot product.  Its inner loop is a reduction: each step
 *           depends on the previous sum.  Vectorising it changes the order of the
 *           additions, which IEEE-754 arithmetic does not allow without -ffast-math
 *           (or -fassociative-math).
 *
 * `restrict` promises the compiler that the arrays do not overlap; without it, gcc must
 * either prove that or emit a run-time overlap check before a vector loop.
 */
#include <stddef.h>

void matmul(int n, const float *restrict a, const float *restrict b, float *restrict c)
{
    for (int i = 0; i < n * n; i++)
        c[i] = 0.0f;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n; k++) {
            const float aik = a[(size_t)i * n + k];
            for (int j = 0; j < n; j++)              /* the loop a vectoriser looks at */
                c[(size_t)i * n + j] += aik * b[(size_t)k * n + j];
        }
    }
}

float dot(long n, const float *restrict x, const float *restrict y)
{
    float s = 0.0f;
    for (long i = 0; i < n; i++)                     /* a reduction: s depends on s */
        s += x[i] * y[i];
    return s;
}
