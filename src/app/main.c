/* SPDX-License-Identifier: MIT */
/* viaduct entry point: command line, configuration, listeners bound on the main thread, worker
 * threads, and signals (SIGHUP reload, SIGTERM/SIGINT graceful drain). Everything else lives in
 * libviaduct. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upgrade.h"
#include "vd/cache.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/mcache.h"
#include "vd/proxy.h"
#include "vd/sock.h"
#include "vd/tls.h"

#define MAX_CLI_LISTENERS 32

struct app {
    const char *conf_path;
    const char *cli_listen[MAX_CLI_LISTENERS];
    size_t ncli_listen;
    long cli_workers;
    struct vd_worker *workers;
    unsigned nworkers;
    uv_loop_t *loop;
    uv_signal_t sig_hup, sig_term, sig_int, sig_usr2;
    uv_timer_t disk_retry; /* upgrade: opens the cache directory once the old process let go */
    bool disk_waits;
    bool stopping;
};

static const char *const features[] = {"http1",  "tls",  "forward",   "reverse", "access-log",
                                       "reload", "pool", "dns-cache", "metrics", "upgrade"};

static void
usage(FILE *f)
{
    fputs("usage: viaduct [-c FILE] [-t] [-l ADDR:PORT]... [-w N] [--ready-file PATH]\n"
          "               [--pid-file PATH] [--features] [-V|--version] [-h|--help]\n"
          "  -c FILE         YAML configuration (default: forward proxy on 127.0.0.1:3128)\n"
          "  -t              check the configuration and exit\n"
          "  -l ADDR:PORT    forward-proxy listener, repeatable; replaces the file's listeners\n"
          "  -w N            worker threads (default: configuration, else one per core)\n"
          "  --ready-file P  after binding, write each listener's real ADDR:PORT to P\n"
          "  --pid-file P    once serving, write the process ID to P (removed at exit)\n"
          "  --features      list compiled-in features, one per line\n"
          "signals: SIGHUP reloads the configuration; SIGTERM/SIGINT drain and exit;\n"
          "         SIGUSR2 starts the binary again and hands it the listening sockets\n",
          f);
}

/* Applies command-line overrides to a freshly loaded snapshot. */
static int
apply_cli(struct app *a, struct vd_conf *c, char *err, size_t errlen)
{
    if (a->ncli_listen) {
        int r = vd_conf_set_listeners(c, a->cli_listen, a->ncli_listen, err, errlen);
        if (r < 0) {
            return r;
        }
    }
    if (a->cli_workers > 0) {
        c->workers = (uint32_t)a->cli_workers;
    }
    return 0;
}

static int
load(struct app *a, struct vd_conf **out, char *err, size_t errlen)
{
    struct vd_conf *c;
    if (a->conf_path) {
        int r = vd_conf_load(a->conf_path, &c, err, errlen);
        if (r < 0) {
            return r;
        }
    } else {
        c = vd_conf_default();
    }
    int r = apply_cli(a, c, err, errlen);
    if (r < 0) {
        vd_conf_unref(c);
        return r;
    }
    *out = c;
    return 0;
}

static bool
same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool
same_listeners(const struct vd_conf *a, const struct vd_conf *b)
{
    if (a->nlisteners != b->nlisteners) {
        return false;
    }
    for (size_t i = 0; i < a->nlisteners; i++) {
        const struct vd_conf_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (x->addrlen != y->addrlen || memcmp(&x->addr, &y->addr, x->addrlen) != 0 ||
            x->mode != y->mode || x->ncerts != y->ncerts ||
            !same_str(x->tcp_congestion, y->tcp_congestion)) {
            return false;
        }
    }
    return true;
}

/* Descriptors @c may hold with @nworkers workers at its limits: per client connection its
 * upstream connection (splice pipes come and go with large bodies and are not counted); the
 * cache's memory files and twice sendfile_files (docs/configuration.md); a margin for
 * listeners, logs, the resolver, health checks and the disk tier. */
static uint64_t
nofile_need(const struct vd_conf *c, unsigned nworkers)
{
    return (uint64_t)nworkers * c->limits.max_connections * 2 + c->cache.memory_files +
           2 * c->cache.sendfile_files + 256;
}

