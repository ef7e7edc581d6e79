/* MPI I/O through librustre: N-1 strided (one shared file, interleaved 47008-byte records) and
 * N-N (a file per rank), each written, then read back by a different rank (rank r verifies rank
 * (r+1) % n's data) with every byte checked. Prints each phase's bandwidth.
 *
 *   mpicc -O2 -I libclient/include rustre_mpi_io.c -L target/debug -lrustre -o rustre_mpi_io
 *   mpirun -n 4 ./rustre_mpi_io CLIENT_CONFIG [RECORDS_PER_RANK] [DIRECTORY] [SHARED_STRIPE_KIB]
 *
 * The shared file is striped over every OST (SHARED_STRIPE_KIB, default 1024, per chunk); each
 * rank's own file lives on one OST (rank % OSTs), as IOR's easy and hard phases are usually laid out.
 *
 * Exit status 0 only if every rank verified every byte. */
#include "rustre.h"

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD 47008

static int rank, nranks;

static unsigned char byte_at(uint64_t seed, uint64_t pos) {
    uint64_t x = (pos + 1) * 0x9E3779B97F4A7C15ull ^ (seed + 1) * 0xD6E8FEB86659FD93ull;
    return (unsigned char)(x >> 29);
}

static void fill(unsigned char *buf, size_t len, uint64_t seed, uint64_t pos) {
    for (size_t i = 0; i < len; i++) buf[i] = byte_at(seed, pos + i);
}

