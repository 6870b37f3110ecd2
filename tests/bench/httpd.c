/*
 * bench-httpd: a minimal keep-alive HTTP/1.1 server for benchmarks.
 *
 * One epoll thread; answers every request (anything ending in CRLFCRLF)
 * with a fixed body.  It exists so that the server is never the bottleneck
 * when comparing direct pod-to-pod traffic with traffic through
 * node-proxy; it is not part of the product.
 *
 *   bench-httpd PORT [BODY_BYTES]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 65536

static char resp[65536 + 256];
static size_t resp_len;
static char *inbuf[MAXC];
static size_t inlen[MAXC];

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 8080;
	int body = argc > 2 ? atoi(argv[2]) : 64;
	int one = 1, lfd, ep;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct epoll_event ev, evs[256];

	if (body < 0 || body > 65536)
		return 2;
	resp_len = (size_t)snprintf(resp, sizeof(resp),
	                            "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
	                            "Content-Type: text/plain\r\n\r\n",
	                            body);
	memset(resp + resp_len, 'x', (size_t)body);
	resp_len += (size_t)body;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) || listen(lfd, 4096)) {
		perror("bind/listen");
		return 1;
	}
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					if (c >= MAXC) {
						close(c);
						continue;
					}
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					if (!inbuf[c])
						inbuf[c] = malloc(16384);
					inlen[c] = 0;
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			ssize_t r = read(fd, inbuf[fd] + inlen[fd], 16384 - inlen[fd]);
			if (r <= 0) {
				close(fd);
				continue;
			}
			inlen[fd] += (size_t)r;
			/* answer every complete request in the buffer */
			char *p = inbuf[fd], *end = inbuf[fd] + inlen[fd], *q;
			while ((q = memmem(p, (size_t)(end - p), "\r\n\r\n", 4))) {
				if (write(fd, resp, resp_len) < 0)
					break;
				p = q + 4;
			}
			inlen[fd] = (size_t)(end - p);
			memmove(inbuf[fd], p, inlen[fd]);
			if (inlen[fd] == 16384) {
				close(fd);
			}
		}
	}
}
