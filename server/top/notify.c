/*
 * notify.c: systemd's notifications (notify.h). The protocol is one
 * datagram of "KEY=VALUE" lines; libsystemd would bring a dependency for
 * these few lines.
 */
#include "top/notify.h"
#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

void tycho_notify(const char *state)
{
    static bool warned;
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = path ? strlen(path) : 0;
    char msg[256];
    int fd, n;

    if (len == 0)
        return;
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        if (!warned)
            tycho_log_warn("NOTIFY_SOCKET=%s: not a socket path; systemd is not told", path);
        warned = true;
        return;
    }
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';        /* the abstract namespace */
    n = snprintf(msg, sizeof(msg), "%s", state);
    if (strcmp(state, "RELOADING=1") == 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        n = snprintf(msg, sizeof(msg), "%s\nMONOTONIC_USEC=%lld", state,
                     (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
    }
    if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0 ||
        sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
        if (!warned)
            tycho_log_warn("NOTIFY_SOCKET=%s: cannot tell systemd %s: %s", path, state,
                           strerror(errno));
        warned = true;
    }
    if (fd >= 0)
        close(fd);
}
