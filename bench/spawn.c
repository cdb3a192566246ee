/* spawn: run CMD N times, sequentially, stdin from FILE, as a caller would (fork + exec from a
 * small process, so the child's peak RSS is its own and not a copy of a big parent's).
 * Usage: spawn FILE N CMD [ARGS...]
 * Prints: <wall ns total> <user+sys us total> <max peak RSS KiB> <non-zero exits> */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) return 64;
    int n = atoi(argv[2]);
    long long wall = 0, cpu = 0;
    long maxrss = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        pid_t p = fork();
        if (p == 0) {
            int fd = open(argv[1], O_RDONLY);
            if (fd < 0 || dup2(fd, 0) < 0) _exit(127);
            execv(argv[3], argv + 3);
            _exit(127);
        }
        int st;
        struct rusage ru;
        if (wait4(p, &st, 0, &ru) < 0) return 71;
        clock_gettime(CLOCK_MONOTONIC, &b);
        wall += (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
        cpu += ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
        if (ru.ru_maxrss > maxrss) maxrss = ru.ru_maxrss;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    printf("%lld %lld %ld %d\n", wall, cpu, maxrss, bad);
    return 0;
}
