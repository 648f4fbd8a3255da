/* SPDX-License-Identifier: MIT */
/* Unit tests for src/tunnel/sniff.c: real ClientHellos captured from openssl s_client and curl
 * (as sent to a listener on 127.0.0.1), fed whole, byte by byte, truncated, re-framed into
 * several TLS records and with each length field corrupted; synthetic hellos for the limits;
 * SSH, HTTP/1 request lines, garbage, and server greetings. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/sniff.h"
#include "vd_test.h"

/* ---- captured ClientHellos ------------------------------------------------------------------ */

/* openssl s_client -servername www.example.com -alpn h2,http/1.1 (OpenSSL 3.0.22) */
static const uint8_t hello_ossl_h2[] = {
    0x16, 0x03, 0x01, 0x01, 0x4e, 0x01, 0x00, 0x01, 0x4a, 0x03, 0x03, 0xe4, 0xa3, 0x4b, 0x00, 0xf9,
    0xca, 0xa9, 0xb6, 0x90, 0xb3, 0x72, 0x41, 0x73, 0xa8, 0xb8, 0x38, 0x4d, 0xe0, 0xaf, 0xdc, 0x5f,
    0x2c, 0x17, 0x99, 0x31, 0xbf, 0x01, 0xff, 0xd1, 0x5e, 0x23, 0x4e, 0x20, 0xef, 0x68, 0x4d, 0xc0,
    0xaa, 0xa6, 0x9e, 0x36, 0x5b, 0x79, 0xf4, 0xd1, 0xb8, 0xe7, 0x14, 0x14, 0xee, 0xde, 0xe1, 0x77,
    0x79, 0x90, 0xe7, 0x42, 0x69, 0x5d, 0x09, 0x68, 0x67, 0x8c, 0x19, 0x7c, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xc3,
    0x00, 0x00, 0x00, 0x14, 0x00, 0x12, 0x00, 0x00, 0x0f, 0x77, 0x77, 0x77, 0x2e, 0x65, 0x78, 0x61,
    0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02,
    0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18,
    0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x10,
    0x00, 0x0e, 0x00, 0x0c, 0x02, 0x68, 0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31,
    0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03,
    0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04,
    0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02,
    0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03,
    0x02, 0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00,
    0x1d, 0x00, 0x20, 0xcd, 0xfc, 0x3b, 0x45, 0xe9, 0x9a, 0x0f, 0x47, 0x0b, 0xdb, 0x71, 0xb2, 0x11,
    0x96, 0xf7, 0xac, 0xc9, 0x9e, 0x18, 0x0b, 0xc6, 0xe2, 0xfd, 0xea, 0x65, 0xed, 0x51, 0xf2, 0x33,
    0x3c, 0xb7, 0x1b,
};

/* openssl s_client -servername WWW.Example.COM -tls1_2 (OpenSSL 3.0.22) */
static const uint8_t hello_ossl_tls12[] = {
    0x16, 0x03, 0x01, 0x00, 0xcf, 0x01, 0x00, 0x00, 0xcb, 0x03, 0x03, 0x5e, 0xf4, 0x37, 0xf5, 0xf4,
    0x7b, 0x6d, 0x39, 0xe3, 0x2d, 0x95, 0xa7, 0x0a, 0x06, 0x20, 0x64, 0x63, 0x90, 0x11, 0x6a, 0x50,
    0xbc, 0xd5, 0xf5, 0x3e, 0xac, 0xa1, 0xce, 0x61, 0x11, 0x37, 0xd0, 0x00, 0x00, 0x38, 0xc0, 0x2c,
    0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e,
    0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14,
    0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c,
    0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x6a, 0x00, 0x00, 0x00, 0x14, 0x00, 0x12,
    0x00, 0x00, 0x0f, 0x57, 0x57, 0x57, 0x2e, 0x45, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x43,
    0x4f, 0x4d, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x0c, 0x00, 0x0a,
    0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16,
    0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03,
    0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05,
    0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02,
    0x05, 0x02, 0x06, 0x02,
};

/* openssl s_client -noservername (OpenSSL 3.0.22) */
static const uint8_t hello_ossl_nosni[] = {
    0x16, 0x03, 0x01, 0x01, 0x24, 0x01, 0x00, 0x01, 0x20, 0x03, 0x03, 0x21, 0x0b, 0x29, 0x1d, 0x13,
    0x30, 0x4a, 0x7b, 0x1a, 0x92, 0x9a, 0x9b, 0xff, 0x7b, 0x71, 0xed, 0xae, 0xf7, 0xdf, 0xa0, 0xc3,
    0x9c, 0x1d, 0x9b, 0xa9, 0x02, 0xe9, 0xea, 0xcd, 0xaa, 0xdb, 0x49, 0x20, 0x28, 0x10, 0x07, 0x18,
    0x2b, 0x32, 0x2a, 0xc5, 0xd3, 0x2d, 0x55, 0x5d, 0xd6, 0xec, 0x54, 0xa4, 0xf9, 0x81, 0xa3, 0x82,
    0x3a, 0x76, 0x97, 0x49, 0x3f, 0x13, 0x57, 0x28, 0x64, 0x3d, 0xa8, 0xb7, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x99,
    0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d,
    0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03,
    0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d,
    0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09,
    0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01,
    0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09,
    0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00,
    0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0xca, 0xc5, 0xaa, 0x81, 0x59, 0xfa, 0xc7,
    0xc3, 0x85, 0xca, 0xf9, 0x81, 0x04, 0xb4, 0xd6, 0x26, 0x6e, 0xca, 0xb6, 0x07, 0x62, 0x55, 0x7b,
    0xd5, 0x37, 0x84, 0x33, 0xac, 0xa4, 0x3c, 0x58, 0x30,
};

