/* SPDX-License-Identifier: MIT */
/* Worker threads: filled in with the proxy core. */
#include "vd/config.h"
