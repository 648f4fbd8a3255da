/* SPDX-License-Identifier: MIT */
/* Unit test prelude: cmocka needs these system headers before its own, in this order. */
#ifndef VD_TEST_H
#define VD_TEST_H

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#endif