/* curl --http2 https://www.example.com:PORT/ (curl 7.88.1, OpenSSL 3.0.22) */
static const uint8_t hello_curl_h2[] = {
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x9d, 0x1c, 0x7e, 0x0c, 0xae,
    0x98, 0xec, 0x4c, 0x9c, 0xc4, 0x2b, 0xe2, 0x11, 0x0c, 0x11, 0x16, 0x5b, 0x20, 0x70, 0x5e, 0x5c,
    0x02, 0xca, 0xe8, 0x5c, 0x33, 0x92, 0x6d, 0x7c, 0x39, 0x1c, 0xd4, 0x20, 0xb6, 0xb3, 0x95, 0xef,
    0x47, 0x72, 0xe7, 0x69, 0xe8, 0xf8, 0x57, 0x27, 0xbb, 0x5f, 0x74, 0xb0, 0x6d, 0xe6, 0x49, 0xb6,
    0x0f, 0xd7, 0x09, 0x79, 0xd3, 0xc4, 0x7a, 0xf6, 0x6f, 0x70, 0xc9, 0x7c, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x01, 0x75,
    0x00, 0x00, 0x00, 0x14, 0x00, 0x12, 0x00, 0x00, 0x0f, 0x77, 0x77, 0x77, 0x2e, 0x65, 0x78, 0x61,
    0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02,
    0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18,
    0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c,
    0x02, 0x68, 0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x16, 0x00, 0x00,
    0x00, 0x17, 0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03,
    0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04,
    0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02,
    0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03,
    0x02, 0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00,
    0x1d, 0x00, 0x20, 0x7a, 0x1a, 0xbb, 0x11, 0xaa, 0x78, 0x61, 0xbc, 0x70, 0xd4, 0x0e, 0xbb, 0x8c,
    0x91, 0x91, 0x4f, 0xe8, 0x66, 0x04, 0x80, 0x72, 0x30, 0xd6, 0x8a, 0x80, 0x6b, 0x24, 0xb2, 0x9a,
    0x6e, 0x15, 0x06, 0x00, 0x15, 0x00, 0xae, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00,
};

/* curl --http1.1 https://api.test_host-1.example:PORT/ (curl 7.88.1, OpenSSL 3.0.22) */
static const uint8_t hello_curl_h11[] = {
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0f, 0x93, 0x71, 0xa2, 0x7c,
    0x18, 0x72, 0xc2, 0x4c, 0x6a, 0xe1, 0x18, 0xa3, 0x30, 0x80, 0xa6, 0xd9, 0xce, 0xc0, 0x4d, 0x15,
    0x44, 0x70, 0x36, 0x25, 0xa9, 0xe7, 0x37, 0xaf, 0x99, 0xc5, 0xec, 0x20, 0x4d, 0x36, 0x83, 0x69,
    0x9c, 0x61, 0x27, 0x02, 0xf4, 0x38, 0xf9, 0xb3, 0xd0, 0xe8, 0x1c, 0x23, 0x5d, 0x3d, 0x90, 0x19,
    0xbb, 0xb0, 0xa2, 0x50, 0x46, 0x8c, 0xe8, 0x31, 0x24, 0x8a, 0x5e, 0x4c, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x01, 0x75,
    0x00, 0x00, 0x00, 0x1c, 0x00, 0x1a, 0x00, 0x00, 0x17, 0x61, 0x70, 0x69, 0x2e, 0x74, 0x65, 0x73,
    0x74, 0x5f, 0x68, 0x6f, 0x73, 0x74, 0x2d, 0x31, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
    0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d,
    0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03,
    0x01, 0x04, 0x00, 0x10, 0x00, 0x0b, 0x00, 0x09, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e,
    0x31, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x31, 0x00, 0x00, 0x00, 0x0d, 0x00,
    0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08,
    0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03,
    0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08,
    0x03, 0x04, 0x03, 0x03, 0x03, 0x02, 0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33,
    0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0xcc, 0x7c, 0x23, 0xa8, 0x66, 0x7a, 0xf5, 0x81,
    0x54, 0x18, 0xbb, 0xbe, 0x04, 0x6d, 0x1c, 0xd4, 0x48, 0x6c, 0x49, 0xc1, 0xce, 0xe1, 0x8b, 0x32,
    0x23, 0xd1, 0x34, 0xab, 0x5b, 0xdd, 0xbb, 0x4c, 0x00, 0x15, 0x00, 0xa9, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00,
};

#define HELLO(a)                                                                                   \
    {                                                                                              \
        a, sizeof(a)                                                                               \
    }

static const struct {
    const uint8_t *p;
    size_t len;
} hellos[] = {HELLO(hello_ossl_h2), HELLO(hello_ossl_tls12), HELLO(hello_ossl_nosni),
              HELLO(hello_curl_h2), HELLO(hello_curl_h11)};

/* ---- helpers -------------------------------------------------------------------------------- */

/* A byte builder big enough for any hello the tests make. */
struct bb {
    uint8_t b[70000];
    size_t n;
};

static void
put8(struct bb *b, unsigned v)
{
    assert_true(b->n < sizeof(b->b));
    b->b[b->n++] = (uint8_t)v;
}

