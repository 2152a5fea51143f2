/* wanlink: a shaped link on a tun device, for the benchmark suite's WAN scenarios.
 *
 * This kernel has no netem, so the suite routes every packet to and from the "far"
 * upstream address (e.g. 127.0.0.2, inside a private network namespace) through a tun
 * device served by this program. Each direction is a link of its own: packets are
 * serialized at RATE (a bounded FIFO in front of it: tail drop beyond QUEUE bytes, as
 * a router does), then delayed by DELAY (one way), then written back to the tun device,
 * whence the kernel delivers them locally. Built by the suite at run time; never part
 * of the product; it only ever sees packets of the namespace it runs in.
 *
 * usage: wanlink TUN FAR_ADDR DELAY_US RATE_KBIT QUEUE_BYTES SEED
 *
 * Control on stdin, one command a line, each answered on stdout with one line:
 *   loss PPM              drop this many packets per million, each direction ("ok")
 *   stall MS AFTER        after AFTER more bytes towards the near side, drop every
 *                         packet for MS milliseconds ("ok")
 *   kill AFTER            after AFTER more bytes towards the near side, drop every
 *                         packet of the connection carrying the next one, for good
 *                         (a flow dead in the middle of a transfer); other and new
 *                         connections pass ("ok")
 *   reset                 no loss, no pending stall or kill, no dead connections ("ok")
 *   stats                 "BYTES_TO_FAR BYTES_FROM_FAR DROP_LOSS DROP_QUEUE DROP_STALL
 *                         DROP_DEAD KILLED"
 *   quit                  exit 0
 * The program exits when stdin closes, so it cannot outlive the suite.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define SLOT 9216           /* MTU 9000 packets and their headers */
#define SLOTS 8192          /* per direction: 75 MB of delay line at most */
#define NPORTS 65536

typedef struct {
    int64_t due;
    int len;
    unsigned char data[SLOT];
} packet;

