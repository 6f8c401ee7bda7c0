/* MPI through dlopen (tq_mpi.h): Open MPI's handles are addresses of its predefined globals
 * (MPI_COMM_WORLD is &ompi_mpi_comm_world, and so on), found with dlsym. */
#include "tq_mpi.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*init_fn)(int *, char ***);
typedef int (*comm_int_fn)(void *, int *);
typedef int (*allreduce_fn)(const void *, void *, int, void *, void *, void *);
typedef int (*allgatherv_fn)(const void *, int, void *, void *, const int *, const int *, void *, void *);
typedef int (*comm_fn)(void *);
typedef int (*abort_fn)(void *, int);
typedef int (*void_fn)(void);
typedef int (*flag_fn)(int *);

static struct {
    int ready, size, rank;
    void *comm_world, *t_float, *t_double, *t_byte, *op_sum;
    allreduce_fn allreduce;
    allgatherv_fn allgatherv;
    comm_fn barrier;
    abort_fn abort;
    void_fn finalize;
    flag_fn finalized;
    char error[256];
} mpi = {.size = 1};

#define MPI_IN_PLACE_ ((void *)1) /* Open MPI's MPI_IN_PLACE */
#define CHUNK (1 << 30)           /* MPI counts are int: collectives go in chunks below 2^31 */

const char *tqk_mpi_error(void) { return mpi.error; }
int tqk_mpi_size(void) { return mpi.size; }
int tqk_mpi_rank(void) { return mpi.rank; }

static void finalize_at_exit(void) {
    int done = 0;
    if (mpi.finalized && mpi.finalized(&done) == 0 && !done) mpi.finalize();
}

static void *need(void *lib, const char *name, int *missing) {
    void *p = dlsym(lib, name);
    if (!p) *missing = 1;
    return p;
}

int tqk_mpi_init(void) {
    if (mpi.ready) return 0;
    const char *world = getenv("OMPI_COMM_WORLD_SIZE");
    if (!world || atoi(world) <= 1) {
        mpi.ready = 1;
        return 0;
    }
    /* RTLD_GLOBAL: Open MPI's own plug-ins resolve libmpi's symbols from the global scope. */
    void *lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(mpi.error, sizeof mpi.error, "launched under mpirun but Open MPI's libmpi.so.40 cannot be loaded: %s",
                 dlerror());
        return -1;
    }
    int missing = 0;
    init_fn init = (init_fn)need(lib, "MPI_Init", &missing);
    comm_int_fn comm_size = (comm_int_fn)need(lib, "MPI_Comm_size", &missing);
    comm_int_fn comm_rank = (comm_int_fn)need(lib, "MPI_Comm_rank", &missing);
    flag_fn initialized = (flag_fn)need(lib, "MPI_Initialized", &missing);
    mpi.allreduce = (allreduce_fn)need(lib, "MPI_Allreduce", &missing);
    mpi.allgatherv = (allgatherv_fn)need(lib, "MPI_Allgatherv", &missing);
    mpi.barrier = (comm_fn)need(lib, "MPI_Barrier", &missing);
    mpi.abort = (abort_fn)need(lib, "MPI_Abort", &missing);
    mpi.finalize = (void_fn)need(lib, "MPI_Finalize", &missing);
    mpi.finalized = (flag_fn)need(lib, "MPI_Finalized", &missing);
    mpi.comm_world = need(lib, "ompi_mpi_comm_world", &missing);
    mpi.t_float = need(lib, "ompi_mpi_float", &missing);
    mpi.t_double = need(lib, "ompi_mpi_double", &missing);
    mpi.t_byte = need(lib, "ompi_mpi_byte", &missing);
    mpi.op_sum = need(lib, "ompi_mpi_op_sum", &missing);
    if (missing) {
        snprintf(mpi.error, sizeof mpi.error, "libmpi.so.40 lacks an MPI symbol (not Open MPI 4 or later?)");
        return -1;
    }
    int already = 0;
    initialized(&already);
    if (!already && init(NULL, NULL) != 0) {
        snprintf(mpi.error, sizeof mpi.error, "MPI_Init failed");
        return -1;
    }
    if (!already) atexit(finalize_at_exit);
    comm_size(mpi.comm_world, &mpi.size);
    comm_rank(mpi.comm_world, &mpi.rank);
    mpi.ready = 1;
    return 0;
}

static int allreduce(void *x, int64_t n, void *type, size_t elem) {
    if (mpi.size <= 1) return 0;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int c = (int)(n - i < CHUNK ? n - i : CHUNK);
        int rc = mpi.allreduce(MPI_IN_PLACE_, (char *)x + (size_t)i * elem, c, type, mpi.op_sum, mpi.comm_world);
        if (rc) return rc;
    }
    return 0;
}

int tqk_mpi_allreduce_f32(float *x, int64_t n) { return allreduce(x, n, mpi.t_float, sizeof(float)); }
int tqk_mpi_allreduce_f64(double *x, int64_t n) { return allreduce(x, n, mpi.t_double, sizeof(double)); }

int tqk_mpi_allgatherv(const void *send, int64_t bytes, void *recv, const int64_t *counts, const int64_t *displs) {
    if (mpi.size <= 1) {
        if (bytes) memmove((char *)recv + displs[0], send, (size_t)bytes);
        return 0;
    }
    /* In rounds of at most CHUNK bytes per rank, so every count and offset fits an int. */
    int p = mpi.size;
    int *c = malloc(sizeof(int) * (size_t)p), *d = malloc(sizeof(int) * (size_t)p);
    int64_t longest = 0;
    for (int r = 0; r < p; r++) longest = counts[r] > longest ? counts[r] : longest;
    char *stage = malloc((size_t)(longest < CHUNK ? longest : CHUNK) * (size_t)p + 1);
    int rc = (!c || !d || !stage) ? -1 : 0;
    for (int64_t off = 0; rc == 0 && off < longest; off += CHUNK) {
        int total = 0;
        for (int r = 0; r < p; r++) {
            int64_t left = counts[r] - off;
            c[r] = (int)(left <= 0 ? 0 : (left < CHUNK ? left : CHUNK));
            d[r] = total;
            total += c[r];
        }
        int64_t mine = bytes - off;
        int sc = (int)(mine <= 0 ? 0 : (mine < CHUNK ? mine : CHUNK));
        rc = mpi.allgatherv((const char *)send + (mine > 0 ? off : 0), sc, mpi.t_byte, stage, c, d, mpi.t_byte,
                            mpi.comm_world);
        for (int r = 0; rc == 0 && r < p; r++) memcpy((char *)recv + displs[r] + off, stage + d[r], (size_t)c[r]);
    }
    free(c);
    free(d);
    free(stage);
    return rc;
}

int tqk_mpi_barrier(void) { return mpi.size <= 1 ? 0 : mpi.barrier(mpi.comm_world); }

void tqk_mpi_abort(int code) {
    if (mpi.size > 1) mpi.abort(mpi.comm_world, code);
    exit(code);
}