static void
put16(struct bb *b, unsigned v)
{
    put8(b, v >> 8);
    put8(b, v & 0xff);
}

static void
put(struct bb *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof(b->b));
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

/* Runs the sniffer on an exact-size heap copy so ASan sees over-reads. */
static enum vd_sniff_state
client(const uint8_t *p, size_t len, struct vd_sniff *out)
{
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len) {
        memcpy(c, p, len);
    }
    enum vd_sniff_state st = vd_sniff_client(c, len, out);
    free(c);
    return st;
}

static enum vd_sniff_state
server(const char *s, struct vd_sniff *out)
{
    return vd_sniff_server((const uint8_t *)s, strlen(s), out);
}

static void
assert_same(const struct vd_sniff *a, const struct vd_sniff *b)
{
    assert_int_equal(a->proto, b->proto);
    assert_string_equal(a->sni, b->sni);
    assert_int_equal(a->has_sni, b->has_sni);
    assert_int_equal(a->nalpn, b->nalpn);
    for (unsigned i = 0; i < a->nalpn; i++) {
        assert_string_equal(a->alpn[i], b->alpn[i]);
    }
    assert_int_equal(a->alpn_more, b->alpn_more);
    assert_int_equal(a->tls_version, b->tls_version);
    assert_int_equal(a->tls13, b->tls13);
}

/* The handshake bytes of @p (records concatenated), into @hs; returns their count. */
static size_t
unframe(const uint8_t *p, size_t len, uint8_t *hs)
{
    size_t n = 0;
    for (size_t off = 0; off + 5 <= len;) {
        size_t rlen = (size_t)p[off + 3] << 8 | p[off + 4];
        assert_true(p[off] == 22 && off + 5 + rlen <= len);
        memcpy(hs + n, p + off + 5, rlen);
        n += rlen;
        off += 5 + rlen;
    }
    return n;
}

/* Wraps @hs in records whose payload sizes are @sizes (0-terminated; the rest goes last). */
static void
frame(struct bb *out, const uint8_t *hs, size_t n, const size_t *sizes)
{
    out->n = 0;
    for (size_t off = 0; off < n;) {
        size_t k = *sizes ? VD_MIN(*sizes, n - off) : VD_MIN(n - off, 16384);
        if (*sizes) {
            sizes++;
        }
        put8(out, 22);
        put16(out, 0x0301);
        put16(out, (unsigned)k);
        put(out, hs + off, k);
        off += k;
    }
}

/* A ClientHello handshake message with extensions @ext (NULL: no extensions block at all). */
static void
hello_msg(struct bb *out, const struct bb *ext)
{
    size_t body = 2 + 32 + 1 + 4 + 2 + (ext ? 2 + ext->n : 0);
    out->n = 0;
    put8(out, 1);
    put8(out, (unsigned)(body >> 16));
    put16(out, (unsigned)(body & 0xffff));
    put16(out, 0x0303);
    for (int i = 0; i < 32; i++) {
        put8(out, (unsigned)i);
    }
    put8(out, 0);       /* session id */
    put16(out, 2);      /* cipher suites */
    put16(out, 0x1301); /* TLS_AES_128_GCM_SHA256 */
    put8(out, 1);       /* compression methods */
    put8(out, 0);       /* null */
    if (ext) {
        put16(out, (unsigned)ext->n);
        put(out, ext->b, ext->n);
    }
}

static void
ext_sni(struct bb *e, const char *name, size_t n)
{
    put16(e, 0);
    put16(e, (unsigned)(n + 5));
    put16(e, (unsigned)(n + 3));
    put8(e, 0);
    put16(e, (unsigned)n);
    put(e, name, n);
}

/* @ids: NUL-separated, ends with an empty id. */
static void
ext_alpn(struct bb *e, const char *ids)
{
    size_t total = 0;
    for (const char *s = ids; *s; s += strlen(s) + 1) {
        total += 1 + strlen(s);
    }
    put16(e, 16);
    put16(e, (unsigned)(total + 2));
    put16(e, (unsigned)total);
    for (const char *s = ids; *s; s += strlen(s) + 1) {
        put8(e, (unsigned)strlen(s));
        put(e, s, strlen(s));
    }
}

/* Frames a synthetic hello with extensions @e in one record and sniffs it. */
static enum vd_sniff_state
sniff_ext(const struct bb *e, struct vd_sniff *out)
{
    static struct bb msg, rec;
    hello_msg(&msg, e);
    frame(&rec, msg.b, msg.n, (size_t[]){0});
    return client(rec.b, rec.n, out);
}

/* ---- real hellos ---------------------------------------------------------------------------- */

