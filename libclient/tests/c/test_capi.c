/* Exercises every function of librustre's C ABI against a running cluster, including the error
 * paths (bad handle, NULL pointers, bad paths, EEXIST, ENOENT, ENOTDIR, EISDIR, short buffers).
 *
 *   test_capi CLIENT_CONFIG MDS_ADDRESS
 *
 * Exits 0 when every check passes; prints the failing check and the library's message otherwise. */
#include "rustre.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int checks;

#define CHECK(expr, want)                                                                          \
    do {                                                                                           \
        long long got_ = (long long)(expr);                                                        \
        long long want_ = (long long)(want);                                                       \
        checks++;                                                                                  \
        if (got_ != want_) {                                                                       \
            char msg_[512];                                                                        \
            rustre_last_error(msg_, sizeof msg_);                                                  \
            fprintf(stderr, "%s:%d: %s = %lld (%s), want %lld (%s)\n  last error: %s\n", __FILE__,  \
                    __LINE__, #expr, got_, rustre_strerror((int)got_), want_,                      \
                    rustre_strerror((int)want_), msg_);                                            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define TRUE(cond)                                                                                 \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static unsigned char byte_at(uint64_t seed, uint64_t pos) {
    uint64_t x = (pos + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xD6E8FEB86659FD93ull;
    return (unsigned char)(x >> 29);
}

static void fill(unsigned char *buf, size_t len, uint64_t seed, uint64_t pos) {
    for (size_t i = 0; i < len; i++) buf[i] = byte_at(seed, pos + i);
}

/* ---- threads sharing one handle ---------------------------------------------------------- */

#define THREADS 4
#define REC 47008
#define PER_THREAD 8

struct worker {
    rustre_client *h;
    int fd;
    int index;
    int result;
};

static void *writer(void *arg) {
    struct worker *w = arg;
    unsigned char *buf = malloc(REC);
    w->result = 0;
    for (int r = 0; r < PER_THREAD && w->result == 0; r++) {
        uint64_t rec = (uint64_t)r * THREADS + (uint64_t)w->index;
        fill(buf, REC, 5, rec * REC);
        int64_t n = rustre_pwrite(w->h, w->fd, buf, REC, rec * REC);
        if (n != REC) w->result = n < 0 ? (int)n : -EIO;
    }
    /* The last error is per thread: a failure here is not seen by the others. */
    if (rustre_stat(w->h, "/no-such-file-in-thread", NULL) != -EFAULT) w->result = -EINVAL;
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CLIENT_CONFIG MDS_ADDRESS\n", argv[0]);
        return 2;
    }
    const char *config = argv[1], *address = argv[2];
    rustre_client *h = NULL, *h2 = NULL;
    rustre_attr st;
    int fd = -1, fd2 = -1;

    /* ---- connect ---- */
    CHECK(rustre_connect(NULL, &h), -EFAULT);
    CHECK(rustre_connect(config, NULL), -EFAULT);
    CHECK(rustre_connect("/nonexistent/client.toml", &h), -EINVAL);
    CHECK(rustre_connect("udp://127.0.0.1:1", &h), -EINVAL);
    CHECK(rustre_connect(config, &h), 0);
    TRUE(h != NULL);
    CHECK(rustre_connect(address, &h2), 0);

    /* ---- bad handles, NULL pointers, bad paths ---- */
    rustre_client *bogus = (rustre_client *)(uintptr_t)0x1234;
    CHECK(rustre_stat(bogus, "/", &st), -EBADF);
    CHECK(rustre_mkdir(NULL, "/x", 0755), -EBADF);
    CHECK(rustre_close(bogus, 3), -EBADF);
    CHECK(rustre_stat(h, NULL, &st), -EFAULT);
    CHECK(rustre_stat(h, "/", NULL), -EFAULT);
    CHECK(rustre_stat(h, "/\xff\xfe", &st), -EINVAL);
    CHECK(rustre_stat(h, "", &st), -ENOENT);
    char *longpath = malloc(5000);
    memset(longpath, 'a', 4999);
    longpath[0] = '/';
    longpath[4999] = 0;
    CHECK(rustre_stat(h, longpath, &st), -ENAMETOOLONG);
    free(longpath);
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[0] = '/';
    longname[sizeof longname - 1] = 0;
    CHECK(rustre_mkdir(h, longname, 0755), -ENAMETOOLONG);

    /* ---- stat, mkdir ---- */
    CHECK(rustre_stat(h, "/", &st), 0);
    TRUE(S_ISDIR(st.mode));
    CHECK(rustre_mkdir(h, "/capi", 0755), 0);
    CHECK(rustre_mkdir(h, "/capi", 0755), -EEXIST);
    CHECK(rustre_mkdir(h, "/nope/x", 0755), -ENOENT);
    CHECK(rustre_stat(h, "/capi", &st), 0);
    TRUE(S_ISDIR(st.mode) && (st.mode & 07777) == 0755);

    /* ---- open ---- */
    rustre_layout lay = {65536, 2, -1};
    CHECK(rustre_open(h, "/capi/f", O_CREAT | O_EXCL | O_RDWR, 0644, &lay, &fd), 0);
    TRUE(fd >= 0);
    CHECK(rustre_open(h, "/capi/f", O_CREAT | O_EXCL | O_RDWR, 0644, NULL, &fd2), -EEXIST);
    CHECK(rustre_open(h, "/capi/missing", O_RDONLY, 0, NULL, &fd2), -ENOENT);
    CHECK(rustre_open(h, "/capi/f/x", O_RDONLY, 0, NULL, &fd2), -ENOTDIR);
    CHECK(rustre_open(h, "/capi", O_RDWR, 0, NULL, &fd2), -EISDIR);
    CHECK(rustre_open(h, "/capi/g", O_CREAT | O_RDWR, 0644, NULL, NULL), -EFAULT);
    CHECK(rustre_open(h, NULL, O_RDONLY, 0, NULL, &fd2), -EFAULT);
    rustre_layout badlay = {1000, 1, -1};
    CHECK(rustre_open(h, "/capi/g", O_CREAT | O_RDWR, 0644, &badlay, &fd2), -EINVAL);
    CHECK(rustre_open(h, "/capi/g", O_RDWR | O_WRONLY, 0644, NULL, &fd2), -EINVAL);

    /* ---- pwrite, pread ---- */
    size_t len = 1 << 20;
    unsigned char *data = malloc(len), *back = malloc(len + 16384);
    fill(data, len, 1, 12345);
    CHECK(rustre_pwrite(h, fd, data, len, 12345), (long long)len);
    memset(back, 0xAA, len + 16384);
    CHECK(rustre_pread(h, fd, back, len + 16384, 0), (long long)len + 12345);
    for (size_t i = 0; i < 12345; i++) TRUE(back[i] == 0);
    TRUE(memcmp(back + 12345, data, len - 12345) == 0);
    CHECK(rustre_pread(h, fd, back, 4096, len + 12345 - 100), 100);
    TRUE(memcmp(back, data + len - 100, 100) == 0);
    CHECK(rustre_pread(h, fd, back, 4096, 1ull << 40), 0);
    CHECK(rustre_pread(h, fd, NULL, 10, 0), -EFAULT);
    CHECK(rustre_pwrite(h, fd, NULL, 10, 0), -EFAULT);
    CHECK(rustre_pread(h, fd, back, SIZE_MAX, 0), -EINVAL);
    CHECK(rustre_pread(h, 9999, back, 10, 0), -EBADF);
    CHECK(rustre_pwrite(h, 9999, data, 10, 0), -EBADF);
    CHECK(rustre_pread(h, fd, back, 0, 0), 0);
    CHECK(rustre_pwrite(h, fd, data, 10, UINT64_MAX - 4), -EFBIG);

    /* ---- fsync, fstat, truncate ---- */
    CHECK(rustre_fsync(h, fd), 0);
    CHECK(rustre_fsync(h, 9999), -EBADF);
    CHECK(rustre_fstat(h, fd, &st), 0);
    TRUE(st.size == len + 12345 && S_ISREG(st.mode) && st.stripe_count == 2 && st.blksize == 65536);
    CHECK(rustre_fstat(h, fd, NULL), -EFAULT);
    CHECK(rustre_fstat(h, 9999, &st), -EBADF);
    CHECK(rustre_ftruncate(h, fd, 100000), 0);
    CHECK(rustre_fstat(h, fd, &st), 0);
    TRUE(st.size == 100000);
    CHECK(rustre_close(h, fd), 0);
    CHECK(rustre_close(h, fd), -EBADF);
    CHECK(rustre_stat(h, "/capi/f", &st), 0);
    TRUE(st.size == 100000);
    CHECK(rustre_truncate(h, "/capi/f", 50001), 0);
    CHECK(rustre_stat(h, "/capi/f", &st), 0);
    TRUE(st.size == 50001);
    CHECK(rustre_truncate(h, "/capi", 0), -EISDIR);
    CHECK(rustre_truncate(h, "/capi/none", 0), -ENOENT);
    CHECK(rustre_open(h, "/capi/f", O_RDONLY, 0, NULL, &fd), 0);
    CHECK(rustre_pwrite(h, fd, data, 10, 0), -EBADF);
    CHECK(rustre_ftruncate(h, fd, 0), -EBADF);
    CHECK(rustre_pread(h, fd, back, len, 0), 50001);
    for (size_t i = 0; i < 12345; i++) TRUE(back[i] == 0);
    TRUE(memcmp(back + 12345, data, 50001 - 12345) == 0);
    CHECK(rustre_close(h, fd), 0);

    /* ---- getstripe, setstripe ---- */
    rustre_layout got;
    rustre_ost_object objs[8];
    CHECK(rustre_getstripe(h, "/capi/f", &got, NULL, 0), 2);
    TRUE(got.stripe_size == 65536 && got.stripe_count == 2);
    CHECK(rustre_getstripe(h, "/capi/f", &got, objs, 1), -ERANGE);
    CHECK(rustre_getstripe(h, "/capi/f", &got, objs, 8), 2);
    TRUE(objs[0].ost_index != objs[1].ost_index);
    CHECK(rustre_getstripe(h, "/capi/f", NULL, objs, 8), -EFAULT);
    CHECK(rustre_getstripe(h, "/capi/f", &got, NULL, 8), -EFAULT);
    CHECK(rustre_getstripe(h, "/capi/none", &got, objs, 8), -ENOENT);
    rustre_layout dirlay = {131072, 1, -1};
    CHECK(rustre_setstripe(h, "/capi", &dirlay), 0);
    CHECK(rustre_setstripe(h, "/capi", &badlay), -EINVAL);
    CHECK(rustre_setstripe(h, "/capi", NULL), -EFAULT);
    CHECK(rustre_open(h, "/capi/inherits", O_CREAT | O_WRONLY, 0600, NULL, &fd), 0);
    CHECK(rustre_fstat(h, fd, &st), 0);
    TRUE(st.blksize == 131072 && st.stripe_count == 1);
    CHECK(rustre_close(h, fd), 0);

    /* ---- rename ---- */
    CHECK(rustre_rename(h, "/capi/f", "/capi/h"), 0);
    CHECK(rustre_stat(h, "/capi/f", &st), -ENOENT);
    CHECK(rustre_stat(h, "/capi/h", &st), 0);
    CHECK(rustre_rename(h, "/capi/none", "/capi/x"), -ENOENT);
    CHECK(rustre_rename(h, NULL, "/capi/x"), -EFAULT);

    /* ---- threads sharing one handle: disjoint 47008-byte records of one file ---- */
    CHECK(rustre_open(h, "/capi/shared", O_CREAT | O_RDWR, 0644, &lay, &fd), 0);
    pthread_t tid[THREADS];
    struct worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){h, fd, t, 0};
        TRUE(pthread_create(&tid[t], NULL, writer, &w[t]) == 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        CHECK(w[t].result, 0);
    }
    size_t total = (size_t)REC * THREADS * PER_THREAD;
    unsigned char *all = malloc(total), *expect = malloc(total);
    fill(expect, total, 5, 0);
    CHECK(rustre_pread(h, fd, all, total, 0), (long long)total);
    TRUE(memcmp(all, expect, total) == 0);
    CHECK(rustre_close(h, fd), 0);
    free(all);
    free(expect);

    /* ---- opendir, readdir, closedir ---- */
    rustre_dir *dir = NULL;
    rustre_dirent ent;
    CHECK(rustre_opendir(h, "/capi", &dir), 0);
    int entries = 0, saw_h = 0;
    int r;
    while ((r = rustre_readdir(dir, &ent)) == 1) {
        entries++;
        TRUE(ent.name_len == strlen(ent.name));
        if (strcmp(ent.name, "h") == 0) saw_h = (ent.d_type == 8);
    }
    CHECK(r, 0);
    TRUE(entries == 3 && saw_h);
    CHECK(rustre_readdir(dir, NULL), -EFAULT);
    CHECK(rustre_closedir(dir), 0);
    CHECK(rustre_closedir(dir), -EBADF);
    CHECK(rustre_readdir(dir, &ent), -EBADF);
    CHECK(rustre_opendir(h, "/capi/h", &dir), -ENOTDIR);
    CHECK(rustre_opendir(h, "/none", &dir), -ENOENT);
    CHECK(rustre_opendir(h, "/capi", NULL), -EFAULT);

    /* ---- unlink, rmdir ---- */
    CHECK(rustre_unlink(h, "/capi"), -EISDIR);
    CHECK(rustre_unlink(h, "/capi/none"), -ENOENT);
    CHECK(rustre_rmdir(h, "/capi"), -ENOTEMPTY);
    CHECK(rustre_rmdir(h, "/capi/h"), -ENOTDIR);
    CHECK(rustre_unlink(h, "/capi/h"), 0);
    CHECK(rustre_unlink(h, "/capi/inherits"), 0);
    CHECK(rustre_unlink(h, "/capi/shared"), 0);
    CHECK(rustre_rmdir(h, "/capi"), 0);
    CHECK(rustre_rmdir(h, "/capi"), -ENOENT);

    /* ---- statfs ---- */
    rustre_fsinfo fs;
    CHECK(rustre_statfs(h, &fs), 0);
    TRUE(strcmp(fs.fsname, "lanefs") == 0 && fs.ost_count >= 1 && fs.total_bytes > 0);
    CHECK(rustre_statfs(h, NULL), -EFAULT);

    /* ---- error strings ---- */
    TRUE(strstr(rustre_strerror(-ENOENT), "ENOENT") != NULL);
    TRUE(strstr(rustre_strerror(EEXIST), "EEXIST") != NULL);
    TRUE(strcmp(rustre_strerror(0), "success") == 0);
    TRUE(strcmp(rustre_strerror(99999), "unknown error") == 0);
    TRUE(rustre_strerror(INT32_MIN) != NULL);
    CHECK(rustre_stat(h, "/definitely/missing", &st), -ENOENT);
    size_t need = rustre_last_error(NULL, 0);
    TRUE(need > 10);
    char small[8];
    CHECK(rustre_last_error(small, sizeof small), need);
    TRUE(strlen(small) == 7);
    char *full = malloc(need + 1);
    CHECK(rustre_last_error(full, need + 1), need);
    TRUE(strstr(full, "/definitely/missing") != NULL);
    free(full);

    /* ---- disconnect ---- */
    CHECK(rustre_disconnect(h2), 0);
    CHECK(rustre_disconnect(h), 0);
    CHECK(rustre_disconnect(h), -EBADF);
    CHECK(rustre_stat(h, "/", &st), -EBADF);
    free(data);
    free(back);
    printf("test_capi: %d checks passed\n", checks);
    return 0;
}
