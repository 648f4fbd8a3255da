/* SPDX-License-Identifier: MIT */
/* Runs a fuzz target over every file of a corpus directory (argv[1]) without libFuzzer, so the
 * regular (gcc, ASan) builds replay the corpora as tests. Each input sits in an exact-size heap
 * buffer so a sanitizer sees any read past its end. */
#include "vd/config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || st.st_size < 0) {
        perror(path);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || (n && fread(buf, 1, n, f) != n)) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    (void)LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    size_t n = 0;
    int bad = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.') {
            continue;
        }
        int k = snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        if (k < 0 || (size_t)k >= sizeof(path) || stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (replay_file(path) < 0) {
            bad = 1;
            continue;
        }
        n++;
    }
    closedir(d);
    printf("replayed %zu inputs\n", n);
    return bad;
}
