/* SPDX-License-Identifier: MIT */
/* First include of every .c file: Meson's generated build settings (_GNU_SOURCE, version),
 * then the shared macros. Banned functions are enforced by tools/checksrc.py, not by
 * "#pragma GCC poison", because poisoning here would also trip glibc's own declarations. */
#ifndef VD_CONFIG_H
#define VD_CONFIG_H

/* vd_build.h defines _GNU_SOURCE and must precede every system header. */
/* clang-format off */
#include "vd_build.h"
#include "vd/common.h"
/* clang-format on */

#endif
