//! The `syslog` sink: one RFC 5424 message per record, its JSON line as the
//! message, over UDP, TCP (octet-counted frames, RFC 6587) or a Unix
//! datagram socket such as `/dev/log`.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::output::{Pending, Rejected};
use crate::config::SyslogAddress;

/// Facility `local0`, severity `info`.
const PRI: u8 = 16 * 8 + 6;
/// The largest UDP payload; a longer message can never be sent as one
/// datagram and is refused for good rather than retried forever.
const MAX_DATAGRAM: usize = 65_507;
const TCP_TIMEOUT: Duration = Duration::from_secs(2);

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

pub(super) struct SyslogOut {
    addr: SyslogAddress,
    /// Opened on first use and again after any failure.
    conn: Option<Conn>,
    host: String,
    pid: u32,
}

impl SyslogOut {
    pub fn new(addr: SyslogAddress) -> SyslogOut {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_string());
        SyslogOut {
            addr,
            conn: None,
            host,
            pid: std::process::id(),
        }
    }

    pub fn describe(&self) -> String {
        match &self.addr {
            SyslogAddress::Udp(a) => format!("udp://{a}"),
            SyslogAddress::Tcp(a) => format!("tcp://{a}"),
            SyslogAddress::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    pub fn send(&mut self, p: &mut Pending) -> std::io::Result<Rejected> {
        let mut rejected = 0;
        while let Some(line) = p.front() {
            let msg = self.message(line);
            if msg.len() > MAX_DATAGRAM && !matches!(self.addr, SyslogAddress::Tcp(_)) {
                rejected += 1;
                p.pop(1);
                continue;
            }
            if let Err(e) = self.deliver(&msg) {
                self.conn = None;
                return Err(e);
            }
            p.pop(1);
        }
        Ok(rejected)
    }

    fn deliver(&mut self, msg: &[u8]) -> std::io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.addr)?);
        }
        match self.conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(msg).map(drop),
            Some(Conn::Unix(s)) => s.send(msg).map(drop),
            Some(Conn::Tcp(s)) => {
                let mut frame = format!("{} ", msg.len()).into_bytes();
                frame.extend_from_slice(msg);
                s.write_all(&frame)
            }
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, with the
    /// record's own time and its event as the message id.
    fn message(&self, line: &[u8]) -> Vec<u8> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let time = field(line, b"\"time\":\"").unwrap_or(b"-");
        let event = field(line, b"\"event\":\"").unwrap_or(b"-");
        let mut out = Vec::with_capacity(line.len() + 96);
        out.extend_from_slice(format!("<{PRI}>1 ").as_bytes());
        out.extend_from_slice(time);
        out.extend_from_slice(format!(" {} airlock {} ", self.host, self.pid).as_bytes());
        out.extend_from_slice(event);
        out.extend_from_slice(b" - ");
        out.extend_from_slice(line);
        out
    }
}

/// The value of a string member written plainly (no escapes: times and
/// event names never have any).
fn field<'a>(line: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &line[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    let value = &rest[..end];
    (!value.is_empty() && value.iter().all(|b| b.is_ascii_graphic() && *b != b'\\'))
        .then_some(value)
}

fn connect(addr: &SyslogAddress) -> std::io::Result<Conn> {
    match addr {
        SyslogAddress::Udp(a) => {
            let target = resolve(a)?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(local)?;
            s.connect(target)?;
            Ok(Conn::Udp(s))
        }
        SyslogAddress::Tcp(a) => {
            let s = TcpStream::connect_timeout(&resolve(a)?, TCP_TIMEOUT)?;
            s.set_write_timeout(Some(TCP_TIMEOUT))?;
            Ok(Conn::Tcp(s))
        }
        SyslogAddress::Unix(path) => {
            let s = UnixDatagram::unbound()?;
            s.connect(path)?;
            Ok(Conn::Unix(s))
        }
    }
}

fn resolve(a: &str) -> std::io::Result<std::net::SocketAddr> {
    a.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{a}` resolves to no address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_an_rfc5424_message() {
        let out = SyslogOut {
            addr: SyslogAddress::Udp("127.0.0.1:514".into()),
            conn: None,
            host: "gw1".into(),
            pid: 42,
        };
        let line = b"{\"time\":\"2021-02-25T15:02:10.123Z\",\"request_id\":\"r\",\"event\":\"decision\"}\n";
        let msg = String::from_utf8(out.message(line)).unwrap();
        assert_eq!(
            msg,
            "<134>1 2021-02-25T15:02:10.123Z gw1 airlock 42 decision - {\"time\":\"2021-02-25T15:02:10.123Z\",\"request_id\":\"r\",\"event\":\"decision\"}"
        );
    }
}
