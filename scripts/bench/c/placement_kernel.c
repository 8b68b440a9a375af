/* placement_kernel.c -- the MPI + OpenMP kernel of the placement lab (chapter 2).
 *
 * N elements are split into contiguous blocks, one per MPI rank; inside a rank the OpenMP
 * threads split the block again (schedule(static)), and each thread repeats
 *
 *     x[i] = ALPHA * x[i] + y[i]          (two loads, one store, two flops per element)
 *
 * SWEEPS times over its own slice. No thread ever reads another thread's elements, so the
 * result does not depend on how the work is cut: any decomposition computes every element
 * with the same floating-point operations in the same order (checked by the Python driver).
 * The arrays are initialised by the threads that later use them ("first touch").
 *
 * The program also reports where it ran: each rank's CPU affinity as the launcher set it
 * (what taskset or mpiexec -bind-to applied), each thread's affinity inside the region (what
 * OMP_PROC_BIND / OMP_PLACES applied), the CPUs each thread was seen on (sched_getcpu()
 * after every sweep), and each thread's voluntary and involuntary context switches
 * (getrusage(RUSAGE_THREAD): the counters /proc/self/task/TID/status shows).
 *
 * Timing: every repeat starts after a barrier in which the ranks sleep (MPI_Ibarrier polled
 * with nanosleep, so that waiting ranks do not steal CPU from working ones); each rank
 * records CLOCK_MONOTONIC at the start and end of its sweeps, and its CPU time. Repeat 0
 * is a warm-up and is not reported.
 *
 * Build:  mpicc -O2 -fopenmp placement_kernel.c -o placement_kernel
 *         (without MPI: gcc -O2 -fopenmp -DPLACEMENT_NO_MPI ..., one process only)
 * Run:    OMP_NUM_THREADS=2 mpiexec -n 2 -bind-to core ./placement_kernel N SWEEPS REPEATS
 * Output: rank 0 prints one line of JSON per rank.
 */
#define _GNU_SOURCE
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef PLACEMENT_NO_MPI
#include <mpi.h>
#else
/* Built with plain gcc -fopenmp -DPLACEMENT_NO_MPI where no MPI is installed: one process,
 * and the few MPI calls of this file become the trivial one-process versions below. */
typedef int MPI_Request;
#define MPI_COMM_WORLD 0
#define MPI_CHAR 0
#define MPI_STATUS_IGNORE NULL
static int MPI_Init(int *argc, char ***argv) { (void)argc; (void)argv; return 0; }
static int MPI_Comm_rank(int comm, int *rank) { (void)comm; *rank = 0; return 0; }
static int MPI_Comm_size(int comm, int *size) { (void)comm; *size = 1; return 0; }
static int MPI_Abort(int comm, int code) { (void)comm; exit(code); }
static int MPI_Ibarrier(int comm, MPI_Request *req) { (void)comm; *req = 0; return 0; }
static int MPI_Test(MPI_Request *req, int *done, void *status) {
    (void)req; (void)status; *done = 1; return 0;
}
static int MPI_Gather(const void *send, int n, int type, void *recv, int m, int rtype,
                      int root, int comm) {
    (void)type; (void)m; (void)rtype; (void)root; (void)comm;
    memcpy(recv, send, (size_t)n);
    return 0;
}
static int MPI_Finalize(void) { return 0; }
#endif

#define ALPHA (1.0 - 1.0 / 1024.0)
#define LINE 65536 /* bytes of JSON per rank */
#define MAX_THREADS 256
#define MAX_REPEATS 256

static double now(int clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A barrier that sleeps while it waits: a spinning MPI_Barrier would compete for the cores
 * with the ranks that are still working whenever there are more ranks than cores. */
static void sleeping_barrier(void) {
    MPI_Request req;
    int done = 0;
    struct timespec pause = {0, 200000}; /* 0.2 ms */
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    for (;;) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        nanosleep(&pause, NULL);
    }
}