/* Raises the soft open-files limit to the hard one, as a server that never uses select(2) may
 * (a service manager's default soft limit is often 1024, a few hundred connections), and says
 * so (notice) when even the hard limit is below what @c may use: connections past it are
 * refused by accept (EMFILE, logged) and large cache bodies stay in ordinary memory. */
static void
raise_nofile(const struct vd_conf *c, unsigned nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            vd_log(VD_LOG_WARN, NULL, "cannot raise the open files limit from %llu to %llu: %s",
                   (unsigned long long)was, (unsigned long long)rl.rlim_max, vd_strerror(-errno));
            rl.rlim_cur = was;
        } else {
            vd_log(VD_LOG_INFO, NULL, "open files limit raised from %llu to %llu",
                   (unsigned long long)was, (unsigned long long)rl.rlim_cur);
        }
    }
    uint64_t need = nofile_need(c, nworkers);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        vd_log(VD_LOG_NOTICE, NULL,
               "open files limit %llu is below the %llu descriptors this configuration may use "
               "(%u worker%s x limits.max_connections %llu x 2, cache files): raise the hard "
               "limit (LimitNOFILE=, ulimit -Hn) or lower limits.max_connections",
               (unsigned long long)rl.rlim_cur, (unsigned long long)need, nworkers,
               nworkers == 1 ? "" : "s", (unsigned long long)c->limits.max_connections);
    }
}

static void
on_hup(uv_signal_t *s, int sig)
{
    struct app *a = s->data;
    char err[512];
    struct vd_conf *next;
    (void)sig;
    if (a->stopping) {
        return;
    }
    vd_notify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(uv_hrtime() / 1000));
    if (load(a, &next, err, sizeof(err)) < 0) {
        vd_notify("READY=1");
        vd_log(VD_LOG_ERR, NULL, "reload refused, keeping the running configuration: %s", err);
        vd_metrics_reload(false);
        return;
    }
    struct vd_conf *cur = vd_conf_current();
    if (!same_listeners(cur, next)) {
        vd_log(VD_LOG_ERR, NULL,
               "reload refused: listener addresses, modes, certificates or tcp_congestion changed "
               "(restart to change listeners)");
        vd_notify("READY=1");
        vd_conf_unref(cur);
        vd_conf_unref(next);
        vd_metrics_reload(false);
        return;
    }
    vd_conf_unref(cur);
    vd_log_level_max = next->log.level;
    const struct vd_worker_shared *sh = a->workers[0].shared;
    for (size_t i = 0; i < sh->nlisteners; i++) {
        if (sh->tls_servers[i]) {
            vd_tls_server_set_h2(sh->tls_servers[i], next->h2.enabled);
        }
    }
    raise_nofile(next, a->nworkers);
    vd_conf_swap(next);
    for (unsigned i = 0; i < a->nworkers; i++) {
        vd_worker_post(&a->workers[i], VD_WCMD_RELOAD);
    }
    vd_metrics_reload(true);
    vd_log(VD_LOG_NOTICE, NULL, "configuration reloaded from %s",
           a->conf_path ? a->conf_path : "(defaults)");
    vd_notify("READY=1");
}

/* Stops the timer that waits for the cache directory (upgrade), if it runs. */
static void
disk_retry_stop(struct app *a)
{
    if (a->disk_waits) {
        uv_close((uv_handle_t *)&a->disk_retry, NULL);
        a->disk_waits = false;
    }
}

/* Stops accepting, lets running exchanges finish (up to timeouts.shutdown_grace) and exits.
 * @upgraded: a new process took over (it, not this one, is the service systemd knows now). */
static void
drain(struct app *a, bool upgraded)
{
    a->stopping = true;
    if (!upgraded) {
        vd_notify("STOPPING=1");
    }
    for (unsigned i = 0; i < a->nworkers; i++) {
        vd_worker_post(&a->workers[i], upgraded ? VD_WCMD_DRAIN_UPGRADE : VD_WCMD_DRAIN);
    }
    uv_close((uv_handle_t *)&a->sig_hup, NULL);
    uv_close((uv_handle_t *)&a->sig_term, NULL);
    uv_close((uv_handle_t *)&a->sig_int, NULL);
    uv_close((uv_handle_t *)&a->sig_usr2, NULL);
    disk_retry_stop(a);
    vd_upgrade_close();
}