static void die(const char *what, long long rc) {
    char msg[512];
    rustre_last_error(msg, sizeof msg);
    fprintf(stderr, "rank %d: %s failed: %lld (%s): %s\n", rank, what, rc, rustre_strerror((int)rc), msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Wall time of a phase: from a barrier to the slowest rank's end. */
static double phase_seconds(double start) {
    double mine = MPI_Wtime() - start, slowest = 0;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return slowest;
}

static void report(const char *phase, double secs, uint64_t bytes) {
    if (rank == 0)
        printf("%-12s %8.3f s %10.1f MiB/s  (%llu bytes, %d ranks)\n", phase, secs,
               (double)bytes / secs / 1048576.0, (unsigned long long)bytes, nranks);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (argc < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: %s CLIENT_CONFIG [RECORDS_PER_RANK] [DIRECTORY] [SHARED_STRIPE_KIB]\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    const char *config = argv[1];
    long records = argc > 2 ? strtol(argv[2], NULL, 10) : 64;
    const char *dir = argc > 3 ? argv[3] : "/mpi-io";
    long stripe_kib = argc > 4 ? strtol(argv[4], NULL, 10) : 1024;
    if (records <= 0 || records > 1000000 || stripe_kib < 64 || stripe_kib > 4096 || stripe_kib % 64) {
        if (rank == 0) fprintf(stderr, "RECORDS_PER_RANK must be 1..=1000000, SHARED_STRIPE_KIB a multiple of 64 in 64..=4096\n");
        MPI_Finalize();
        return 2;
    }

    rustre_client *h = NULL;
    long long rc = rustre_connect(config, &h);
    if (rc != 0) die("rustre_connect", rc);
    rustre_fsinfo fs;
    if ((rc = rustre_statfs(h, &fs)) != 0) die("rustre_statfs", rc);
    uint32_t osts = fs.ost_count ? fs.ost_count : 1;

    char shared[512], mine[512], theirs[512];
    snprintf(shared, sizeof shared, "%s/shared", dir);
    snprintf(mine, sizeof mine, "%s/rank.%d", dir, rank);
    snprintf(theirs, sizeof theirs, "%s/rank.%d", dir, (rank + 1) % nranks);
    if (rank == 0) {
        rc = rustre_mkdir(h, dir, 0755);
        if (rc != 0 && rc != -EEXIST) die("rustre_mkdir", rc);
        rustre_layout wide = {(uint32_t)stripe_kib * 1024, osts, -1};
        int fd;
        rc = rustre_open(h, shared, O_CREAT | O_TRUNC | O_RDWR, 0644, &wide, &fd);
        if (rc != 0) die("rustre_open shared (create)", rc);
        if ((rc = rustre_close(h, fd)) != 0) die("rustre_close", rc);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    unsigned char *buf = malloc(RECORD), *expect = malloc(RECORD);
    uint64_t per_rank = (uint64_t)records * RECORD, total = per_rank * (uint64_t)nranks;
    long bad = 0;
    int fd;

    /* ---- N-1 strided write: record i of rank r at (i * n + r) * RECORD ---- */
    if ((rc = rustre_open(h, shared, O_RDWR, 0, NULL, &fd)) != 0) die("rustre_open shared", rc);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (long i = 0; i < records; i++) {
        uint64_t off = ((uint64_t)i * nranks + rank) * RECORD;
        fill(buf, RECORD, 1, off);
        if ((rc = rustre_pwrite(h, fd, buf, RECORD, off)) != RECORD) die("rustre_pwrite shared", rc);
    }
    if ((rc = rustre_close(h, fd)) != 0) die("rustre_close shared", rc);
    double n1_write = phase_seconds(t0);
    report("N-1 write", n1_write, total);

    /* ---- N-N write: rank r writes its own file sequentially, one OST per file ---- */
    rustre_layout narrow = {1 << 20, 1, (int32_t)(rank % osts)};
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if ((rc = rustre_open(h, mine, O_CREAT | O_TRUNC | O_WRONLY, 0644, &narrow, &fd)) != 0) die("rustre_open mine", rc);
    for (long i = 0; i < records; i++) {
        uint64_t off = (uint64_t)i * RECORD;
        fill(buf, RECORD, 2 + (uint64_t)rank, off);
        if ((rc = rustre_pwrite(h, fd, buf, RECORD, off)) != RECORD) die("rustre_pwrite mine", rc);
    }
    if ((rc = rustre_close(h, fd)) != 0) die("rustre_close mine", rc);
    double nn_write = phase_seconds(t0);
    report("N-N write", nn_write, total);

    /* ---- N-1 read: rank r reads and verifies rank (r+1)'s records ---- */
    int other = (rank + 1) % nranks;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if ((rc = rustre_open(h, shared, O_RDONLY, 0, NULL, &fd)) != 0) die("rustre_open shared (read)", rc);
    rustre_attr st;
    if ((rc = rustre_fstat(h, fd, &st)) != 0) die("rustre_fstat shared", rc);
    if (st.size != total) {
        fprintf(stderr, "rank %d: shared file is %llu bytes, expected %llu\n", rank, (unsigned long long)st.size,
                (unsigned long long)total);
        bad++;
    }
    for (long i = 0; i < records; i++) {
        uint64_t off = ((uint64_t)i * nranks + other) * RECORD;
        if ((rc = rustre_pread(h, fd, buf, RECORD, off)) != RECORD) die("rustre_pread shared", rc);
        fill(expect, RECORD, 1, off);
        if (memcmp(buf, expect, RECORD) != 0) {
            if (bad < 5) fprintf(stderr, "rank %d: shared record %ld of rank %d differs\n", rank, i, other);
            bad++;
        }
    }
    if ((rc = rustre_close(h, fd)) != 0) die("rustre_close shared (read)", rc);
    double n1_read = phase_seconds(t0);
    report("N-1 read", n1_read, total);

    /* ---- N-N read: rank r reads and verifies rank (r+1)'s file ---- */
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if ((rc = rustre_open(h, theirs, O_RDONLY, 0, NULL, &fd)) != 0) die("rustre_open theirs", rc);
    for (long i = 0; i < records; i++) {
        uint64_t off = (uint64_t)i * RECORD;
        if ((rc = rustre_pread(h, fd, buf, RECORD, off)) != RECORD) die("rustre_pread theirs", rc);
        fill(expect, RECORD, 2 + (uint64_t)other, off);
        if (memcmp(buf, expect, RECORD) != 0) {
            if (bad < 5) fprintf(stderr, "rank %d: record %ld of rank %d's file differs\n", rank, i, other);
            bad++;
        }
    }
    if ((rc = rustre_pread(h, fd, buf, RECORD, per_rank)) != 0) die("rustre_pread past the end", rc);
    if ((rc = rustre_close(h, fd)) != 0) die("rustre_close theirs", rc);
    double nn_read = phase_seconds(t0);
    report("N-N read", nn_read, total);

    long all_bad = 0;
    MPI_Allreduce(&bad, &all_bad, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("N-1/N-N write ratio %.2f, read ratio %.2f\n", nn_write / n1_write, nn_read / n1_read);
        printf("%s: %ld mismatched records\n", all_bad ? "FAILED" : "verified every byte", all_bad);
    }

    /* ---- clean up ---- */
    MPI_Barrier(MPI_COMM_WORLD);
    if ((rc = rustre_unlink(h, mine)) != 0) die("rustre_unlink mine", rc);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        if ((rc = rustre_unlink(h, shared)) != 0) die("rustre_unlink shared", rc);
        if ((rc = rustre_rmdir(h, dir)) != 0) die("rustre_rmdir", rc);
    }
    if ((rc = rustre_disconnect(h)) != 0) die("rustre_disconnect", rc);
    free(buf);
    free(expect);
    MPI_Finalize();
    return all_bad ? 1 : 0;
}
