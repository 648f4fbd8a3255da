/* SPDX-License-Identifier: MIT */
/* viaduct entry point (skeleton; the proxy core lands next). */
#include "vd/config.h"

#include <stdio.h>

#include "vd/conf.h"

int
main(void)
{
    struct vd_conf *c = vd_conf_default();
    printf("viaduct %s\n", VD_VERSION);
    vd_conf_unref(c);
    return 0;
}
