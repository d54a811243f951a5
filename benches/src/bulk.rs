//! Bulk transfer for the tunnel row: a server that sends bytes as fast as
//! the peer reads them, and a client that reads for a while, directly or
//! through a proxy's `CONNECT`, and reports bytes per second. Plain
//! blocking sockets, one thread per connection: nothing between the kernel
//! and the measurement but one `read`/`write` per buffer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Both ends move 256 KiB per call: few enough calls that the ends'
/// system calls are not what a relay is measured against.
const CHUNK: usize = 256 * 1024;

/// Start the sender on loopback; every accepted connection gets an endless
/// stream, written on `cpu` when given.
pub fn start(cpu: Option<usize>) -> anyhow::Result<SocketAddr> {
    start_at("127.0.0.1:0".parse()?, cpu)
}

/// The sender on `addr`. It speaks first, as soon as a connection is
/// accepted.
pub fn start_at(addr: SocketAddr, cpu: Option<usize>) -> anyhow::Result<SocketAddr> {
    serve(addr, "bench-bulk", cpu, |mut stream| {
        let chunk = vec![0x5a_u8; CHUNK];
        // Ends when the reader goes away.
        while stream.write_all(&chunk).is_ok() {}
    })
}

/// The least any proxy that terminates TCP has to do, as a reference row:
/// accept, connect to `target`, and splice(2) the download through a pipe
/// inside the kernel. No HTTP, no decision, one direction, a blocking
/// thread per connection, on `cpu` when given (the proxies' CPU). What it
/// loses against a direct transfer is the price of the second loopback
/// connection itself, which no proxy can avoid.
#[cfg(target_os = "linux")]
pub fn start_relay(target: SocketAddr, cpu: Option<usize>) -> anyhow::Result<SocketAddr> {
    serve("127.0.0.1:0".parse()?, "bench-relay", cpu, move |client| {
        if let Ok(upstream) = TcpStream::connect(target) {
            let _ = relay_down(&upstream, &client);
        }
    })
}

/// Listen on `addr` and give every connection a thread of its own running
/// `each`, all on `cpu` when given.
fn serve(
    addr: SocketAddr,
    name: &str,
    cpu: Option<usize>,
    each: impl Fn(TcpStream) + Clone + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // Threads started here inherit the CPU.
            if let Some(cpu) = cpu {
                let _ = crate::process::pin_thread(cpu);
            }
            for stream in listener.incoming().flatten() {
                let each = each.clone();
                std::thread::spawn(move || each(stream));
            }
        })?;
    Ok(addr)
}

#[cfg(target_os = "linux")]
fn relay_down(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    use std::io::Error;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    const PIPE: usize = 1024 * 1024;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (out, into) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on the pipe just made; the default stays if refused.
    unsafe { libc::fcntl(into.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE as libc::c_int) };
    let splice = |a: RawFd, b: RawFd, len: usize| -> std::io::Result<usize> {
        // SAFETY: plain descriptors, no offsets, no user memory.
        let n = unsafe { libc::splice(a, std::ptr::null_mut(), b, std::ptr::null_mut(), len, 0) };
        usize::try_from(n).map_err(|_| Error::last_os_error())
    };
    loop {
        let mut n = splice(from.as_raw_fd(), into.as_raw_fd(), PIPE)?;
        if n == 0 {
            return Ok(());
        }
        while n > 0 {
            n -= splice(out.as_raw_fd(), to.as_raw_fd(), n)?;
        }
    }
}

/// How a client reaches the sender.
#[derive(Clone, Copy)]
pub enum Route<'a> {
    Direct(SocketAddr),
    /// `CONNECT authority` through the proxy at the address.
    Connect(SocketAddr, &'a str),
}

/// What one bulk run measured.
#[derive(Clone)]
pub struct BulkRun {
    pub bytes_per_second: f64,
    /// Bytes that had arrived in the reader's socket but were not read yet:
    /// the median of samples every 50 ms. A deep queue means the reader
    /// copies out bytes that have left the caches, which is what slow
    /// tunnel runs have (`docs/benchmarks/history.md`, "Tunnel: copying
    /// through lent buffers").
    pub reader_queue: f64,
    /// Per CPU, the share of the transfer it was busy
    /// ([`crate::process::busy_between`]).
    pub busy: Vec<f64>,
}

const QUEUE_EVERY: Duration = Duration::from_millis(50);

/// Read for `duration` from the first bytes on.
pub fn read_for(route: Route<'_>, duration: Duration) -> anyhow::Result<BulkRun> {
    let mut stream = match route {
        Route::Direct(addr) => TcpStream::connect(addr)?,
        Route::Connect(proxy, authority) => connect(proxy, authority)?,
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; CHUNK];
    // The clock starts at the first bytes, which are not counted: the
    // figures are the transfer's, not the connection setup's. A redirected
    // connection's setup includes a second of the transparent listener
    // waiting for a client that never speaks first, when the CPUs idle.
    let first = stream.read(&mut buf).context("bulk read")?;
    anyhow::ensure!(first > 0, "sender closed the stream before sending");
    let ticks = crate::process::cpu_ticks()?;
    let started = Instant::now();
    let (mut total, mut queue, mut sampled) = (0u64, Vec::new(), started);
    while started.elapsed() < duration {
        let n = stream.read(&mut buf).context("bulk read")?;
        anyhow::ensure!(n > 0, "sender closed the stream after {total} bytes");
        total += n as u64;
        if sampled.elapsed() >= QUEUE_EVERY {
            queue.push(unread(&stream)? as f64);
            sampled = Instant::now();
        }
    }
    Ok(BulkRun {
        bytes_per_second: total as f64 / started.elapsed().as_secs_f64(),
        reader_queue: crate::report::median_f64(queue).unwrap_or(0.0),
        busy: crate::process::busy_between(&ticks, &crate::process::cpu_ticks()?),
    })
}

/// Bytes waiting in the socket's receive queue.
fn unread(stream: &TcpStream) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer given.
    if unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as u64)
}

/// Open a tunnel and return the stream positioned after the `200` answer.
pub fn connect(proxy: SocketAddr, authority: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy)?;
    write!(
        stream,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )?;
    // Byte by byte, so nothing after the answer's head is consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 16 * 1024, "CONNECT answer head too long");
        if stream.read(&mut byte)? == 0 {
            bail!(
                "proxy closed during CONNECT: {}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    if !status.starts_with("HTTP/1.1 200") {
        bail!("CONNECT {authority} refused: {status}");
    }
    Ok(stream)
}
