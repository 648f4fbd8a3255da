/* SPDX-License-Identifier: MIT */
/* TUN devices (Linux Documentation/networking/tuntap.rst) and host routes through them
 * (rtnetlink, RTM_NEWROUTE), and the host's own source address towards a client (for the ICMP
 * errors of RFC 9484 §7.2.1). Used by connect-ip (src/proxy/masque_ip.c), one device per
 * session. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vd/tun.h"

int
vd_tun_open(const char *prefix, uint32_t mtu, char *name, int *ifindex)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    /* "%d": the kernel picks the first free number (dev_alloc_name). */
    snprintf(ifr.ifr_name, IFNAMSIZ, "%.12s%%d", prefix);
    int err = 0;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = '\0';
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    ifr.ifr_mtu = (int)mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        err = -errno;
    } else {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0 || ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
            err = -errno;
        }
    }
    close(s);
    if (err) {
        close(fd);
        return err;
    }
    *ifindex = ifr.ifr_ifindex;
    return fd;
}

static void
add_attr(struct nlmsghdr *nh, size_t cap, unsigned short type, const void *data, size_t len)
{
    struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
    size_t need = NLMSG_ALIGN(nh->nlmsg_len) + RTA_SPACE(len);
    if (need > cap) {
        return; /* the caller sized the buffer for its attributes */
    }
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    nh->nlmsg_len = (uint32_t)need;
}

int
vd_tun_route_add(int ifindex, uint8_t ver, const uint8_t *addr, unsigned plen)
{
    union {
        struct nlmsghdr nh;
        char buf[256];
    } req;

    memset(&req, 0, sizeof(req));
    req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    req.nh.nlmsg_type = RTM_NEWROUTE;
    req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req.nh.nlmsg_seq = 1;
    struct rtmsg *rt = NLMSG_DATA(&req.nh);
    rt->rtm_family = ver == 4 ? AF_INET : AF_INET6;
    rt->rtm_dst_len = (unsigned char)plen;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_STATIC;
    rt->rtm_scope = RT_SCOPE_LINK;
    rt->rtm_type = RTN_UNICAST;
    add_attr(&req.nh, sizeof(req), RTA_DST, addr, ver == 4 ? 4 : 16);
    uint32_t oif = (uint32_t)ifindex;
    add_attr(&req.nh, sizeof(req), RTA_OIF, &oif, sizeof(oif));

    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) {
        return -errno;
    }
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int err = 0;
    if (sendto(s, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) {
        err = -errno;
        goto out;
    }

    /* The acknowledgement: an NLMSG_ERROR whose error is 0 on success or -errno. The kernel
     * answers before sendto returns, so this recv does not wait. */
    union {
        struct nlmsghdr nh;
        char buf[1024];
    } ack;

    ssize_t n = recv(s, &ack, sizeof(ack), 0);
    if (n < 0) {
        err = -errno;
    } else if ((size_t)n < NLMSG_LENGTH(sizeof(struct nlmsgerr)) ||
               ack.nh.nlmsg_type != NLMSG_ERROR) {
        err = -EPROTO;
    } else {
        err = ((struct nlmsgerr *)NLMSG_DATA(&ack.nh))->error;
    }
out:
    close(s);
    return err;
}

int
vd_tun_source_addr(uint8_t ver, const uint8_t *dst, uint8_t *out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (ver == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(9); /* any port: connect() on UDP only picks the route */
        memcpy(&a->sin_addr, dst, 4);
        sl = sizeof(*a);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(9);
        memcpy(&a->sin6_addr, dst, 16);
        sl = sizeof(*a);
    }
    int s = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return -errno;
    }
    int err = 0;
    if (connect(s, (struct sockaddr *)&ss, sl) < 0 ||
        getsockname(s, (struct sockaddr *)&ss, &sl) < 0) {
        err = -errno;
    } else if (ver == 4) {
        memcpy(out, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    } else {
        memcpy(out, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    }
    close(s);
    return err;
}
