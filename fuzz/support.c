// See support.h.
#define _GNU_SOURCE
#include "support.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tesseraq.h"

static char scratch[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

void remove_tree(const char *path) {
    if (access(path, F_OK) == 0 && nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) { perror(path); abort(); }
}

static void remove_scratch(void) { remove_tree(scratch); }

// /dev/shm when there is one: every execution writes its input there, so a disk would be the
// bottleneck.
static const char *scratch_dir(void) {
    if (scratch[0]) return scratch;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(scratch, sizeof scratch, "%s/tq-fuzz-XXXXXX", base);
    if (!mkdtemp(scratch)) { perror("fuzz: mkdtemp"); abort(); }
    atexit(remove_scratch);
    return scratch;
}

const char *scratch_path(int slot, const char *name) {
    static char paths[4][512];
    if (slot < 0 || slot > 3) abort();
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", scratch_dir(), name);
    return paths[slot];
}

void write_file(const char *path, const uint8_t *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(path); abort(); }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) { perror(path); abort(); }
        done += (size_t)n;
    }
    close(fd);
}

void link_file(const char *target, const char *link) {
    unlink(link);
    if (symlink(target, link) != 0) { perror(link); abort(); }
}

void check_status(int32_t status, const char *call) {
    const char *message = tq_last_error();
    if (status == TQ_OK) {
        if (message[0] != '\0') { fprintf(stderr, "%s: TQ_OK but tq_last_error() = \"%s\"\n", call, message); abort(); }
        return;
    }
    if (status < TQ_ERR_CPU || status > TQ_ERR_INVALID_ARGUMENT) {
        fprintf(stderr, "%s: status %d (%s): %s\n", call, status, tq_status_name(status), message);
        abort();
    }
    if (message[0] == '\0') { fprintf(stderr, "%s: status %d without a message\n", call, status); abort(); }
}

struct tq_model *open_fixture_model(const char *relative) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TQ_REPO, relative);
    tq_model *model = NULL;
    if (tq_model_open(path, &model) != TQ_OK) { fprintf(stderr, "%s: %s\n", path, tq_last_error()); abort(); }
    return model;
}

int32_t cancel_at_first_progress(int64_t block, int64_t n_blocks, int64_t round, int64_t step, double loss, void *user) {
    (void)block; (void)n_blocks; (void)round; (void)step; (void)loss; (void)user;
    return 1;
}

void stage_model_folder(const char *target, const char *link_name) {
    char link[256];
    mkdir(scratch_path(0, "model"), 0755);
    snprintf(link, sizeof link, "model/%s", link_name);
    link_file(target, scratch_path(0, link));
    tq_set_num_threads(1);
}

struct tq_model *open_staged_model(const char *name, const uint8_t *data, size_t size) {
    char file[256];
    snprintf(file, sizeof file, "model/%s", name);
    write_file(scratch_path(0, file), data, size);
    tq_model *model = NULL;
    check_status(tq_model_open(scratch_path(0, "model"), &model), "tq_model_open");
    return model;
}

char *input_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}
