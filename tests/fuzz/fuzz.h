/* SPDX-License-Identifier: MIT */
/* What every fuzz target shares: the libFuzzer entry point it defines, and CHECK, which turns
 * a broken invariant into a crash the fuzzer (and the corpus replay in `make test`) reports. */
#ifndef VD_FUZZ_H
#define VD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
