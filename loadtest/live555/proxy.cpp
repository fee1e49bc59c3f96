// live555-proxy: live555's RTSP proxy (ProxyServerMediaSession), the peer `live555` of
// loadtest/shared-bench.sh. A short main doing what live555's live555ProxyServer does, with the
// streams named like the relay's routes, so the same viewers can watch either.
//
//   live555-proxy RTSP_PORT HTTP_TUNNEL_PORT|0 BACKEND_URL...
//
// Stream i (0-based) proxies the i-th BACKEND_URL as rtsp://host:RTSP_PORT/cam<i>; each back end
// is one RTSP session shared by every viewer of its stream (live555 opens it at the first viewer).
// HTTP_TUNNEL_PORT, if not 0, also takes RTSP-over-HTTP tunnels (live555 takes them on RTSP_PORT
// as well). Built by build.sh.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>

#include "BasicUsageEnvironment.hh"
#include "liveMedia.hh"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s RTSP_PORT HTTP_TUNNEL_PORT|0 BACKEND_URL...\n", argv[0]);
    return 2;
  }
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
  int const rtspPort = std::atoi(argv[1]);
  int const httpPort = std::atoi(argv[2]);
  RTSPServer* server = RTSPServer::createNew(*env, Port(rtspPort));
  if (server == NULL) {
    *env << "live555-proxy: RTSP server on port " << rtspPort << ": " << env->getResultMsg() << "\n";
    return 1;
  }
  for (int i = 3; i < argc; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "cam%d", i - 3);
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
  *env << "live555-proxy: " << (argc - 3) << " stream(s) on port " << rtspPort << "\n";
  env->taskScheduler().doEventLoop();  // never returns
  return 0;
}
