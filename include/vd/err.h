/* SPDX-License-Identifier: MIT */
/* Error codes: 0 is success, negative values are failures; -errno for system errors,
 * VD_E* (errors.def) for viaduct's own. */
#ifndef VD_ERR_H
#define VD_ERR_H

#include <errno.h>

enum {

#define VD_ERR(name, val, msg) VD_##name = (val),
#include "vd/errors.def"
#undef VD_ERR
};

/* Short aliases for the names errno.h already takes. */
#define VD_EAGAIN    VD_EAGAIN_
#define VD_EPROTO    VD_EPROTO_
#define VD_ETIMEDOUT VD_ETIMEDOUT_
#define VD_ENOMEM    VD_ENOMEM_

/* Returns the symbolic name of @err ("VD_EBADREQ", "ECONNREFUSED"); never NULL. */
const char *vd_err_name(int err);

/* Returns a human-readable message for @err (viaduct or -errno); never NULL, static storage. */
const char *vd_strerror(int err);

#endif
