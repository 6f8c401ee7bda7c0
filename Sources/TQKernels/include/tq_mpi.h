/* tq_mpi.h: the few MPI collectives tensor-parallel reconstruction needs, from Open MPI's
 * libmpi.so.40 loaded at run time. Nothing links MPI at build time: a process started by
 * `mpirun` (OMPI_COMM_WORLD_SIZE set) joins the job on first use; any other process is a world
 * of one and every call below is a no-op copy. All calls come from one thread (the caller's),
 * collective over MPI_COMM_WORLD; the buffers are the caller's. */
#ifndef TQ_MPI_H
#define TQ_MPI_H

#include <stdint.h>

#ifndef TQK_API
#define TQK_API __attribute__((visibility("hidden")))
#endif

/* Joins the MPI job when launched under mpirun; returns 0, or -1 with a message in
 * tqk_mpi_error() (libmpi.so.40 missing, MPI_Init failed). Idempotent. Registers MPI_Finalize
 * at exit. */
TQK_API int tqk_mpi_init(void);
TQK_API const char *tqk_mpi_error(void);
/* The world's size and this process's rank (1 and 0 outside mpirun or before tqk_mpi_init). */
TQK_API int tqk_mpi_size(void);
TQK_API int tqk_mpi_rank(void);
/* In-place sums over all ranks. Every rank gets the same result. Return 0 or an MPI error code. */
TQK_API int tqk_mpi_allreduce_f32(float *x, int64_t n);
TQK_API int tqk_mpi_allreduce_f64(double *x, int64_t n);
/* Each rank's `bytes` bytes of `send`, concatenated in rank order into `recv`; counts[r] and
 * displs[r] give rank r's length and offset there. */
TQK_API int tqk_mpi_allgatherv(const void *send, int64_t bytes, void *recv, const int64_t *counts,
                               const int64_t *displs);
TQK_API int tqk_mpi_barrier(void);
/* Ends the whole job with `code` (a rank that failed must not leave the others waiting). */
TQK_API void tqk_mpi_abort(int code);

#endif
