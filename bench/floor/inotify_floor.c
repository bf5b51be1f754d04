/* The floor for any inotify-driven reloader on this machine, for the save scenario.
 *
 *   inotify_floor DIR PID DEBOUNCE_MS
 *
 * Blocks in read(2) on an inotify fd watching DIR for IN_CLOSE_WRITE only. On each wake-up it
 * sleeps DEBOUNCE_MS from the moment it woke (clock_nanosleep, TIMER_ABSTIME; 0 = no sleep),
 * then sends SIGHUP to PID with kill(2). No filtering, no discovery, no verification: with
 * DEBOUNCE_MS=0 its latency is one wake-up plus signal delivery, what no watcher can avoid;
 * with the benchmark's debounce it is the plainest possible debouncing reloader.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR PID DEBOUNCE_MS\n", argv[0]);
        return 2;
    }
    pid_t pid = (pid_t)atoi(argv[2]);
    long debounce_ms = atol(argv[3]);
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, argv[1], IN_CLOSE_WRITE) < 0) {
        perror("inotify");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[4096];
    for (;;) {
        if (read(fd, buf, sizeof buf) <= 0)
            return 1;
        if (debounce_ms > 0) {
            struct timespec at;
            clock_gettime(CLOCK_MONOTONIC, &at);
            at.tv_sec += debounce_ms / 1000;
            at.tv_nsec += (debounce_ms % 1000) * 1000000L;
            if (at.tv_nsec >= 1000000000L) {
                at.tv_sec += 1;
                at.tv_nsec -= 1000000000L;
            }
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0) {
            }
        }
        kill(pid, SIGHUP);
    }
}
