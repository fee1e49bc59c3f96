//! The RTSP headers the relay reads and writes (RFC 2326 §12): `Transport`, `Session`,
//! `RTP-Info` and `Public`, each parsed into a value and formatted back, so that the viewer's
//! session, the shared viewer, the camera session and the demo camera speak one vocabulary.
//!
//! Parsing is lenient as peers are (whitespace around separators, names in any case, a
//! parameter it does not know kept or skipped); formatting writes the canonical form, which
//! parses back to the same value. What each party then accepts (which transport it plays,
//! which `interleaved` it honours) is that party's rule, written where it applies.

use std::fmt;
use std::time::Duration;

/// Longest `timeout=` a `Session` header may announce: a day. A camera saying more is believed
/// up to that (a keepalive a day apart still keeps the session).
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(86_400);

/// `Transport`: the alternatives a client offers, or the one a server chose, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transport {
    pub specs: Vec<TransportSpec>,
}

/// One `Transport` alternative: `RTP/AVP/TCP;unicast;interleaved=0-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    /// `RTP/AVP/TCP`, as written.
    pub protocol: String,
    /// In order, names and values trimmed; a flag (`unicast`) has no value.
    pub params: Vec<(String, Option<String>)>,
}

impl Transport {
    /// Splits at `,` (alternatives) and `;` (parameters); empty pieces are skipped.
    pub fn parse(value: &str) -> Transport {
        let specs = value
            .split(',')
            .map(TransportSpec::parse)
            .filter(|s| !s.protocol.is_empty() || !s.params.is_empty())
            .collect();
        Transport { specs }
    }
}

impl TransportSpec {
    fn parse(spec: &str) -> TransportSpec {
        let mut pieces = spec.split(';').map(str::trim);
        let protocol = pieces.next().unwrap_or("").to_owned();
        let params = pieces
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                None => (p.to_owned(), None),
            })
            .collect();
        TransportSpec { protocol, params }
    }

    /// `RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp}`: what the relay asks a camera for and
    /// answers a viewer with.
    pub fn interleaved_tcp(rtp: u8, rtcp: u8) -> TransportSpec {
        TransportSpec {
            protocol: "RTP/AVP/TCP".to_owned(),
            params: vec![("unicast".to_owned(), None), ("interleaved".to_owned(), Some(format!("{rtp}-{rtcp}")))],
        }
    }

    /// Adds a parameter at the end.
    pub fn with(mut self, name: &str, value: Option<String>) -> TransportSpec {
        self.params.push((name.to_owned(), value));
        self
    }

    /// Whether the protocol is one of `profiles` (`RTP/AVP/TCP`), in any case.
    pub fn protocol_is(&self, profiles: &[&str]) -> bool {
        profiles.iter().any(|p| self.protocol.eq_ignore_ascii_case(p))
    }

    /// Values of the parameters named `name` (any case), in order; `""` for a flag.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// No `mode` other than `play` (quotes aside): the alternative is for playing.
    pub fn is_for_playing(&self) -> bool {
        self.values("mode").all(|m| m.trim_matches('"').eq_ignore_ascii_case("play"))
    }

    /// Media over the RTSP connection: a TCP lower transport (`…/TCP`) or `interleaved=`.
    pub fn is_interleaved_tcp(&self) -> bool {
        let tcp = self.protocol.rsplit('/').next().is_some_and(|t| t.eq_ignore_ascii_case("TCP"));
        tcp || self.params.iter().any(|(k, v)| k.eq_ignore_ascii_case("interleaved") && v.is_some())
    }

    /// The first readable `interleaved=`.
    pub fn interleaved(&self) -> Option<(u8, u8)> {
        self.values("interleaved").find_map(channel_pair)
    }
}

/// An `interleaved` value: `a-b`, or `a` meaning `a-(a+1)`.
pub fn channel_pair(value: &str) -> Option<(u8, u8)> {
    match value.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: u8 = value.trim().parse().ok()?;
            Some((a, a.checked_add(1)?))
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.specs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// `Session: id;timeout=60`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHeader<'a> {
    pub id: &'a str,
    /// Absent, zero or unreadable: `None`; at most [`MAX_SESSION_TIMEOUT`].
    pub timeout: Option<Duration>,
}

impl<'a> SessionHeader<'a> {
    pub fn parse(value: &'a str) -> SessionHeader<'a> {
        let mut parts = value.split(';');
        let id = parts.next().unwrap_or("").trim();
        let timeout = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if !k.trim().eq_ignore_ascii_case("timeout") {
                return None;
            }
            let secs = v.trim().parse::<u64>().ok().filter(|t| *t > 0)?;
            Some(Duration::from_secs(secs).min(MAX_SESSION_TIMEOUT))
        });
        SessionHeader { id, timeout }
    }

    /// The session id a header value names (what follows `;` aside).
    pub fn id_of(value: &'a str) -> &'a str {
        value.split(';').next().unwrap_or("").trim()
    }
}

impl fmt::Display for SessionHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)?;
        match self.timeout {
            Some(t) => write!(f, ";timeout={}", t.as_secs()),
            None => Ok(()),
        }
    }
}

/// `RTP-Info`: per stream, its URL and where its RTP starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtpInfo {
    pub entries: Vec<RtpInfoEntry>,
}

/// One `RTP-Info` entry: `url=…;seq=…;rtptime=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpInfoEntry {
    pub url: String,
    pub seq: Option<u16>,
    pub rtptime: Option<u32>,
}

impl RtpInfo {
    /// Entries are separated by commas, but a URL may hold commas too: a piece that does not
    /// start with `url=` continues the previous entry. An empty value has no entry.
    pub fn parse(value: &str) -> RtpInfo {
        let mut raw: Vec<String> = Vec::new();
        for piece in value.split(',') {
            match raw.last_mut() {
                Some(last) if !piece.trim_start().to_ascii_lowercase().starts_with("url=") => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => raw.push(piece.trim().to_owned()),
            }
        }
        let entries = raw
            .iter()
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut entry = RtpInfoEntry { url: String::new(), seq: None, rtptime: None };
                for kv in e.split(';') {
                    let Some((k, v)) = kv.split_once('=') else { continue };
                    let v = v.trim().trim_matches('"');
                    match k.trim().to_ascii_lowercase().as_str() {
                        "url" => entry.url = v.to_owned(),
                        "seq" => entry.seq = v.parse().ok(),
                        "rtptime" => entry.rtptime = v.parse().ok(),
                        _ => {}
                    }
                }
                entry
            })
            .collect();
        RtpInfo { entries }
    }
}

impl fmt::Display for RtpInfoEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "url={}", self.url)?;
        if let Some(seq) = self.seq {
            write!(f, ";seq={seq}")?;
        }
        if let Some(t) = self.rtptime {
            write!(f, ";rtptime={t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RtpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// `Public` (and `Allow`): the methods a server supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Public<'a> {
    pub methods: Vec<&'a str>,
}

impl<'a> Public<'a> {
    pub fn parse(value: &'a str) -> Public<'a> {
        Public { methods: value.split(',').map(str::trim).filter(|m| !m.is_empty()).collect() }
    }

    pub fn of(methods: &[&'a str]) -> Public<'a> {
        Public { methods: methods.to_vec() }
    }

    /// Whether `method` is listed (methods are case-sensitive, but firmwares are not).
    pub fn allows(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

impl fmt::Display for Public<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.methods.join(", "))
    }
}

#[cfg(test)]
mod tests;
