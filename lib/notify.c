/* sd_notify(3) for the daemons (notify.h), through libsystemd. */
#include "notify.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "util.h"

static int g_ready; /* READY=1 was sent */

void refex_notify_ready(const char *status)
{
    g_ready = 1;
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void refex_notify_reloaded(const char *status)
{
    if (g_ready)
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    else
        sd_notifyf(0, "STATUS=%s", status);
}

void refex_notify_status(const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sd_notifyf(0, "STATUS=%s", text);
}

void refex_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* MONOTONIC_USEC: what Type=notify-reload (systemd 253) asks with RELOADING=1 */
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void refex_notify_extend_start(int seconds)
{
    static int64_t next_ms;
    int64_t now = refex_mono_ms();
    if (now < next_ms)
        return;
    next_ms = now + (int64_t)seconds * 1000 / 3;
    sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)seconds * 1000000ULL);
}

void refex_notify_watchdog(void)
{
    static int enabled = -1;
    static uint64_t usec;
    static int64_t next_ms;
    if (enabled < 0)
        enabled = sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000;
    if (!enabled)
        return;
    int64_t now = refex_mono_ms();
    if (now < next_ms)
        return;
    next_ms = now + (int64_t)(usec / 2000);
    sd_notify(0, "WATCHDOG=1");
}
