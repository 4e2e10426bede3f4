/*
 * job_signal.c - stop requests for the job driver: SIGINT/SIGTERM handlers installed with
 * sigaction that only set a flag (async-signal-safe), read by the driver between units.
 * Reference: POSIX.1-2008 sigaction(2), "Signal Concepts" (sig_atomic_t flags).
 */
#include "mpq/mpq_job.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_flag = 0;
static volatile sig_atomic_t stop_signo = 0;

static void on_signal(int sig) {
    stop_signo = sig;
    stop_flag = 1;
}

mpq_status mpq_job_signals_install(mpq_err *err) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* a second signal terminates as usual */
    const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return mpq_err_set(err, MPQ_ERR_INVALID, "sigaction(%s): %s", i ? "SIGTERM" : "SIGINT", strerror(errno));
    return MPQ_OK;
}

void mpq_job_request_stop(void) { stop_flag = 1; }
bool mpq_job_stop_requested(void) { return stop_flag != 0; }
void mpq_job_stop_clear(void) {
    stop_flag = 0;
    stop_signo = 0;
}
int mpq_job_stop_signal(void) { return (int)stop_signo; }
