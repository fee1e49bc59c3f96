//! One simulated viewer: a tunnel client (GET + POST, base64 commands) or a plain RTSP/TCP
//! client, through the whole dialogue, then reading media and measuring it until told to stop.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use hdrhistogram::Histogram;
use rtsp_tunnel_relay::proto::interleaved::{Demux, Event};
use rtsp_tunnel_relay::proto::rtsp::{Message, MessageLimits};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::payload;
use crate::report::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tunnel,
    Rtsp,
}

/// What one viewer measured.
pub struct Outcome {
    pub setup_us: u64,
    pub media_us: Histogram<u64>,
    pub bytes: u64,
    pub packets: u64,
    pub lost: u64,
}

pub struct ViewerSpec {
    pub index: usize,
    pub target: SocketAddr,
    pub source: Option<IpAddr>,
    pub path: String,
    pub mode: Mode,
    pub stop_at: Instant,
    /// HTTPS tunnel (TLS on both GET and POST) when set.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

type Rd = Box<dyn AsyncRead + Unpin + Send>;
type Wr = Box<dyn AsyncWrite + Unpin + Send>;

/// A client configuration that accepts any server certificate: load tests talk to a relay
/// with a throwaway self-signed certificate, and measure, not authenticate.
pub fn insecure_tls_config() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A connection's two halves, inside TLS when the spec asks for it.
async fn open_stream(spec: &ViewerSpec) -> Result<(Rd, Wr), String> {
    let tcp = connect(spec.target, spec.source).await?;
    match &spec.tls {
        None => {
            let (r, w) = tcp.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("static name");
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls_{:?}", e.kind()))?;
            let (r, w) = tokio::io::split(tls);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let sock = if target.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(target))
        .await
        .map_err(|_| "connect_timeout".to_owned())?
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Where the viewer's commands go and its replies and media come from.
struct Conn {
    data: Rd,
    commands: Wr,
    /// Halves that must stay open: closing a tunnel GET's write side would end the tunnel.
    _keep: (Option<Wr>, Option<Rd>),
    tunnel: bool,
    demux: Demux,
    /// Frame bytes not yet split into whole frames.
    frames: Vec<u8>,
    cseq: u32,
    session: Option<String>,
}

async fn read_http_head(rd: &mut Rd) -> Result<(String, Vec<u8>), String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = rd.read(&mut buf).await.map_err(|e| format!("read_{:?}", e.kind()))?;
        if n == 0 {
            return Err("closed_before_reply".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&head).into_owned(), rest));
        }
        if head.len() > 8192 {
            return Err("http_head_too_large".into());
        }
    }
}

fn io_err(e: std::io::Error) -> String {
    format!("io_{:?}", e.kind())
}

impl Conn {
    async fn open(spec: &ViewerSpec) -> Result<(Conn, Vec<u8>), String> {
        let new = |data, commands, keep, tunnel| Conn {
            data,
            commands,
            _keep: keep,
            tunnel,
            demux: Demux::new(MessageLimits::default()),
            frames: Vec::new(),
            cseq: 0,
            session: None,
        };
        match spec.mode {
            Mode::Rtsp => {
                let (rd, wr) = open_stream(spec).await?;
                Ok((new(rd, wr, (None, None), false), Vec::new()))
            }
            Mode::Tunnel => {
                let cookie = format!("lt{:08x}{:012x}", spec.index, payload::monotonic_ns() & 0xffff_ffff_ffff);
                let (mut grd, mut gwr) = open_stream(spec).await?;
                let get = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
                    spec.path, spec.target
                );
                gwr.write_all(get.as_bytes()).await.map_err(io_err)?;
                let (head, rest) = read_http_head(&mut grd).await?;
                let status = head.split_whitespace().nth(1).unwrap_or("none").to_owned();
                if status != "200" {
                    return Err(format!("http_{status}"));
                }
                let (prd, mut pwr) = open_stream(spec).await?;
                let post = format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nx-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
                    spec.path, spec.target
                );
                pwr.write_all(post.as_bytes()).await.map_err(io_err)?;
                Ok((new(grd, pwr, (Some(gwr), Some(prd)), true), rest))
            }
        }
    }

    async fn send(&mut self, method: &str, uri: &str, extra: &[(&str, String)]) -> Result<u32, String> {
        self.cseq += 1;
        let mut m = Message::request(method, uri);
        m.set_header("CSeq", self.cseq.to_string());
        m.set_header("User-Agent", "rtsp-tunnel-relay-loadtest");
        if let Some(s) = &self.session {
            m.set_header("Session", s.clone());
        }
        for (k, v) in extra {
            m.set_header(k, v.clone());
        }
        let raw = m.to_bytes();
        let wire = if self.tunnel { base64::engine::general_purpose::STANDARD.encode(&raw).into_bytes() } else { raw };
        self.commands.write_all(&wire).await.map_err(io_err)?;
        Ok(self.cseq)
    }

    /// Feeds received bytes; returns a response if one completed. Media is measured on the way.
    fn feed(&mut self, bytes: &[u8], m: &mut Meter) -> Result<Vec<Message>, String> {
        let mut events = Vec::new();
        self.demux.feed(bytes, &mut events).map_err(|_| "bad_stream".to_owned())?;
        let mut msgs = Vec::new();
        for ev in events {
            match ev {
                Event::Frames { range, .. } => {
                    self.frames.extend_from_slice(&bytes[range]);
                    let mut at = 0;
                    while self.frames.len() >= at + 4 {
                        let len = u16::from_be_bytes([self.frames[at + 2], self.frames[at + 3]]) as usize;
                        if self.frames.len() < at + 4 + len {
                            break;
                        }
                        if self.frames[at + 1] == 0 {
                            m.packet(&self.frames[at + 4..at + 4 + len], 4 + len);
                        }
                        at += 4 + len;
                    }
                    self.frames.drain(..at);
                }
                Event::Message(msg) => msgs.push(msg),
            }
        }
        Ok(msgs)
    }

    async fn request(
        &mut self,
        method: &str,
        uri: &str,
        extra: &[(&str, String)],
        m: &mut Meter,
        deadline: Instant,
    ) -> Result<Message, String> {
        let want = self.send(method, uri, extra).await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::time::timeout_at(deadline, self.data.read(&mut buf))
                .await
                .map_err(|_| format!("timeout_{}", method.to_ascii_lowercase()))?
                .map_err(io_err)?;
            if n == 0 {
                return Err(format!("closed_during_{}", method.to_ascii_lowercase()));
            }
            for msg in self.feed(&buf[..n], m)? {
                if msg.cseq() == Some(want) {
                    return match msg.status() {
                        Some(200) => Ok(msg),
                        s => Err(format!("rtsp_{}_{}", s.unwrap_or(0), method.to_ascii_lowercase())),
                    };
                }
            }
        }
    }
}

