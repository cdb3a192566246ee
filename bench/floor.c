/* The floor for `make bench`: the least work a durable enqueue needs. Exec'd like sendmail
 * (argv ignored), it reads stdin, writes it to SPOOL/tmp/<unique> (O_CREAT|O_EXCL), fsyncs
 * the file, renames it into SPOOL/new/ and fsyncs the directory. SPOOL comes from $FLOOR_SPOOL. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    const char *spool = getenv("FLOOR_SPOOL");
    if (!spool) return 78;
    char tmp[4096], dst[4096], dir[4096];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(tmp, sizeof tmp, "%s/tmp/%lld.%09ld.%d", spool, (long long)ts.tv_sec, ts.tv_nsec, getpid());
    snprintf(dst, sizeof dst, "%s/new/%lld.%09ld.%d", spool, (long long)ts.tv_sec, ts.tv_nsec, getpid());
    snprintf(dir, sizeof dir, "%s/new", spool);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0640);
    if (fd < 0) return 75;
    char buf[65536];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0) return 75;
            off += w;
        }
    }
    if (n < 0 || fsync(fd) != 0 || close(fd) != 0) return 75;
    if (rename(tmp, dst) != 0) return 75;
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    if (d < 0 || fsync(d) != 0) return 75;
    close(d);
    return 0;
}
