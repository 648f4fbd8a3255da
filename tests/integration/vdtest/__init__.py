# SPDX-License-Identifier: MIT
"""Test support for viaduct's black-box integration suite.

Modules: httpmsg (HTTP/1 message reading and building), client (raw-socket client
connections), origins (scripted origin servers), dns (a tiny UDP DNS server), certs
(test PKI made with the openssl CLI), proc (the viaduct process launcher), yamlconf
(a small YAML emitter for configuration files).
"""
