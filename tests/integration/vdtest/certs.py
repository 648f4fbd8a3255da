# SPDX-License-Identifier: MIT
"""Test PKI made with the openssl CLI: a CA and leaf certificates (EC P-256).

server     CN=localhost, SAN localhost, origin.test, 127.0.0.1 (signed by the CA)
wildcard   CN=*.example.test, SAN *.example.test (signed by the CA)
wrongname  CN=wrong.test, SAN wrong.test (signed by the CA)
expired    SAN localhost, origin.test, 127.0.0.1; valid 2020-01-01..2021-01-01 (signed by
           the CA with `openssl ca -startdate/-enddate`; the CLI's x509 cannot backdate)
selfsigned SAN localhost, origin.test, 127.0.0.1; self-signed, not from the CA
"""
import os
import subprocess

SERVER_SAN = "DNS:localhost,DNS:origin.test,IP:127.0.0.1"


class Leaf:
    def __init__(self, d, name):
        self.cert = os.path.join(d, name + ".pem")
        self.key = os.path.join(d, name + ".key")


def _run(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr))


def _leaf_ext(san):
    return ("basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
            "subjectAltName=%s\n" % san)


class PKI:
    def __init__(self, d):
        d = str(d)
        self.dir = d
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _run(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
                                      "-subj", "/CN=viaduct test CA",
                                      "-addext", "basicConstraints=critical,CA:TRUE",
                                      "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
        self.server = self._signed("server", "/CN=localhost", SERVER_SAN)
        self.wildcard = self._signed("wildcard", "/CN=*.example.test", "DNS:*.example.test")
        self.wrongname = self._signed("wrongname", "/CN=wrong.test", "DNS:wrong.test")
        self.expired = self._expired("expired", "/CN=origin.test", SERVER_SAN)
        self.selfsigned = Leaf(d, "selfsigned")
        _run(["req", "-x509"] + ec + ["-keyout", "selfsigned.key", "-out", "selfsigned.pem",
                                      "-days", "825", "-subj", "/CN=origin.test",
                                      "-addext", "subjectAltName=" + SERVER_SAN], d)

    def _csr(self, name, subj):
        _run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", name + ".key", "-out", name + ".csr", "-subj", subj], self.dir)

    def _signed(self, name, subj, san):
        self._csr(name, subj)
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write(_leaf_ext(san))
        _run(["x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", name + ".pem", "-days", "825", "-sha256",
              "-extfile", name + ".ext"], self.dir)
        return Leaf(self.dir, name)

    def _expired(self, name, subj, san):
        self._csr(name, subj)
        cadir = os.path.join(self.dir, "ca-db")
        os.makedirs(os.path.join(cadir, "new"), exist_ok=True)
        open(os.path.join(cadir, "index.txt"), "w").close()
        with open(os.path.join(cadir, "serial"), "w") as f:
            f.write("1000\n")
        cnf = os.path.join(cadir, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n"
                    "[d]\ndatabase = %s/index.txt\nnew_certs_dir = %s/new\nserial = %s/serial\n"
                    "default_md = sha256\npolicy = p\nunique_subject = no\n"
                    "[p]\ncommonName = supplied\n"
                    "[leaf]\n%s" % (cadir, cadir, cadir, _leaf_ext(san)))
        _run(["ca", "-batch", "-notext", "-config", cnf, "-cert", "ca.pem", "-keyfile", "ca.key",
              "-in", name + ".csr", "-out", name + ".pem", "-extensions", "leaf",
              "-startdate", "20200101000000Z", "-enddate", "20210101000000Z"], self.dir)
        return Leaf(self.dir, name)
