/* SPDX-License-Identifier: MIT */
/* Binary upgrade without closing the listening sockets (SIGUSR2): the running process starts
 * the binary at its own path with the same arguments, handing it every listening socket; the
 * new process adopts the sockets whose addresses its configuration still names, says when it
 * is serving, and the old one then drains and exits as on SIGTERM. No accept queue is ever
 * closed, so no connection is refused or reset on the way. See docs/architecture.md. */
#ifndef VD_APP_UPGRADE_H
#define VD_APP_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

/* A listening socket taken over from the previous process. */
struct vd_inherited {
    int fd;
    struct sockaddr_storage addr; /* its bound address */
    socklen_t addrlen;
    bool taken; /* adopted by a listener */
};

/* Reads the sockets the previous process handed over (environment VIADUCT_LISTEN_FDS) and the
 * readiness pipe (VIADUCT_UPGRADE_FD), or the sockets systemd passes to a socket-activated
 * service (LISTEN_FDS from descriptor 3, when LISTEN_PID is this process), removing the
 * variables from the environment. Descriptors that are not listening TCP sockets are ignored
 * and logged. Returns how many were found (*@out, to free) or 0; *@activated tells systemd's. */
size_t vd_upgrade_inherited(struct vd_inherited **out, bool *activated);

/* sd_notify(3) without libsystemd: sends @state ("READY=1", ...) to the datagram socket named
 * by NOTIFY_SOCKET (a path, or "@name" in the abstract namespace). Nothing when it is unset. */
void vd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Tells the previous process that this one serves now (nothing when not started by one). */
void vd_upgrade_ready(void);

/* The running process's side. Called once at start with the path of the binary and the command
 * line, which a later upgrade runs again. */
void vd_upgrade_init(uv_loop_t *loop, char **argv);

/* Starts the new process with listening sockets @fds (@n of them). @on_ready is called once it
 * serves (the caller then drains); a new process that does not serve within @ready_ms is
 * stopped. Failures are logged and leave this process as it was.
 * Returns false when an upgrade is already under way or could not start (logged). */
bool vd_upgrade_start(const int *fds, size_t n, uint64_t ready_ms, void (*on_ready)(void *),
                      void *arg);

/* Closes the upgrade's handles (shutdown); an upgrade under way is abandoned (the new process, if
 * any, is left running). */
void vd_upgrade_close(void);

#endif
