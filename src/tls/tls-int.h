/* SPDX-License-Identifier: MIT */
/* Private to src/tls and its unit tests: the OpenSSL objects behind a TLS vd_sock. Other modules
 * use include/vd/tls.h only. */
#ifndef VD_TLS_INT_H
#define VD_TLS_INT_H

#include <openssl/ssl.h>

#include "vd/sock.h"

/* Returns the SSL of @s when its transport is TLS, else NULL. Borrowed: valid until the sock is
 * closed. Tests use it to cap protocol versions, override ALPN and read the peer certificate. */
SSL *vd_tls_ssl_get(struct vd_sock *s);

#endif
