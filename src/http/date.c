/* SPDX-License-Identifier: MIT */
/* HTTP dates (RFC 9110 §5.6.7): the current time as IMF-fixdate, formatted once per second per
 * thread, for the Date field the proxy adds (§6.6.1). */
#include "vd/config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vd/http.h"

size_t
vd_http_date_now(char *out)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static _Thread_local time_t last = -1;
    static _Thread_local char cached[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(cached, sizeof(cached), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        last = now;
    }
    memcpy(out, cached, VD_HTTP_DATE_LEN + 1);
    return VD_HTTP_DATE_LEN;
}