typedef struct {
    packet *ring;
    unsigned head, tail;    /* tail - head = queued */
    int64_t next_free;      /* when the serializer is free again (ns) */
    uint64_t bytes;
} line;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t rng_state;
static uint32_t rng(void) { /* xorshift64*: reproducible loss for a given seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32);
}

static int64_t delay_ns, rate_kbit, queue_bytes;
static uint32_t loss_ppm;
static int64_t stall_until, stall_ms_pending = -1, stall_after = -1, kill_after = -1;
static uint64_t drop_loss, drop_queue, drop_stall, drop_dead, killed;
static unsigned char dead[NPORTS]; /* by the near side's TCP/UDP port */
static line lines[2]; /* 0: towards the far address, 1: from it */

static int near_port(const unsigned char *p, int len, int to_far) {
    int ihl = (p[0] & 0x0f) * 4;
    if (len < ihl + 4 || (p[9] != IPPROTO_TCP && p[9] != IPPROTO_UDP)) return -1;
    const unsigned char *l4 = p + ihl;
    return to_far ? (l4[0] << 8 | l4[1]) : (l4[2] << 8 | l4[3]);
}

static void enqueue(line *l, const unsigned char *p, int len, int64_t now) {
    if (l->tail - l->head >= SLOTS || len > SLOT) { drop_queue++; return; }
    int64_t start = l->next_free > now ? l->next_free : now;
    /* bytes still waiting for the serializer: a router's queue, tail drop */
    if ((start - now) * rate_kbit / 8000000LL > queue_bytes) { drop_queue++; return; }
    l->next_free = start + (int64_t)len * 8000000LL / rate_kbit; /* ns = bits / (kbit/ms) */
    packet *slot = &l->ring[l->tail % SLOTS];
    slot->due = l->next_free + delay_ns;
    slot->len = len;
    memcpy(slot->data, p, (size_t)len);
    l->tail++;
}

static void command(char *cmd) {
    long long a = 0, b = 0;
    if (sscanf(cmd, "loss %lld", &a) == 1) {
        loss_ppm = (uint32_t)a;
        puts("ok");
    } else if (sscanf(cmd, "stall %lld %lld", &a, &b) == 2) {
        stall_ms_pending = a;
        stall_after = b;
        puts("ok");
    } else if (sscanf(cmd, "kill %lld", &a) == 1) {
        kill_after = a;
        puts("ok");
    } else if (strncmp(cmd, "reset", 5) == 0) {
        loss_ppm = 0;
        stall_until = 0;
        stall_after = kill_after = stall_ms_pending = -1;
        memset(dead, 0, sizeof dead);
        puts("ok");
    } else if (strncmp(cmd, "stats", 5) == 0) {
        printf("%llu %llu %llu %llu %llu %llu %llu\n", (unsigned long long)lines[0].bytes,
               (unsigned long long)lines[1].bytes, (unsigned long long)drop_loss,
               (unsigned long long)drop_queue, (unsigned long long)drop_stall,
               (unsigned long long)drop_dead, (unsigned long long)killed);
    } else if (strncmp(cmd, "quit", 4) == 0) {
        exit(0);
    } else {
        puts("error unknown command");
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: wanlink TUN FAR_ADDR DELAY_US RATE_KBIT QUEUE_BYTES SEED\n");
        return 2;
    }
    struct in_addr far;
    if (inet_pton(AF_INET, argv[2], &far) != 1) {
        fprintf(stderr, "wanlink: FAR_ADDR must be IPv4\n");
        return 2;
    }
    delay_ns = atoll(argv[3]) * 1000LL;
    rate_kbit = atoll(argv[4]);
    queue_bytes = atoll(argv[5]);
    rng_state = (uint64_t)atoll(argv[6]) | 1;
    if (delay_ns < 0 || rate_kbit <= 0 || queue_bytes <= 0) {
        fprintf(stderr, "wanlink: bad delay, rate or queue\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1000UL); /* wake within ~1 µs of a packet's due time */
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the suite's driver */

    int tun = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (tun < 0) { perror("wanlink: /dev/net/tun"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) { perror("wanlink: TUNSETIFF"); return 1; }
    for (int i = 0; i < 2; i++) {
        lines[i].ring = calloc(SLOTS, sizeof(packet));
        if (!lines[i].ring) { perror("wanlink: calloc"); return 1; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    puts("ready");

    unsigned char buf[65536];
    char cmd[256];
    size_t cmd_len = 0;
    for (;;) {
        int64_t now = now_ns(), next = -1;
        for (int i = 0; i < 2; i++) {
            line *l = &lines[i];
            if (l->tail != l->head) {
                int64_t due = l->ring[l->head % SLOTS].due;
                if (next < 0 || due < next) next = due;
            }
        }
        struct pollfd fds[2] = {{.fd = tun, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        struct timespec wait, *timeout = NULL;
        if (next >= 0) {
            int64_t d = next > now ? next - now : 0;
            wait.tv_sec = d / 1000000000LL;
            wait.tv_nsec = d % 1000000000LL;
            timeout = &wait;
        }
        if (ppoll(fds, 2, timeout, NULL) < 0 && errno != EINTR) { perror("wanlink: ppoll"); return 1; }
        now = now_ns();

        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
            if (r <= 0) return 0; /* the driver went away */
            cmd_len += (size_t)r;
            char *nl;
            while ((nl = memchr(cmd, '\n', cmd_len))) {
                *nl = '\0';
                command(cmd);
                size_t used = (size_t)(nl + 1 - cmd);
                memmove(cmd, nl + 1, cmd_len - used);
                cmd_len -= used;
            }
            if (cmd_len == sizeof cmd - 1) cmd_len = 0; /* overlong line: dropped */
        }

        for (int burst = 0; burst < 512 && (fds[0].revents & POLLIN); burst++) {
            ssize_t len = read(tun, buf, sizeof buf);
            if (len < 0) break; /* EAGAIN: drained */
            if (len < 20 || (buf[0] >> 4) != 4) continue; /* IPv4 only */
            uint32_t src, dst;
            memcpy(&src, buf + 12, 4);
            memcpy(&dst, buf + 16, 4);
            int to_far = dst == far.s_addr;
            if (!to_far && src != far.s_addr) continue; /* not ours: never forwarded */
            line *l = &lines[to_far ? 0 : 1];
            int port = near_port(buf, (int)len, to_far);
            if (port >= 0 && dead[port]) { drop_dead++; continue; }
            if (!to_far) { /* towards the near side: where stall and kill are counted */
                if (stall_after >= 0 && (stall_after -= len) <= 0) {
                    stall_until = now + stall_ms_pending * 1000000LL;
                    stall_after = -1;
                }
                if (kill_after >= 0 && (kill_after -= len) <= 0 && port >= 0) {
                    dead[port] = 1; /* the connection carrying this very packet */
                    killed++;
                    kill_after = -1;
                    drop_dead++;
                    continue;
                }
            }
            if (now < stall_until) { drop_stall++; continue; }
            if (loss_ppm && rng() % 1000000U < loss_ppm) { drop_loss++; continue; }
            l->bytes += (uint64_t)len;
            enqueue(l, buf, (int)len, now);
        }

        now = now_ns();
        for (int i = 0; i < 2; i++) {
            line *l = &lines[i];
            while (l->tail != l->head && l->ring[l->head % SLOTS].due <= now) {
                packet *p = &l->ring[l->head % SLOTS];
                if (write(tun, p->data, (size_t)p->len) < 0 && errno != EAGAIN) {
                    perror("wanlink: write");
                    return 1;
                }
                l->head++;
            }
        }
    }
}
