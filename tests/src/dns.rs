//! A nameserver that answers what a test tells it to: every `A` question
//! gets the next address of a script, in turn, with a TTL of 0 — what a
//! rebinding attacker's nameserver does to make one name lead first to a
//! harmless address, then to a forbidden one. Other questions get an empty
//! answer. Served on a UDP socket the test binds (inside a network
//! namespace, where `/etc/netns/<ns>/resolv.conf` points the system
//! resolver of every process started there at it).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;

pub struct Rebinder {
    answered: Arc<Mutex<Vec<(String, Ipv4Addr)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rebinder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rebinder {
    /// Serve on `socket` (must run inside the runtime), answering the
    /// `A` questions with `script`, round and round.
    pub fn start(socket: std::net::UdpSocket, script: Vec<Ipv4Addr>) -> Rebinder {
        assert!(!script.is_empty(), "a script of at least one address");
        socket.set_nonblocking(true).unwrap();
        let socket = UdpSocket::from_std(socket).unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let log = answered.clone();
        let task = tokio::spawn(async move {
            let mut turn = 0;
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(question) = Question::read(&buf[..n]) else {
                    continue;
                };
                let address = (question.qtype == TYPE_A).then(|| {
                    let address = script[turn % script.len()];
                    turn += 1;
                    log.lock().unwrap().push((question.name.clone(), address));
                    address
                });
                let _ = socket.send_to(&question.answer(address), from).await;
            }
        });
        Rebinder { answered, task }
    }

    /// Every `A` answer given so far: the name asked and the address.
    pub fn answered(&self) -> Vec<(String, Ipv4Addr)> {
        self.answered.lock().unwrap().clone()
    }
}

/// A query's header and first question, as far as an answer needs them.
struct Question<'a> {
    query: &'a [u8],
    /// Where the question section ends.
    end: usize,
    name: String,
    qtype: u16,
}

impl<'a> Question<'a> {
    fn read(query: &'a [u8]) -> Option<Question<'a>> {
        if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] == [0, 0] {
            return None;
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            // A query's first name is never compressed.
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
            at += len;
        }
        let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        query.get(at + 3)?;
        Some(Question {
            query,
            end: at + 4,
            name: labels.join("."),
            qtype,
        })
    }

    /// The response: the question echoed, and `address` (TTL 0) when
    /// there is one.
    fn answer(&self, address: Option<Ipv4Addr>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.end + 16);
        out.extend_from_slice(&self.query[..2]);
        // A response, authoritative, recursion desired as asked, available.
        out.push(0x84 | (self.query[2] & 0x01));
        out.push(0x80);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&u16::from(address.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.query[12..self.end]);
        if let Some(address) = address {
            // The name by pointer to the question's, type A, class IN.
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&address.octets());
        }
        out
    }
}