static void
on_disk_retry(uv_timer_t *t)
{
    struct app *a = t->data;
    struct vd_conf *c = vd_conf_current();
    struct vd_cache_limits lim;
    vd_cache_limits_from_conf(&lim, &c->cache);
    bool done = vd_cache_disk_retry(&lim);
    vd_conf_unref(c);
    if (done) {
        disk_retry_stop(a);
    }
}

static void
on_term(uv_signal_t *s, int sig)
{
    struct app *a = s->data;
    if (a->stopping) {
        return;
    }
    vd_log(VD_LOG_NOTICE, NULL, "signal %d: draining connections, then exiting", sig);
    drain(a, false);
}

static void
upgrade_ready(void *arg)
{
    struct app *a = arg;
    if (!a->stopping) {
        drain(a, true);
    }
}

/* SIGUSR2: binary upgrade (upgrade.h), handing over every socket the workers accept on. */
static void
on_usr2(uv_signal_t *s, int sig)
{
    struct app *a = s->data;
    (void)sig;
    if (a->stopping) {
        return;
    }
    size_t n = 0;
    for (unsigned i = 0; i < a->nworkers; i++) {
        n += a->workers[i].nlistens;
    }
    int *fds = calloc(n ? n : 1, sizeof(*fds));
    if (!fds) {
        vd_log(VD_LOG_ERR, NULL, "upgrade failed: out of memory");
        return;
    }
    size_t k = 0;
    for (unsigned i = 0; i < a->nworkers; i++) {
        for (size_t j = 0; j < a->workers[i].nlistens; j++) {
            if (a->workers[i].listens[j].fd >= 0) {
                fds[k++] = a->workers[i].listens[j].fd;
            }
        }
    }
    struct vd_conf *c = vd_conf_current();
    (void)vd_upgrade_start(fds, k, c->timeouts.upgrade_start, upgrade_ready, a);
    vd_conf_unref(c);
    free(fds);
}

/* Writes each listener's bound "ADDR:PORT" to @path (a temporary name: the caller renames it
 * into place once the process is ready, so readers never see a partial file). */
static int
write_ready_file(const char *path, const int *fds, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        return -errno;
    }
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char text[VD_SOCKADDR_TEXT];
        if (getsockname(fds[i], (struct sockaddr *)&ss, &sl) < 0) {
            fclose(f);
            return -errno;
        }
        fprintf(f, "%s\n", vd_sockaddr_text((struct sockaddr *)&ss, true, text, sizeof(text)));
    }
    if (fclose(f) != 0) {
        return -errno;
    }
    return 0;
}

/* Removes @path (NULL: none) if it still names this process: after a binary upgrade it names
 * the new one, which the old one must not take away. */
static void
remove_pid_file(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) {
        return;
    }
    int pid = 0;
    bool ours = fscanf(f, "%d", &pid) == 1 && pid == (int)getpid();
    fclose(f);
    if (ours) {
        (void)unlink(path);
    }
}