/// Media measurements of one viewer.
pub struct Meter {
    pub media_us: Histogram<u64>,
    pub bytes: u64,
    pub packets: u64,
    pub lost: u64,
    last_seq: Option<u64>,
    shared: std::sync::Arc<Shared>,
}

impl Meter {
    fn new(shared: std::sync::Arc<Shared>) -> Meter {
        Meter {
            media_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds"),
            bytes: 0,
            packets: 0,
            lost: 0,
            last_seq: None,
            shared,
        }
    }

    fn packet(&mut self, rtp: &[u8], wire_len: usize) {
        self.bytes += wire_len as u64;
        self.packets += 1;
        self.shared.bytes.fetch_add(wire_len as u64, std::sync::atomic::Ordering::Relaxed);
        self.shared.packets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some((sent, _stream, seq)) = payload::parse(rtp) else { return };
        let lat_us = payload::monotonic_ns().saturating_sub(sent) / 1000;
        let _ = self.media_us.record(lat_us.clamp(1, 60_000_000));
        self.shared.record_latency(lat_us);
        if let Some(last) = self.last_seq
            && seq > last + 1
        {
            self.lost += seq - last - 1;
            self.shared.lost.fetch_add(seq - last - 1, std::sync::atomic::Ordering::Relaxed);
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
    }
}

/// The first media's control URL from an SDP (absolute, or relative to the content base).
fn track_url(sdp: &[u8], content_base: &str) -> String {
    let text = String::from_utf8_lossy(sdp);
    // Lines after the first `m=` line belong to the first media.
    let control = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=control:"))
        .unwrap_or("trackID=0")
        .trim();
    if control.contains("://") { control.to_owned() } else { format!("{content_base}/{control}") }
}

/// Runs one viewer to `spec.stop_at`.
pub async fn run(spec: ViewerSpec, shared: std::sync::Arc<Shared>) -> Result<Outcome, String> {
    let started = Instant::now();
    let setup_deadline = started + Duration::from_secs(20);
    let mut meter = Meter::new(shared);
    let (mut conn, early) = Conn::open(&spec).await?;
    if !early.is_empty() {
        conn.feed(&early, &mut meter)?;
    }
    let base = format!("rtsp://{}{}", spec.target, spec.path);
    conn.request("OPTIONS", &base, &[], &mut meter, setup_deadline).await?;
    let describe =
        conn.request("DESCRIBE", &base, &[("Accept", "application/sdp".into())], &mut meter, setup_deadline).await?;
    let content_base = describe.header("Content-Base").unwrap_or(&base).trim_end_matches('/').to_owned();
    let setup = conn
        .request(
            "SETUP",
            &track_url(&describe.body, &content_base),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1".into())],
            &mut meter,
            setup_deadline,
        )
        .await?;
    conn.session = setup.header("Session").map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    conn.request("PLAY", &format!("{content_base}/"), &[("Range", "npt=0.000-".into())], &mut meter, setup_deadline)
        .await?;
    let setup_us = started.elapsed().as_micros() as u64;
    meter.shared.established.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut keepalive = Instant::now() + Duration::from_secs(20);
    loop {
        let until = keepalive.min(spec.stop_at);
        match tokio::time::timeout_at(until, conn.data.read(&mut buf)).await {
            Ok(Ok(0)) => return Err("closed_by_peer".into()),
            Ok(Ok(n)) => {
                conn.feed(&buf[..n], &mut meter)?;
            }
            Ok(Err(e)) => return Err(io_err(e)),
            Err(_) if Instant::now() >= spec.stop_at => break,
            Err(_) => {
                conn.send("GET_PARAMETER", &base, &[]).await?;
                keepalive = Instant::now() + Duration::from_secs(20);
            }
        }
    }
    let _ = conn.send("TEARDOWN", &base, &[]).await;
    Ok(Outcome { setup_us, media_us: meter.media_us, bytes: meter.bytes, packets: meter.packets, lost: meter.lost })
}

#[cfg(test)]
mod tests {
    #[test]
    fn setup_uses_the_first_media_control() {
        let sdp = b"v=0\r\ns=Session streamed with GStreamer\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=control:stream=0\r\n";
        assert_eq!(super::track_url(sdp, "rtsp://h/cam0"), "rtsp://h/cam0/stream=0");
        assert_eq!(super::track_url(b"m=video 0 RTP/AVP 96\na=control:rtsp://x/t1\n", "rtsp://h/c"), "rtsp://x/t1");
        assert_eq!(super::track_url(b"", "rtsp://h/c"), "rtsp://h/c/trackID=0");
    }
}