static void
test_real_hellos(void **state)
{
    (void)state;
    struct vd_sniff o;
    assert_int_equal(client(hello_ossl_h2, sizeof(hello_ossl_h2), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_true(o.has_sni);
    assert_string_equal(o.sni, "www.example.com");
    assert_int_equal(o.nalpn, 2);
    assert_string_equal(o.alpn[0], "h2");
    assert_string_equal(o.alpn[1], "http/1.1");
    assert_false(o.alpn_more);
    assert_int_equal(o.tls_version, 0x0303);
    assert_true(o.tls13);

    /* -tls1_2: no supported_versions, no ALPN; the upper-case name comes out lower-case */
    assert_int_equal(client(hello_ossl_tls12, sizeof(hello_ossl_tls12), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "www.example.com");
    assert_int_equal(o.nalpn, 0);
    assert_false(o.tls13);
    assert_int_equal(o.tls_version, 0x0303);

    assert_int_equal(client(hello_ossl_nosni, sizeof(hello_ossl_nosni), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
    assert_string_equal(o.sni, "");
    assert_int_equal(o.nalpn, 0);
    assert_true(o.tls13);

    assert_int_equal(client(hello_curl_h2, sizeof(hello_curl_h2), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "www.example.com");
    assert_int_equal(o.nalpn, 2);
    assert_string_equal(o.alpn[0], "h2");
    assert_string_equal(o.alpn[1], "http/1.1");
    assert_true(o.tls13);

    assert_int_equal(client(hello_curl_h11, sizeof(hello_curl_h11), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "api.test_host-1.example");
    assert_int_equal(o.nalpn, 1);
    assert_string_equal(o.alpn[0], "http/1.1");
    assert_true(o.tls13);
    assert_string_equal(vd_proto_name(o.proto), "tls");

    /* bytes after the hello (a ChangeCipherSpec, early data) change nothing */
    static struct bb more;
    more.n = 0;
    put(&more, hello_curl_h2, sizeof(hello_curl_h2));
    put(&more, "\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x05hello", 17);
    struct vd_sniff o2;
    assert_int_equal(client(more.b, more.n, &o2), VD_SNIFF_DONE);
    assert_int_equal(client(hello_curl_h2, sizeof(hello_curl_h2), &o), VD_SNIFF_DONE);
    assert_same(&o, &o2);
}

/* Every proper prefix needs more; the whole hello is DONE (a caller feeding a byte at a time). */
static void
test_byte_at_a_time(void **state)
{
    (void)state;
    for (size_t h = 0; h < VD_ARRAY_LEN(hellos); h++) {
        struct vd_sniff whole, o;
        assert_int_equal(client(hellos[h].p, hellos[h].len, &whole), VD_SNIFF_DONE);
        for (size_t i = 0; i < hellos[h].len; i++) {
            assert_int_equal(client(hellos[h].p, i, &o), VD_SNIFF_MORE);
            assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
            assert_false(o.has_sni);
        }
        assert_int_equal(client(hellos[h].p, hellos[h].len, &o), VD_SNIFF_DONE);
        assert_same(&o, &whole);
    }
}

/* The hello split into 2 and 3 records at every (3: every 5th) boundary, and into 1-byte
 * records; each framing fed whole and a byte at a time. */
static void
test_reframed(void **state)
{
    (void)state;
    static uint8_t hs[4096];
    static struct bb rec;
    for (size_t h = 0; h < VD_ARRAY_LEN(hellos); h++) {
        struct vd_sniff whole, o;
        assert_int_equal(client(hellos[h].p, hellos[h].len, &whole), VD_SNIFF_DONE);
        size_t n = unframe(hellos[h].p, hellos[h].len, hs);
        for (size_t a = 1; a < n; a++) {
            frame(&rec, hs, n, (size_t[]){a, 0});
            assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
            assert_same(&o, &whole);
            for (size_t b = 1; a + b < n; b += 5) {
                frame(&rec, hs, n, (size_t[]){a, b, 0});
                assert_int_equal(rec.n, n + 15);
                assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
                assert_same(&o, &whole);
                if (a % 37 == 0 && b % 25 == 1) {
                    for (size_t i = 0; i < rec.n; i++) {
                        assert_int_equal(client(rec.b, i, &o), VD_SNIFF_MORE);
                    }
                }
            }
        }
        size_t ones[4096];
        for (size_t i = 0; i < n; i++) {
            ones[i] = 1;
        }
        ones[n] = 0;
        frame(&rec, hs, n, ones);
        assert_int_equal(rec.n, 6 * n);
        assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
        assert_same(&o, &whole);
        for (size_t i = 0; i < rec.n; i++) {
            assert_int_equal(client(rec.b, i, &o), VD_SNIFF_MORE);
        }
    }
}

/* A record of another type, a bad record version or an empty record between fragments. */
static void
test_bad_records(void **state)
{
    (void)state;
    static uint8_t hs[4096];
    static struct bb rec;
    struct vd_sniff o;
    size_t n = unframe(hello_curl_h2, sizeof(hello_curl_h2), hs);
    frame(&rec, hs, n, (size_t[]){100, 0});
    size_t second = 5 + 100;

    static const struct {
        size_t at;
        uint8_t v;
    } bad[] = {
        {0, 0x17}, {1, 0x02}, {2, 0x00}, {2, 0x05}, {3, 0xff}, {4, 0x00}, /* first record */
        {0, 0x15},                                                        /* alert first */
    };

    for (size_t k = 0; k < VD_ARRAY_LEN(bad); k++) {
        static struct bb m;
        m = rec;
        m.b[bad[k].at] = bad[k].v;
        if (bad[k].at == 4) {
            m.b[3] = 0; /* length 0 */
        }
        enum vd_sniff_state st = client(m.b, m.n, &o);
        assert_true(st == VD_SNIFF_DONE && o.proto == VD_PROTO_UNKNOWN);
        /* the second record header */
        m = rec;
        m.b[second + bad[k].at] = bad[k].v;
        if (bad[k].at == 4) {
            m.b[second + 3] = 0;
        }
        st = client(m.b, m.n, &o);
        assert_true(st == VD_SNIFF_DONE && o.proto == VD_PROTO_UNKNOWN);
        /* decided as soon as the bad byte arrives */
        if (bad[k].at < 3) {
            assert_int_equal(client(m.b, second + bad[k].at + 1, &o), VD_SNIFF_DONE);
            assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
        }
    }
    /* record versions 0x0301..0x0304 are all fine */
    for (unsigned v = 1; v <= 4; v++) {
        static struct bb m;
        m = rec;
        m.b[2] = (uint8_t)v;
        m.b[second + 2] = (uint8_t)v;
        assert_int_equal(client(m.b, m.n, &o), VD_SNIFF_DONE);
        assert_int_equal(o.proto, VD_PROTO_TLS);
        assert_string_equal(o.sni, "www.example.com");
    }
}

/* ---- corrupted lengths ---------------------------------------------------------------------- */

struct lenfield {
    size_t off;
    unsigned width;
};

/* Every length field of a one-record hello, found by walking it here independently. */
static size_t
length_fields(const uint8_t *p, size_t len, struct lenfield *f)
{
    size_t n = 0, i = 0;
    (void)len;
    f[n++] = (struct lenfield){3, 2};
    f[n++] = (struct lenfield){6, 3};
    i = 9 + 2 + 32;
    f[n++] = (struct lenfield){i, 1};
    i += 1 + p[i];
    f[n++] = (struct lenfield){i, 2};
    i += 2 + ((size_t)p[i] << 8 | p[i + 1]);
    f[n++] = (struct lenfield){i, 1};
    i += 1 + p[i];
    f[n++] = (struct lenfield){i, 2};
    size_t end = i + 2 + ((size_t)p[i] << 8 | p[i + 1]);
    i += 2;
    while (i < end) {
        unsigned type = (unsigned)p[i] << 8 | p[i + 1];
        size_t elen = (size_t)p[i + 2] << 8 | p[i + 3];
        f[n++] = (struct lenfield){i + 2, 2};
        size_t e = i + 4;
        if (type == 0) {
            f[n++] = (struct lenfield){e, 2};
            f[n++] = (struct lenfield){e + 3, 2};
        } else if (type == 16) {
            f[n++] = (struct lenfield){e, 2};
            for (size_t a = e + 2; a < e + elen; a += 1 + p[a]) {
                f[n++] = (struct lenfield){a, 1};
            }
        } else if (type == 43) {
            f[n++] = (struct lenfield){e, 1};
        }
        i = e + elen;
    }
    return n;
}

static void
test_corrupt_lengths(void **state)
{
    (void)state;
    static struct bb m;
    struct lenfield f[64];
    for (size_t h = 0; h < VD_ARRAY_LEN(hellos); h++) {
        struct vd_sniff whole, o;
        assert_int_equal(client(hellos[h].p, hellos[h].len, &whole), VD_SNIFF_DONE);
        size_t nf = length_fields(hellos[h].p, hellos[h].len, f);
        assert_true(nf >= 8);
        for (size_t k = 0; k < nf; k++) {
            uint8_t *at = m.b + f[k].off;
            for (int d = 0; d < 5; d++) {
                memcpy(m.b, hellos[h].p, hellos[h].len);
                m.n = hellos[h].len;
                size_t v = 0;
                for (unsigned w = 0; w < f[k].width; w++) {
                    v = v << 8 | at[w];
                }
                size_t nv = d == 0   ? v + 1
                            : d == 1 ? v - 1
                            : d == 2 ? 0
                            : d == 3 ? SIZE_MAX
                                     : v ^ 0x80;
                nv &= ((size_t)1 << (8 * f[k].width)) - 1;
                if (nv == v) {
                    continue; /* a zero length set to zero */
                }
                for (unsigned w = f[k].width; w-- > 0;) {
                    at[w] = (uint8_t)nv;
                    nv >>= 8;
                }
                enum vd_sniff_state st = client(m.b, m.n, &o);
                if (st == VD_SNIFF_MORE || o.proto == VD_PROTO_UNKNOWN) {
                    continue;
                }
                assert_int_equal(o.proto, VD_PROTO_TLS);
                if (f[k].off == 3) {
                    /* a longer record: the hello ends before the record does, and is whole */
                    assert_same(&o, &whole);
                } else {
                    /* else only a hello too big to read, with nothing reported */
                    assert_int_equal(f[k].off, 6);
                    assert_false(o.has_sni);
                    assert_int_equal(o.nalpn, 0);
                    assert_int_equal(o.tls_version, 0);
                }
            }
        }
        /* the hello one byte longer than its record waits for the next record */
        memcpy(m.b, hellos[h].p, hellos[h].len);
        m.n = hellos[h].len;
        m.b[4]--;
        if (m.b[4] == 0xff) {
            m.b[3]--;
        }
        assert_int_equal(client(m.b, m.n - 1, &o), VD_SNIFF_MORE);
        assert_int_equal(client(m.b, m.n, &o), VD_SNIFF_DONE);
        assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
        m.b[m.n + 4] = m.b[m.n - 1];
        memcpy(m.b + m.n - 1, "\x16\x03\x03\x00\x01", 5);
        m.n += 5;
        assert_int_equal(client(m.b, m.n - 1, &o), VD_SNIFF_MORE);
        assert_int_equal(client(m.b, m.n, &o), VD_SNIFF_DONE);
        assert_same(&o, &whole);
    }
}

/* Every single byte flipped: no crash, and a DONE result never changes when bytes follow. */
static void
test_flip_bytes(void **state)
{
    (void)state;
    static struct bb m;
    for (size_t h = 0; h < VD_ARRAY_LEN(hellos); h++) {
        for (size_t i = 0; i < hellos[h].len; i++) {
            memcpy(m.b, hellos[h].p, hellos[h].len);
            m.n = hellos[h].len;
            m.b[i] ^= 0xff;
            struct vd_sniff o, o2;
            enum vd_sniff_state st = client(m.b, m.n, &o);
            memcpy(m.b + m.n, "\x16\x03\x01\x00\x10 trailing bytes", 21);
            enum vd_sniff_state st2 = client(m.b, m.n + 21, &o2);
            if (st == VD_SNIFF_DONE) {
                assert_int_equal(st2, VD_SNIFF_DONE);
                assert_same(&o, &o2);
            }
        }
    }
}

/* ---- synthetic hellos: SNI, ALPN and size limits -------------------------------------------- */

static void
test_sni(void **state)
{
    (void)state;
    static struct bb e;
    struct vd_sniff o;
    char name[300];

    e.n = 0;
    ext_sni(&e, "Mixed-Case.EXAMPLE.org", 22);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "mixed-case.example.org");
    assert_false(o.tls13);

    /* bytes outside [A-Za-z0-9.-_]: TLS, no SNI */
    static const char *const bad[] = {"a*b.example", "a b", "a/b", "a\xc3\xa9", "x:443", "a\0b"};
    for (size_t k = 0; k < VD_ARRAY_LEN(bad); k++) {
        e.n = 0;
        ext_sni(&e, bad[k], k == 5 ? 3 : strlen(bad[k]));
        ext_alpn(&e, "h2\0");
        assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
        assert_int_equal(o.proto, VD_PROTO_TLS);
        assert_false(o.has_sni);
        assert_string_equal(o.sni, "");
        assert_int_equal(o.nalpn, 1);
    }

    /* 255 bytes is the limit */
    memset(name, 'A', sizeof(name));
    e.n = 0;
    ext_sni(&e, name, 255);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_true(o.has_sni);
    assert_int_equal(strlen(o.sni), 255);
    assert_int_equal(o.sni[0], 'a');
    e.n = 0;
    ext_sni(&e, name, 256);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
    assert_string_equal(o.sni, "");

    /* an empty host_name, two host_names, two server_name extensions: malformed */
    e.n = 0;
    ext_sni(&e, "", 0);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    e.n = 0;
    put16(&e, 0);
    put16(&e, 2 + 2 * 6);
    put16(&e, 2 * 6);
    put(&e,
        "\x00\x00\x03"
        "a.b"
        "\x00\x00\x03"
        "c.d",
        12);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    e.n = 0;
    ext_sni(&e, "a.b", 3);
    ext_sni(&e, "c.d", 3);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);

    /* an unknown name type before the host_name is skipped */
    e.n = 0;
    put16(&e, 0);
    put16(&e, 2 + 6 + 6);
    put16(&e, 6 + 6);
    put(&e,
        "\x07\x00\x03"
        "xyz"
        "\x00\x00\x03"
        "c.d",
        12);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "c.d");

    /* no extensions block at all (RFC 5246 §7.4.1.2) */
    assert_int_equal(sniff_ext(NULL, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
    assert_int_equal(o.tls_version, 0x0303);
}

static void
test_alpn(void **state)
{
    (void)state;
    static struct bb e;
    struct vd_sniff o;

    /* more than VD_SNIFF_ALPN_MAX ids: the first ones are kept */
    e.n = 0;
    ext_alpn(&e, "a1\0a2\0a3\0a4\0a5\0a6\0a7\0a8\0a9\0a10\0");
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_int_equal(o.nalpn, VD_SNIFF_ALPN_MAX);
    assert_string_equal(o.alpn[0], "a1");
    assert_string_equal(o.alpn[7], "a8");
    assert_true(o.alpn_more);

    /* an id longer than VD_SNIFF_ALPN_LEN is skipped, not truncated; the next one is kept */
    e.n = 0;
    ext_alpn(&e, "0123456789abcdef0123456789abcdef\0"
                 "0123456789abcdef0123456789abcdefX\0h2\0");
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.nalpn, 2);
    assert_string_equal(o.alpn[0], "0123456789abcdef0123456789abcdef");
    assert_string_equal(o.alpn[1], "h2");
    assert_true(o.alpn_more);

    /* an id holding a NUL is skipped */
    e.n = 0;
    put16(&e, 16);
    put16(&e, 2 + 4 + 3);
    put16(&e, 4 + 3);
    put(&e,
        "\x03h\x00"
        "2\x02h2",
        7);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.nalpn, 1);
    assert_string_equal(o.alpn[0], "h2");
    assert_true(o.alpn_more);

    /* an empty id, an empty list, a duplicate extension: malformed */
    static const char *const bad[] = {
        "\x00\x10\x00\x05\x00\x03\x00\x01x", "\x00\x10\x00\x02\x00\x00",
        "\x00\x10\x00\x05\x00\x03\x02h2\x00\x10\x00\x05\x00\x03\x02h2"};
    static const size_t badlen[] = {9, 6, 18};
    for (size_t k = 0; k < VD_ARRAY_LEN(bad); k++) {
        e.n = 0;
        put(&e, bad[k], badlen[k]);
        assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
        assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
        assert_int_equal(o.nalpn, 0);
    }

    /* supported_versions: 0x0304 anywhere in the list; odd length or a duplicate is malformed */
    e.n = 0;
    put(&e, "\x00\x2b\x00\x05\x04\x7f\x1c\x03\x04", 9);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_true(o.tls13);
    e.n = 0;
    put(&e, "\x00\x2b\x00\x03\x02\x03\x03", 7);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.tls13);
    e.n = 0;
    put(&e, "\x00\x2b\x00\x04\x03\x03\x04\x03", 8);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    e.n = 0;
    put(&e, "\x00\x2b\x00\x03\x02\x03\x04\x00\x2b\x00\x03\x02\x03\x04", 14);
    assert_int_equal(sniff_ext(&e, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
}

/* Hellos near and past VD_SNIFF_MAX. */
static void
test_big_hellos(void **state)
{
    (void)state;
    static struct bb e, msg, rec;
    struct vd_sniff o;

    /* 16000 bytes of padding in 4 records: fits, read in full */
    e.n = 0;
    ext_sni(&e, "big.example", 11);
    put16(&e, 21);
    put16(&e, 16000);
    for (int i = 0; i < 16000; i++) {
        put8(&e, 0);
    }
    hello_msg(&msg, &e);
    frame(&rec, msg.b, msg.n, (size_t[]){5000, 5000, 5000, 0});
    assert_true(rec.n <= VD_SNIFF_MAX);
    assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_string_equal(o.sni, "big.example");
    assert_int_equal(client(rec.b, rec.n - 1, &o), VD_SNIFF_MORE);

    /* the same in 100-byte records no longer fits: TLS without details at VD_SNIFF_MAX */
    size_t k100[200];
    for (int i = 0; i < 199; i++) {
        k100[i] = 100;
    }
    k100[199] = 0;
    frame(&rec, msg.b, msg.n, k100);
    assert_true(rec.n > VD_SNIFF_MAX);
    assert_int_equal(client(rec.b, VD_SNIFF_MAX - 1, &o), VD_SNIFF_MORE);
    assert_int_equal(client(rec.b, VD_SNIFF_MAX, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
    assert_int_equal(o.tls_version, 0);
    assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);

    /* a hello announcing more than can ever fit is decided from its header */
    e.n = 0;
    ext_sni(&e, "huge.example", 12);
    put16(&e, 21);
    put16(&e, 40000);
    for (int i = 0; i < 40000; i++) {
        put8(&e, 0);
    }
    hello_msg(&msg, &e);
    frame(&rec, msg.b, msg.n, (size_t[]){0});
    assert_int_equal(client(rec.b, 8, &o), VD_SNIFF_MORE);
    assert_int_equal(client(rec.b, 9, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
    assert_int_equal(client(rec.b, rec.n, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_TLS);
    assert_false(o.has_sni);
}

/* ---- SSH, HTTP, garbage --------------------------------------------------------------------- */

static enum vd_sniff_state
client_s(const char *s, struct vd_sniff *out)
{
    return client((const uint8_t *)s, strlen(s), out);
}

/* Each proper prefix of @s gives MORE, @s itself DONE with @proto. */
static void
expect_client(const char *s, enum vd_proto proto)
{
    struct vd_sniff o;
    for (size_t i = 0; i < strlen(s); i++) {
        assert_int_equal(client((const uint8_t *)s, i, &o), VD_SNIFF_MORE);
    }
    assert_int_equal(client_s(s, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, proto);
}

static void
test_ssh_http(void **state)
{
    (void)state;
    struct vd_sniff o;
    expect_client("SSH-", VD_PROTO_SSH);
    assert_int_equal(client_s("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_SSH);
    assert_string_equal(vd_proto_name(o.proto), "ssh");

    expect_client("GET / HTTP/1.1\r\n", VD_PROTO_HTTP);
    expect_client("OPTIONS * HTTP/1.0\n", VD_PROTO_HTTP);
    expect_client("POST http://example.com/a?b=c HTTP/1.1\r\n", VD_PROTO_HTTP);
    expect_client("SSH / HTTP/1.1\r\n", VD_PROTO_HTTP); /* a token that is not "SSH-" */
    expect_client("M-SEARCH * HTTP/1.1\r\n", VD_PROTO_HTTP);
    assert_int_equal(client_s("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_HTTP);
    assert_string_equal(vd_proto_name(o.proto), "http");

    /* decided UNKNOWN at the first byte that cannot fit */
    static const char *const bad[] = {
        " GET / HTTP/1.1\r\n",    "GET\t/ HTTP/1.1\r\n",
        "GET  / HTTP/1.1\r\n",    "GET / HTTP/2.0\r\n",
        "GET / http/1.1\r\n",     "GET / HTTP/1.x\r\n",
        "GET / HTTP/1.1 \r\n",    "GET / HTTP/1.1\r\r\n",
        "GET /\x01 HTTP/1.1\r\n", "GE(T / HTTP/1.1\r\n",
        "\r\nGET / HTTP/1.1\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\x7f",     "\177ELF",
    };
    for (size_t k = 0; k < VD_ARRAY_LEN(bad); k++) {
        const char *s = bad[k];
        size_t i = 0;
        while (client((const uint8_t *)s, i, &o) == VD_SNIFF_MORE) {
            i++;
            assert_true(i <= strlen(s));
        }
        assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    }
    assert_int_equal(client_s("GE\x01", &o), VD_SNIFF_DONE);
    assert_int_equal(client_s("SS\x01", &o), VD_SNIFF_DONE);
    assert_int_equal(client_s("GET / HTTP/1.1", &o), VD_SNIFF_MORE);

    /* the line must end within 8 KiB */
    static char line[9000];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    assert_int_equal(client((const uint8_t *)line, 8191, &o), VD_SNIFF_MORE);
    assert_int_equal(client((const uint8_t *)line, 8192, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    memcpy(line + 8192 - 10, " HTTP/1.1\n", 10);
    assert_int_equal(client((const uint8_t *)line, 8192, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_HTTP);
    memcpy(line + 8192 - 10, "a HTTP/1.1\n", 11);
    assert_int_equal(client((const uint8_t *)line, 8193, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
}

static void
test_garbage(void **state)
{
    (void)state;
    struct vd_sniff o;
    assert_int_equal(client(NULL, 0, &o), VD_SNIFF_MORE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    static const uint8_t one[] = {0x00, 0x80, 0xff, 0x05, 0x14, 0x15, 0x17, '\r', '\n', ' ', '/'};
    for (size_t k = 0; k < sizeof(one); k++) {
        assert_int_equal(client(&one[k], 1, &o), VD_SNIFF_DONE);
        assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
        assert_string_equal(vd_proto_name(o.proto), "unknown");
    }
    /* pseudo-random buffers: no crash; DONE stays DONE with the same result as bytes follow */
    static uint8_t buf[20000];
    uint32_t seed = 12345;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(buf); i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (uint8_t)(seed >> 16);
        }
        if (round % 2) {
            memcpy(buf, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
        }
        struct vd_sniff first;
        memset(&first, 0, sizeof(first));
        enum vd_sniff_state st0 = VD_SNIFF_MORE;
        for (size_t len = 0; len <= sizeof(buf); len += 1 + len / 4) {
            enum vd_sniff_state st = client(buf, len, &o);
            if (st0 == VD_SNIFF_DONE) {
                assert_int_equal(st, VD_SNIFF_DONE);
                assert_same(&o, &first);
            } else if (st == VD_SNIFF_DONE) {
                st0 = st;
                first = o;
            }
        }
        assert_int_equal(client(buf, sizeof(buf), &o), VD_SNIFF_DONE);
    }
}

/* ---- server greetings ----------------------------------------------------------------------- */

static void
expect_server(const char *s, enum vd_proto proto, const char *name)
{
    struct vd_sniff o;
    assert_int_equal(server(s, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, proto);
    assert_string_equal(vd_proto_name(proto), name);
    assert_false(o.has_sni);
}

static void
test_server(void **state)
{
    (void)state;
    struct vd_sniff o;
    expect_server("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", VD_PROTO_SSH, "ssh");
    expect_server("SSH-", VD_PROTO_SSH, "ssh");
    expect_server("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n", VD_PROTO_IMAP, "imap");
    expect_server("* PREAUTH IMAP4rev1 server logged in as Smith\r\n", VD_PROTO_IMAP, "imap");
    expect_server("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n", VD_PROTO_POP3,
                  "pop3");
    expect_server("220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n", VD_PROTO_SMTP, "smtp");
    expect_server("220-smtp.example.com ESMTP\r\n220 ready\r\n", VD_PROTO_SMTP, "smtp");
    expect_server("220 foo.com Simple Mail Transfer Service Ready SMTP\n", VD_PROTO_SMTP, "smtp");
    expect_server("220 (vsFTPd 3.0.3)\r\n", VD_PROTO_FTP, "ftp");
    expect_server("220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n", VD_PROTO_FTP, "ftp");
    expect_server(
        "220-FileZilla Server 1.8.0\r\n220 Please visit https://filezilla-project.org/\r\n",
        VD_PROTO_UNKNOWN, "unknown");
    expect_server("220 Microsoft FTP Service\r\n", VD_PROTO_FTP, "ftp");
    /* only the first line counts */
    expect_server("220 hello\r\nESMTP\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("220 welcome\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("2200 ESMTP\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("221 ESMTP\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("* BAD\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("-ERR\r\n", VD_PROTO_UNKNOWN, "unknown");
    expect_server("ssh-2.0-x\r\n", VD_PROTO_UNKNOWN, "unknown");
    /* MySQL handshake packet: binary */
    assert_int_equal(vd_sniff_server((const uint8_t *)"\x4a\x00\x00\x00\x0a"
                                                      "8.0.36",
                                     11, &o),
                     VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);

    /* prefixes wait */
    static const char *const wait[] = {"",   "S", "SSH", "*",   "* ",        "* PREAU", "+",
                                       "+O", "2", "22",  "220", "220 ESMTP", "220-x\r"};
    for (size_t k = 0; k < VD_ARRAY_LEN(wait); k++) {
        assert_int_equal(server(wait[k], &o), VD_SNIFF_MORE);
        assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
    }
    /* a 220 line without LF is judged on its first 1 KiB */
    static char line[1500];
    memset(line, 'x', sizeof(line));
    memcpy(line, "220 ", 4);
    memcpy(line + 1020, "SMTP", 4);
    assert_int_equal(vd_sniff_server((const uint8_t *)line, 1023, &o), VD_SNIFF_MORE);
    assert_int_equal(vd_sniff_server((const uint8_t *)line, 1024, &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_SMTP);
    memcpy(line + 1020, "xSMTP", 5);
    assert_int_equal(vd_sniff_server((const uint8_t *)line, sizeof(line), &o), VD_SNIFF_DONE);
    assert_int_equal(o.proto, VD_PROTO_UNKNOWN);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_hellos),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_reframed),
        cmocka_unit_test(test_bad_records),
        cmocka_unit_test(test_corrupt_lengths),
        cmocka_unit_test(test_flip_bytes),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_big_hellos),
        cmocka_unit_test(test_ssh_http),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
