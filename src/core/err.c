/* SPDX-License-Identifier: MIT */
/* Error names and messages for viaduct codes and -errno values. */
#include "vd/config.h"

#include <string.h>

#include "vd/err.h"

const char *
vd_err_name(int err)
{
    switch (err) {
#define VD_ERR(name, val, msg)                                                                     \
    case (val):                                                                                    \
        return "VD_" #name;
#include "vd/errors.def"
#undef VD_ERR
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        return n ? n : "E?";
    }
    return err == 0 ? "OK" : "E?";
}

const char *
vd_strerror(int err)
{
    switch (err) {
#define VD_ERR(name, val, msg)                                                                     \
    case (val):                                                                                    \
        return msg;
#include "vd/errors.def"
#undef VD_ERR
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* strerrordesc_np is thread-safe and needs no buffer (glibc >= 2.32). */
        const char *d = strerrordesc_np(-err);
        return d ? d : "unknown error";
    }
    return err == 0 ? "success" : "unknown error";
}
