// live555-proxy: live555's RTSP proxy (ProxyServerMediaSession), the peer `live555` of
// loadtest/shared-bench.sh. A short main doing what live555's live555ProxyServer does, with the
// streams named like the relay's routes, so the same viewers can watch either.
//
//   live555-proxy LISTEN_IPV4 RTSP_PORT HTTP_TUNNEL_PORT|0 BACKEND_URL...
//
// Stream i (0-based) proxies the i-th BACKEND_URL as rtsp://host:RTSP_PORT/cam<i>; each back end
// is one RTSP session shared by every viewer of its stream (live555 opens it at the first viewer).
// HTTP_TUNNEL_PORT, if not 0, also takes RTSP-over-HTTP tunnels (live555 takes them on RTSP_PORT
// as well). Both listen on LISTEN_IPV4 (and on IPv6 loopback when that is 127.0.0.1), not on every
// address as live555ProxyServer does: a busy test box's outgoing connections from 127.0.0.x may
// hold the same port number, which fails a bind to 0.0.0.0 but not one to 127.0.0.1 (what the
// benchmark's free-port probe checks). Built by build.sh.
#include <arpa/inet.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>

#include "BasicUsageEnvironment.hh"
#include "GroupsockHelper.hh"
#include "liveMedia.hh"

int main(int argc, char** argv) {
  if (argc < 5 || inet_addr(argv[1]) == INADDR_NONE) {
    std::fprintf(stderr, "usage: %s LISTEN_IPV4 RTSP_PORT HTTP_TUNNEL_PORT|0 BACKEND_URL...\n", argv[0]);
    return 2;
  }
  // live555's listening sockets bind to these (its default: every address).
  ReceivingInterfaceAddr = inet_addr(argv[1]);
  if (ReceivingInterfaceAddr == htonl(INADDR_LOOPBACK)) ReceivingInterfaceAddr6 = in6addr_loopback;
  // Thousands of viewers need thousands of descriptors: the soft limit up to the hard one, as
  // the relay does at start (build.sh widens live555's select() set to match).
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  // live555ProxyServer raises the largest frame it can forward; this version's default is
  // already 2 MB, kept explicit so no picture the camera sends is ever truncated.
  OutPacketBuffer::increaseMaxSizeTo(2000000);

  TaskScheduler* scheduler = BasicTaskScheduler::createNew();
  UsageEnvironment* env = BasicUsageEnvironment::createNew(*scheduler);
  int const rtspPort = std::atoi(argv[2]);
  int const httpPort = std::atoi(argv[3]);
  RTSPServer* server = RTSPServer::createNew(*env, Port(rtspPort));
  if (server == NULL) {
    *env << "live555-proxy: RTSP server on port " << rtspPort << ": " << env->getResultMsg() << "\n";
    return 1;
  }
  int const first = 4;  // the first BACKEND_URL
  for (int i = first; i < argc; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "cam%d", i - first);
    // 0xFFFF: RTP over the back end's RTSP TCP connection, not UDP (live555ProxyServer -t); the
    // loadtest camera, like many cameras behind NAT, serves interleaved TCP only.
    ServerMediaSession* sms = ProxyServerMediaSession::createNew(
        *env, server, argv[i], name, NULL, NULL, (portNumBits)0xFFFF, 0 /* verbosity */);
    server->addServerMediaSession(sms);
  }
  if (httpPort != 0 && !server->setUpTunnelingOverHTTP(Port(httpPort))) {
    *env << "live555-proxy: HTTP tunnel port " << httpPort << ": " << env->getResultMsg() << "\n";
    return 1;
  }
  *env << "live555-proxy: " << (argc - first) << " stream(s) on " << argv[1] << ":" << rtspPort << "\n";
  env->taskScheduler().doEventLoop();  // never returns
  return 0;
}
