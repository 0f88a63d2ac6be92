/* An MPI program for the application-task tests: each rank prints
 * "rank R size S host H pid P", then (argv[2] > 0) sleeps that many seconds (a fraction too),
 * and rank 0 exits with the code argv[1] (default 0). Started by MPI_Comm_spawn, it joins a barrier on its
 * parent intercommunicator at the end, as spawn mode asks of a program. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int rank, size, len;
    char host[MPI_MAX_PROCESSOR_NAME];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(host, &len);
    printf("rank %d size %d host %s pid %d\n", rank, size, host, (int)getpid());
    fflush(stdout);
    if (argc > 2 && atof(argv[2]) > 0) {
        double seconds = atof(argv[2]);
        struct timespec pause = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
        nanosleep(&pause, NULL);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Comm parent;
    MPI_Comm_get_parent(&parent);
    if (parent != MPI_COMM_NULL) {
        MPI_Barrier(parent);
        MPI_Comm_disconnect(&parent);
    }
    MPI_Finalize();
    return (rank == 0 && argc > 1) ? atoi(argv[1]) : 0;
}
