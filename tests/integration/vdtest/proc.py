# SPDX-License-Identifier: MIT
"""The viaduct process launcher used by the `viaduct` fixture."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from . import yamlconf
from .client import ClientConn
from .httpmsg import DEFAULT_TIMEOUT

# VDTEST_TIMEOUT_SCALE (default 1) multiplies the launcher's start and stop waits for slow runs
# (valgrind, see CONTRIBUTING.md); the timeouts inside the tests are not scaled.
TIMEOUT_SCALE = float(os.environ.get("VDTEST_TIMEOUT_SCALE", "1"))

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer")


def sanitizer_env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    env.setdefault("LSAN_OPTIONS", "exitcode=23")
    return env


def run_bin(binary, args, timeout=30, cwd=None):
    """Runs viaduct to completion (-t, -V, --features ...); returns CompletedProcess."""
    return subprocess.run([binary] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=sanitizer_env(), cwd=cwd, stdin=subprocess.DEVNULL)


def parse_addr(text):
    text = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text) or re.fullmatch(r"([^:]+):(\d+)", text)
    if not m:
        raise AssertionError("bad ready-file line %r" % text)
    return m.group(1), int(m.group(2))


class Viaduct:
    """A running viaduct. @conf: a dict written as YAML (None: no -c). @args: extra CLI args."""

    def __init__(self, binary, workdir, conf=None, args=(), n_listeners=None, conf_text=None,
                 env=None):
        self.binary = binary
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = conf
        self.conf_path = os.path.join(self.dir, "viaduct.yaml")
        self.ready_path = os.path.join(self.dir, "ready")
        self.stderr_path = os.path.join(self.dir, "stderr.txt")
        self.stdout_path = os.path.join(self.dir, "stdout.txt")
        self.clients = []
        self.proc = None
        self.returncode = None
        self.addrs = []
        if conf is not None or conf_text is not None:
            self.write_conf(conf, conf_text)
        cmd = [binary]
        if conf is not None or conf_text is not None:
            cmd += ["-c", self.conf_path]
        cmd += list(args) + ["--ready-file", self.ready_path]
        if n_listeners is None:
            n_l = sum(1 for a in args if a == "-l")
            if n_l == 0 and conf:
                n_l = len(conf.get("listeners", []))
            n_listeners = n_l
        self.n_listeners = max(1, n_listeners)
        self.cmd = cmd
        e = sanitizer_env()
        if env:
            e.update(env)
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=e, cwd=self.dir)
        self._wait_ready(10.0 * TIMEOUT_SCALE)

    # ------------------------------------------------------------ config
    def write_conf(self, conf=None, text=None):
        if text is None:
            text = yamlconf.dump(conf) + "\n"
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)
        if conf is not None:
            self.conf = conf

    @property
    def access_log(self):
        if self.conf:
            return self.conf.get("log", {}).get("access_log")
        return None

    @property
    def error_log(self):
        if self.conf:
            p = self.conf.get("log", {}).get("error_log")
            if p and p != "stderr":
                return p
        return None

    # ------------------------------------------------------------ process
    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise AssertionError("viaduct exited with %s before it was ready; stderr:\n%s" %
                                     (self.proc.returncode, self.stderr[-4000:]))
            try:
                with open(self.ready_path) as f:
                    data = f.read()
            except FileNotFoundError:
                data = ""
            lines = [ln for ln in data.split("\n")[:-1] if ln.strip()] if data.endswith("\n") else []
            if len(lines) >= self.n_listeners:
                self.addrs = [parse_addr(ln) for ln in lines]
                return
            time.sleep(0.02)
        self.kill()
        raise AssertionError("viaduct not ready after %.0fs (ready file: %r); stderr:\n%s" %
                             (timeout, data, self.stderr[-4000:]))

    @property
    def pid(self):
        return self.proc.pid

    def port(self, i=0):
        return self.addrs[i][1]

    def addr(self, i=0):
        return self.addrs[i][0]

    def authority(self, i=0):
        a = self.addr(i)
        return ("[%s]:%d" if ":" in a else "%s:%d") % (a, self.port(i))

    @property
    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def read_error_log(self):
        text = self.stderr
        if self.error_log and os.path.exists(self.error_log):
            with open(self.error_log, "rb") as f:
                text += f.read().decode("utf-8", "replace")
        return text

    def read_access_log(self):
        p = self.access_log
        if not p or not os.path.exists(p):
            return ""
        with open(p, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, pattern, timeout=5.0, access=False):
        """Polls the error log (or access log) until regex @pattern matches; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.read_access_log() if access else self.read_error_log()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("no %r in %s log after %.0fs:\n%s" %
                                     (pattern, "access" if access else "error", timeout,
                                      text[-3000:]))
            time.sleep(0.05)

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def connect(self, i=0, timeout=DEFAULT_TIMEOUT, **kw):
        c = ClientConn(self.addr(i), self.port(i), timeout=timeout, **kw)
        self.clients.append(c)
        return c

    def wait_exit(self, timeout=15.0):
        timeout *= TIMEOUT_SCALE
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("viaduct did not exit within %.0fs" % timeout)
        return self.returncode

    def stop(self, timeout=15.0, close_clients=True):
        """SIGTERM, then waits; returns the exit code."""
        if close_clients:
            for c in self.clients:
                c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def check_clean(self):
        """Asserts the teardown conditions: exit 0, no [alert], no sanitizer report."""
        problems = []
        if self.returncode != 0:
            problems.append("exit code %r" % self.returncode)
        text = self.read_error_log()
        if "[alert]" in text:
            problems.append("[alert] in the error log")
        for m in SANITIZER_MARKERS:
            if m in text:
                problems.append("sanitizer report (%s)" % m)
        if problems:
            raise AssertionError("viaduct teardown: %s; stderr tail:\n%s" %
                                 (", ".join(problems), text[-6000:]))


def poll(fn, timeout=5.0, step=0.05):
    """Calls @fn until it returns something true or @timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def connect_refused(addr, port, timeout=1.0):
    """True when a TCP connect to addr:port is refused."""
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def stop_all(started):
    """Fixture teardown: stops every Viaduct in @started (or waits for one that already exited)
    and checks it ended cleanly; fails the test once with every problem found."""
    errors = []
    for v in started:
        try:
            if v.running():
                v.stop()
            else:
                v.wait_exit()
            v.check_clean()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def free_port():
    """A loopback TCP port nothing listens on now (for a listener that must keep its port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pid_alive(pid):
    """True while process @pid exists and is not a zombie (it need not be our child)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def stop_pid(pid, timeout=15.0):
    """SIGTERM to @pid (a viaduct a test made another one start: not our child, so it cannot
    be waited for); waits until it is gone."""
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
    assert poll(lambda: not pid_alive(pid), timeout=timeout), "process %d did not exit" % pid
