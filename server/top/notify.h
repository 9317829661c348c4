/*
 * notify.h: systemd's service notifications (sd_notify(3)'s protocol, written
 * directly: one datagram to the unix socket named by $NOTIFY_SOCKET, "@" at
 * its start for the abstract namespace). Without $NOTIFY_SOCKET every call is
 * a no-op. Main thread.
 */
#ifndef TYCHO_NOTIFY_H
#define TYCHO_NOTIFY_H

/*
 * Sends state ("READY=1", "RELOADING=1", "STOPPING=1", with "\n"-separated
 * fields). MONOTONIC_USEC is added to RELOADING=1, as systemd's
 * Type=notify-reload wants. Failures are logged once and otherwise ignored:
 * the server serves whatever systemd hears.
 */
void tycho_notify(const char *state);

#endif