/* Append the CPUs of a set as a JSON list: [0,1,5]. */
static int put_cpus(char *out, size_t room, const cpu_set_t *set) {
    int n = snprintf(out, room, "[");
    int first = 1;
    for (int c = 0; c < CPU_SETSIZE && (size_t)n < room; c++)
        if (CPU_ISSET(c, set)) {
            n += snprintf(out + n, room - n, first ? "%d" : ",%d", c);
            first = 0;
        }
    if ((size_t)n < room)
        n += snprintf(out + n, room - n, "]");
    return n;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 4) {
        if (rank == 0)
            fprintf(stderr, "usage: %s N SWEEPS REPEATS\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    long n = atol(argv[1]);
    int sweeps = atoi(argv[2]), repeats = atoi(argv[3]);
    if (n < size || sweeps < 1 || repeats < 1 || repeats > MAX_REPEATS) {
        if (rank == 0)
            fprintf(stderr, "need N >= ranks, SWEEPS >= 1, 1 <= REPEATS <= %d\n",
                    MAX_REPEATS);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* the rank's block [lo, hi): sizes differ by at most one */
    long base = n / size, rest = n % size;
    long lo = rank * base + (rank < rest ? rank : rest);
    long hi = lo + base + (rank < rest ? 1 : 0);
    long nl = hi - lo;

    /* What the launcher (taskset, mpiexec -bind-to) applied. With OMP_PROC_BIND set, libgomp
     * has already bound this initial thread to its first place when main() starts, but it
     * builds its place list inside the mask it was given: the union of the places is that
     * mask. Without places, the thread's own mask is still the launcher's. */
    cpu_set_t rank_mask;
    sched_getaffinity(0, sizeof rank_mask, &rank_mask);
    if (omp_get_num_places() > 0) {
        CPU_ZERO(&rank_mask);
        for (int p = 0; p < omp_get_num_places(); p++) {
            int ids[CPU_SETSIZE];
            int m = omp_get_place_num_procs(p);
            if (m > CPU_SETSIZE)
                m = CPU_SETSIZE;
            omp_get_place_proc_ids(p, ids);
            for (int j = 0; j < m; j++)
                CPU_SET(ids[j], &rank_mask);
        }
    }

    int threads = omp_get_max_threads();
    if (threads > MAX_THREADS) {
        if (rank == 0)
            fprintf(stderr, "at most %d threads\n", MAX_THREADS);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    double *x = malloc(sizeof(double) * (size_t)nl);
    double *y = malloc(sizeof(double) * (size_t)nl);
    if (!x || !y)
        MPI_Abort(MPI_COMM_WORLD, 3);
    static cpu_set_t seen[MAX_THREADS], bound[MAX_THREADS];
    static long vcsw[MAX_THREADS], ivcsw[MAX_THREADS];
    double start[MAX_REPEATS], end[MAX_REPEATS], cpu[MAX_REPEATS];
    for (int t = 0; t < MAX_THREADS; t++)
        CPU_ZERO(&seen[t]);

#pragma omp parallel for schedule(static)
    for (long i = 0; i < nl; i++) { /* first touch by the thread that will use it */
        y[i] = 1.0 + 0.25 * (double)((lo + i) % 13);
        x[i] = 0.0;
    }

    for (int rep = 0; rep <= repeats; rep++) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < nl; i++)
            x[i] = 0.0;
        sleeping_barrier();
        double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        /* [sweeps] every thread updates its own slice, SWEEPS times */
#pragma omp parallel
        {
            int t = omp_get_thread_num();
            struct rusage r0, r1;
            getrusage(RUSAGE_THREAD, &r0);
            for (int s = 0; s < sweeps; s++) {
#pragma omp for schedule(static) nowait
                for (long i = 0; i < nl; i++)
                    x[i] = ALPHA * x[i] + y[i];
                CPU_SET(sched_getcpu(), &seen[t]);
            }
            getrusage(RUSAGE_THREAD, &r1);
            if (rep > 0) {
                vcsw[t] += r1.ru_nvcsw - r0.ru_nvcsw;
                ivcsw[t] += r1.ru_nivcsw - r0.ru_nivcsw;
            }
            if (rep == 0)
                sched_getaffinity(0, sizeof bound[t], &bound[t]);
        }
        /* [sweeps end] */
        double t1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        if (rep > 0) {
            start[rep - 1] = t0;
            end[rep - 1] = t1;
            cpu[rep - 1] = c1 - c0;
        }
    }
    double checksum = 0.0;
    for (long i = 0; i < nl; i++)
        checksum += x[i];

    char *line = malloc(LINE);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    size_t k = 0;
    k += snprintf(line + k, LINE - k,
                  "{\"rank\":%d,\"ranks\":%d,\"threads\":%d,\"host\":\"%s\",\"lo\":%ld,"
                  "\"hi\":%ld,\"checksum\":%.17g,\"rank_affinity\":",
                  rank, size, threads, host, lo, hi, checksum);
    k += put_cpus(line + k, LINE - k, &rank_mask);
    const char *names[3] = {"start", "end", "cpu_s"};
    double *lists[3] = {start, end, cpu};
    for (int l = 0; l < 3; l++) {
        k += snprintf(line + k, LINE - k, ",\"%s\":[", names[l]);
        for (int r = 0; r < repeats && k < LINE; r++)
            k += snprintf(line + k, LINE - k, r ? ",%.9f" : "%.9f", lists[l][r]);
        k += snprintf(line + k, LINE - k, "]");
    }
    k += snprintf(line + k, LINE - k, ",\"per_thread\":[");
    for (int t = 0; t < threads && k < LINE; t++) {
        k += snprintf(line + k, LINE - k, "%s{\"thread\":%d,\"affinity\":", t ? "," : "", t);
        k += put_cpus(line + k, LINE - k, &bound[t]);
        k += snprintf(line + k, LINE - k, ",\"cpus_seen\":");
        k += put_cpus(line + k, LINE - k, &seen[t]);
        k += snprintf(line + k, LINE - k, ",\"voluntary_ctxt\":%ld,\"involuntary_ctxt\":%ld}",
                      vcsw[t], ivcsw[t]);
    }
    k += snprintf(line + k, LINE - k, "]}");
    if (k >= LINE - 1)
        MPI_Abort(MPI_COMM_WORLD, 4);

    char *all = rank == 0 ? malloc((size_t)LINE * (size_t)size) : NULL;
    if (rank == 0 && !all)
        MPI_Abort(MPI_COMM_WORLD, 3);
    MPI_Gather(line, LINE, MPI_CHAR, all, LINE, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < size; r++)
            printf("%s\n", all + (size_t)r * LINE);
        fflush(stdout);
        free(all);
    }
    free(line);
    free(x);
    free(y);
    MPI_Finalize();
    return 0;
}
