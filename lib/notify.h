/* The daemons' side of systemd's service protocol (sd_notify(3)): READY=1 once serving,
 * STATUS= lines, RELOADING=1 around a reload, and WATCHDOG=1 from the event loop when the
 * unit sets WatchdogSec. All no-ops when not started by systemd (no NOTIFY_SOCKET). Not for
 * the stdout READY lines the tests and other supervisors read (those stay). */
#ifndef REFEX_NOTIFY_H
#define REFEX_NOTIFY_H

/* READY=1 with a STATUS= line. */
void refex_notify_ready(const char *status);
void refex_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void refex_notify_reloading(void);
/* The reload is over: READY=1 again if the daemon was ready before, and a STATUS= line. */
void refex_notify_reloaded(const char *status);
/* Before READY=1, from the event loop: start-up goes on for `seconds` more (sent every third
 * of that), so systemd's start timeout fires only if the loop stops. */
void refex_notify_extend_start(int seconds);
/* From the event loop, every cycle: WATCHDOG=1 at half the watchdog interval. */
void refex_notify_watchdog(void);

#endif