static int
open_log_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"listen", required_argument, NULL, 'l'},
        {"workers", required_argument, NULL, 'w'},
        {"ready-file", required_argument, NULL, 'r'},
        {"pid-file", required_argument, NULL, 'p'},
        {"features", no_argument, NULL, 'F'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    vd_mc_init();
    vd_tls_use_mcache(); /* before anything makes OpenSSL allocate */
    struct app a = {0};
    bool test_only = false;
    const char *ready_file = NULL, *pid_file = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tl:w:Vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            a.conf_path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'l':
            if (a.ncli_listen == MAX_CLI_LISTENERS) {
                fputs("viaduct: too many -l options\n", stderr);
                return 2;
            }
            a.cli_listen[a.ncli_listen++] = optarg;
            break;
        case 'w': {
            char *end;
            a.cli_workers = strtol(optarg, &end, 10);
            if (*end || a.cli_workers < 1 || a.cli_workers > 256) {
                fputs("viaduct: -w expects a number from 1 to 256\n", stderr);
                return 2;
            }
            break;
        }
        case 'r':
            ready_file = optarg;
            break;
        case 'p':
            pid_file = optarg;
            break;
        case 'F':
            for (size_t i = 0; i < VD_ARRAY_LEN(features); i++) {
                puts(features[i]);
            }
            return 0;
        case 'V':
            printf("viaduct %s\n", VD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    char err[1024];
    struct vd_conf *conf;
    if (load(&a, &conf, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        printf("configuration %s ok\n", a.conf_path ? a.conf_path : "(built-in default)");
        vd_conf_unref(conf);
        return 0;
    }

    vd_log_level_max = conf->log.level;
    vd_trace_mask = conf->log.trace_mask;
    const char *env_trace = getenv("VIADUCT_TRACE");
    if (env_trace) {
        vd_trace_mask |= vd_trace_parse(env_trace);
        if (vd_trace_mask) {
            vd_log_level_max = VD_LOG_DEBUG;
        }
    }
    int errfd = -1;
    if (conf->log.error_log && strcmp(conf->log.error_log, "stderr") != 0) {
        errfd = open_log_file(conf->log.error_log);
        if (errfd < 0) {
            fprintf(stderr, "viaduct: cannot open error log %s: %s\n", conf->log.error_log,
                    vd_strerror(-errno));
            vd_conf_unref(conf);
            return 1;
        }
        vd_log_set_fd(errfd);
    }
    int alogfd = -1;
    if (conf->log.access_log && strcmp(conf->log.access_log, "off") != 0) {
        if (strcmp(conf->log.access_log, "stdout") == 0) {
            alogfd = 1;
        } else {
            alogfd = open_log_file(conf->log.access_log);
            if (alogfd < 0) {
                fprintf(stderr, "viaduct: cannot open access log %s: %s\n", conf->log.access_log,
                        vd_strerror(-errno));
                vd_conf_unref(conf);
                return 1;
            }
        }
    }
    signal(SIGPIPE, SIG_IGN);

    struct vd_worker_shared sh = {0};
    sh.nlisteners = conf->nlisteners;
    sh.listen_fds = calloc(conf->nlisteners, sizeof(int));
    sh.tls_servers = calloc(conf->nlisteners, sizeof(*sh.tls_servers));
    if (!sh.listen_fds || !sh.tls_servers) {
        fputs("viaduct: out of memory\n", stderr);
        return 1;
    }
    int rc = 1;
    if (vd_tls_client_new(&conf->upstream, &sh.tls_client, err, sizeof(err)) < 0) {
        fprintf(stderr, "viaduct: %s\n", err);
        goto out;
    }
    if (conf->upstream.parent_ca_file) {
        /* The parents' own trust anchors (an internal CA, say), apart from the origins'. */
        struct vd_conf_upstream pu = conf->upstream;
        pu.ca_file = pu.parent_ca_file;
        pu.ca_path = NULL;
        if (vd_tls_client_new(&pu, &sh.tls_parent, err, sizeof(err)) < 0) {
            fprintf(stderr, "viaduct: upstream.parent_ca_file: %s\n", err);
            goto out;
        }
    } else {
        sh.tls_parent = sh.tls_client; /* the same trust anchors as origins */
    }
    if (!conf->upstream.verify) {
        vd_log(VD_LOG_WARN, NULL, "upstream.verify is false: origin certificates are NOT checked");
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        sh.listen_fds[i] = -1;
    }
    unsigned n = conf->workers ? conf->workers : (unsigned)uv_available_parallelism();
    if (n == 0) {
        n = 1;
    }
    sh.nworkers = n;
    /* Sockets handed over by the process this one replaces (SIGUSR2): each listener whose
     * address the previous process listened on takes all of its sockets. */
    struct vd_inherited *inh = NULL;
    bool activated;
    size_t ninh = vd_upgrade_inherited(&inh, &activated);
    const char *from = activated ? "socket activation" : "upgrade";
    if (ninh) {
        sh.inherit = calloc(conf->nlisteners, sizeof(*sh.inherit));
        sh.ninherit = calloc(conf->nlisteners, sizeof(*sh.ninherit));
        if (!sh.inherit || !sh.ninherit) {
            /* Out of memory: bound afresh like any start (the sockets are closed below). */
            free(sh.inherit);
            free(sh.ninherit);
            sh.inherit = NULL;
            sh.ninherit = NULL;
        }
        for (size_t i = 0; sh.inherit && i < conf->nlisteners; i++) {
            for (size_t k = 0; k < ninh; k++) {
                if (inh[k].taken ||
                    !vd_sockaddr_same_port(&conf->listeners[i].addr, &inh[k].addr)) {
                    continue;
                }
                int *nv = realloc(sh.inherit[i], (sh.ninherit[i] + 1) * sizeof(int));
                if (!nv) {
                    break;
                }
                sh.inherit[i] = nv;
                sh.inherit[i][sh.ninherit[i]++] = inh[k].fd;
                inh[k].taken = true;
            }
        }
        for (size_t k = 0; k < ninh; k++) {
            if (!inh[k].taken) {
                char text[VD_SOCKADDR_TEXT];
                vd_log(VD_LOG_NOTICE, NULL,
                       "%s: %s is not a listener of this configuration: closed", from,
                       vd_sockaddr_text((struct sockaddr *)&inh[k].addr, true, text, sizeof(text)));
                close(inh[k].fd);
            }
        }
        free(inh);
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        if (sh.inherit && sh.ninherit[i]) {
            continue; /* taken over below, not bound */
        }
        int r = vd_worker_address_free(&conf->listeners[i]);
        if (r < 0) {
            fprintf(stderr, "viaduct: cannot listen on %s: %s\n", conf->listeners[i].addr_text,
                    vd_strerror(r));
            goto out;
        }
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        const struct vd_conf_listener *l = &conf->listeners[i];
        if (l->ncerts && vd_tls_server_new(l, &sh.tls_servers[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "viaduct: listener %s: %s\n", l->addr_text, err);
            goto out;
        }
        if (sh.tls_servers[i]) {
            vd_tls_server_set_h2(sh.tls_servers[i], conf->h2.enabled);
        }
        int fd;
        if (sh.inherit && sh.ninherit[i]) {
            fd = sh.inherit[i][0];
            int r = vd_worker_listen_adopt(l, fd);
            if (r < 0) {
                fprintf(stderr, "viaduct: cannot take over %s: %s\n", l->addr_text, vd_strerror(r));
                goto out;
            }
            vd_log(VD_LOG_NOTICE, NULL, "%s: took over %zu listening socket%s on %s", from,
                   sh.ninherit[i], sh.ninherit[i] == 1 ? "" : "s", l->addr_text);
        } else {
            fd = vd_worker_listen_shared(l);
        }
        if (fd < 0) {
            fprintf(stderr, "viaduct: cannot listen on %s: %s\n", l->addr_text, vd_strerror(fd));
            goto out;
        }
        sh.listen_fds[i] = fd;
    }

    raise_nofile(conf, n);
    vd_conf_swap(vd_conf_ref(conf));
    /* Opens the cache's disk tier now, so its index is rebuilt while the workers start. */
    struct vd_cache_limits clim;
    vd_cache_limits_from_conf(&clim, &conf->cache);
    vd_cache_configure(&clim);
    a.workers = calloc(n, sizeof(*a.workers));
    if (!a.workers) {
        goto out;
    }
    for (unsigned i = 0; i < n; i++) {
        if (vd_worker_init(&a.workers[i], i, conf, &sh, err, sizeof(err)) < 0) {
            fprintf(stderr, "viaduct: worker %u: %s\n", i, err);
            a.nworkers = i + 1;
            goto out_workers;
        }
        vd_worker_set_access_log(&a.workers[i], alogfd, conf->log.access_format == VD_ALOG_JSON);
    }
    a.nworkers = n;
    /* Readiness is announced only once the signal handlers are in place (below), so a SIGTERM
     * sent right after it drains instead of killing; the addresses are taken now, while the
     * main thread still holds the sockets. */
    char ready_tmp[4096] = "";
    if (ready_file) {
        snprintf(ready_tmp, sizeof(ready_tmp), "%s.tmp", ready_file);
        int r = write_ready_file(ready_tmp, sh.listen_fds, sh.nlisteners);
        if (r < 0) {
            fprintf(stderr, "viaduct: cannot write %s: %s\n", ready_file, vd_strerror(r));
            goto out_workers;
        }
    }
    /* Every worker has its own listening socket now; keeping the first one open here would
     * keep the port accepting after a SIGTERM has closed the workers' sockets. */
    for (size_t i = 0; i < sh.nlisteners; i++) {
        close(sh.listen_fds[i]);
        sh.listen_fds[i] = -1;
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        vd_log(VD_LOG_NOTICE, NULL, "listening on %s (%s%s)", conf->listeners[i].addr_text,
               conf->listeners[i].mode == VD_MODE_FORWARD   ? "forward proxy"
               : conf->listeners[i].mode == VD_MODE_REVERSE ? "reverse proxy"
                                                            : "admin: /metrics, /healthz",
               conf->listeners[i].ncerts ? ", TLS" : "");
    }
    vd_log(VD_LOG_NOTICE, NULL, "viaduct %s started with %u worker%s", VD_VERSION, n,
           n == 1 ? "" : "s");
    for (unsigned i = 0; i < n; i++) {
        if (uv_thread_create(&a.workers[i].thread, vd_worker_run, &a.workers[i]) != 0) {
            fprintf(stderr, "viaduct: cannot start worker thread\n");
            abort();
        }
    }
    a.loop = uv_default_loop();
    uv_signal_init(a.loop, &a.sig_hup);
    uv_signal_init(a.loop, &a.sig_term);
    uv_signal_init(a.loop, &a.sig_int);
    a.sig_hup.data = a.sig_term.data = a.sig_int.data = &a;
    uv_signal_start(&a.sig_hup, on_hup, SIGHUP);
    uv_signal_start(&a.sig_term, on_term, SIGTERM);
    uv_signal_start(&a.sig_int, on_term, SIGINT);
    uv_signal_init(a.loop, &a.sig_usr2);
    a.sig_usr2.data = &a;
    uv_signal_start(&a.sig_usr2, on_usr2, SIGUSR2);
    vd_upgrade_init(a.loop, argv);
    if (ninh && !activated && vd_cache_disk_busy()) {
        /* The process this one replaces holds the cache directory until it exits. */
        vd_log(VD_LOG_NOTICE, NULL,
               "upgrade: the cache directory opens once the process this one replaces exits");
        uv_timer_init(a.loop, &a.disk_retry);
        a.disk_retry.data = &a;
        uv_timer_start(&a.disk_retry, on_disk_retry, 200, 200);
        a.disk_waits = true;
    }
    if (pid_file) {
        /* After an upgrade the new process's ID replaces the old one's in the same file. Written
         * before the ready file, so whoever waits for readiness finds it. */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", pid_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 ||
            rename(tmp, pid_file) != 0) {
            vd_log(VD_LOG_ERR, NULL, "cannot write %s: %s", pid_file, vd_strerror(-errno));
            pid_file = NULL;
        }
    }
    if (ready_file && rename(ready_tmp, ready_file) != 0) {
        vd_log(VD_LOG_ERR, NULL, "cannot write %s: %s", ready_file, vd_strerror(-errno));
    }
    vd_upgrade_ready(); /* the process this one replaces (if any) drains from now */
    vd_notify("READY=1\nMAINPID=%d", (int)getpid());
    uv_run(a.loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < n; i++) {
        uv_thread_join(&a.workers[i].thread);
    }
    uv_loop_close(a.loop);
    remove_pid_file(pid_file);
    vd_log(VD_LOG_NOTICE, NULL, "viaduct stopped");
    rc = 0;
out_workers:
    if (rc != 0) {
        /* Workers that were initialised but never ran: close their handles. */
        for (unsigned i = 0; i < a.nworkers; i++) {
            struct vd_worker *w = &a.workers[i];
            vd_worker_post(w, VD_WCMD_DRAIN);
            vd_worker_run(w);
        }
    }
    for (unsigned i = 0; i < a.nworkers; i++) {
        vd_worker_destroy(&a.workers[i]);
    }
    free(a.workers);
out:
    for (size_t i = 0; i < sh.nlisteners; i++) {
        if (sh.listen_fds[i] >= 0) {
            close(sh.listen_fds[i]);
        }
        if (sh.tls_servers[i]) {
            vd_tls_server_free(sh.tls_servers[i]);
        }
    }
    if (sh.tls_parent && sh.tls_parent != sh.tls_client) {
        vd_tls_client_free(sh.tls_parent);
    }
    if (sh.tls_client) {
        vd_tls_client_free(sh.tls_client);
    }
    free(sh.listen_fds);
    free(sh.tls_servers);
    for (size_t i = 0; sh.inherit && i < sh.nlisteners; i++) {
        free(sh.inherit[i]);
    }
    free(sh.inherit);
    free(sh.ninherit);
    vd_cache_disk_close(); /* writes what is still queued */
    vd_conf_swap(NULL);
    vd_conf_unref(conf);
    if (alogfd > 2) {
        close(alogfd);
    }
    if (errfd > 2) {
        vd_log_set_fd(2);
        close(errfd);
    }
    return rc;
}
