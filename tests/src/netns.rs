//! Network namespaces for tests that need a real network: iptables rules,
//! addresses besides loopback, a client and a server on different hosts.
//! Each [`Netns`] is a network of its own, so tests run in parallel and
//! reuse the same addresses. A namespace is routed only to the subnets a
//! test links it to, so nothing sent inside can leave the machine.
//!
//! Needs root, as CI runs the suite. Without it, or when the kernel refuses
//! namespaces, the tests fail saying why: a skipped test would let CI pass
//! without ever checking the rules.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Where `ip netns add` keeps a namespace's handle, by name.
const RUN_DIR: &str = "/var/run/netns";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The first `ip netns add` on a machine makes its run folder a mount
/// point; two first ones at once can stack two mounts, the upper one
/// hiding the namespace the lower one got.
static ADDING: Mutex<()> = Mutex::new(());

/// A network namespace, deleted on drop with its veths and hosts file.
pub struct Netns {
    name: String,
    /// This namespace's ends of its veth pairs.
    veths: Mutex<Vec<String>>,
    /// Whether [`Netns::hosts`] or [`Netns::resolv_conf`] wrote
    /// `/etc/netns/<name>/`.
    etc: AtomicBool,
}

/// Panics, saying why, unless this process can create network namespaces:
/// it must be root, and `ip netns add` must work. [`Netns::new`] calls it;
/// call it first where a test should fail before doing anything else.
pub fn require_namespaces() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECKED.get_or_init(probe) {
        panic!("{why}");
    }
}

fn probe() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "this test needs root: it creates network namespaces and installs \
                    iptables rules in them (CI runs the suite as root)"
                .into(),
        );
    }
    let name = format!("tg{}-probe", std::process::id());
    let added = {
        let _adding = ADDING.lock().unwrap_or_else(PoisonError::into_inner);
        Command::new("ip").args(["netns", "add", &name]).output()
    };
    let added = added
        .map_err(|e| format!("cannot run `ip` ({e}); scripts/setup-test-env installs iproute2"))?;
    if !added.status.success() {
        return Err(format!(
            "the kernel refuses network namespaces; `ip netns add` says: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        ));
    }
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    Ok(())
}

/// Runs `ip ARGS` in this (the test's) namespace; panics with what ip said.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}); scripts/setup-test-env installs it"));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Netns {
    /// A new namespace, `tg<pid>-<n><tag>` (`tag`: letters and digits, to
    /// tell namespaces apart in `ip netns list`), with loopback up.
    pub fn new(tag: &str) -> Netns {
        assert!(
            tag.chars().all(|c| c.is_ascii_alphanumeric()),
            "tag {tag:?}: letters and digits only"
        );
        require_namespaces();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tg{}-{n}{tag}", std::process::id());
        {
            let _adding = ADDING.lock().unwrap_or_else(PoisonError::into_inner);
            ip(&["netns", "add", &name]);
        }
        let netns = Netns {
            name,
            veths: Mutex::new(Vec::new()),
            etc: AtomicBool::new(false),
        };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, for `ip netns exec` and `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Links two namespaces with a veth pair and gives each end its
    /// addresses, in CIDR form (`10.213.0.1/24`, `fd13::1/64`); both ends
    /// are up and usable at once (IPv6 addresses skip duplicate address
    /// detection). The only routes are to the connected subnets.
    pub fn link(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) {
        // Created straight inside the two namespaces, the ends never
        // appear in the machine's own: the name need only be unique in
        // this process, which owns both namespaces.
        let veth = format!("veth{}", NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&[
            "link", "add", &veth, "netns", &a.name, "type", "veth", "peer", "name", &veth, "netns",
            &b.name,
        ]);
        for (netns, addrs) in [(a, a_addrs), (b, b_addrs)] {
            netns
                .veths
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(veth.clone());
            for addr in addrs {
                let mut args = vec!["-n", &netns.name, "addr", "add", addr, "dev", &veth];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip(&args);
            }
            ip(&["-n", &netns.name, "link", "set", &veth, "up"]);
        }
    }

    /// `/etc/hosts` for every process started through [`Netns::command`]
    /// (`ip netns exec` mounts `/etc/netns/<name>/hosts` over it):
    /// `localhost` and the `(address, name)` entries given.
    pub fn hosts(&self, entries: &[(&str, &str)]) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        self.etc.store(true, Ordering::Relaxed);
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (address, name) in entries {
            text.push_str(&format!("{address} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// The command prefix that runs a program inside: for harness
    /// functions that take a launcher (`Setup::launcher`, `curl_in`).
    pub fn launcher(&self) -> Vec<String> {
        ["ip", "netns", "exec", self.name()]
            .map(String::from)
            .to_vec()
    }

    /// `program` to run inside the namespace (`ip netns exec <name>
    /// <program>`); add its arguments. For tokio, convert it with
    /// `tokio::process::Command::from`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `args` (a program and its arguments) inside the namespace and
    /// returns its output; panics with its stderr unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        let out = self
            .command(program)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec` ({e})"));
        assert!(
            out.status.success(),
            "`{}` in {} failed ({}): {}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// A TCP socket bound inside the namespace, for the test process to
    /// serve on (a listener belongs to the namespace it was made in, not
    /// to whoever uses it). Nonblocking, so tokio can adopt it with
    /// `tokio::net::TcpListener::from_std`.
    pub fn bind_tcp(&self, addr: SocketAddr) -> TcpListener {
        self.inside(|| {
            let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("nonblocking {addr}: {e}"))?;
            Ok(listener)
        })
    }

    /// A UDP socket bound inside the namespace (a nameserver's, say).
    pub fn bind_udp(&self, addr: SocketAddr) -> UdpSocket {
        self.inside(|| UdpSocket::bind(addr).map_err(|e| format!("bind udp {addr}: {e}")))
    }

    /// `/etc/resolv.conf` for every process started through
    /// [`Netns::command`] (`ip netns exec` mounts
    /// `/etc/netns/<name>/resolv.conf` over it): only `nameserver`, asked
    /// once with a short timeout, no search domains.
    pub fn resolv_conf(&self, nameserver: IpAddr) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        self.etc.store(true, Ordering::Relaxed);
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:2 attempts:1\n"),
        )
        .unwrap();
    }

    /// Runs `make` on a thread of its own inside the namespace: what it
    /// creates (a socket) belongs to the namespace.
    fn inside<T: Send>(&self, make: impl FnOnce() -> Result<T, String> + Send) -> T {
        let path = PathBuf::from(RUN_DIR).join(&self.name);
        // setns moves only the calling thread, so a thread of its own
        // enters the namespace and ends there.
        let made = std::thread::scope(|s| {
            s.spawn(|| {
                let handle = std::fs::File::open(&path)
                    .map_err(|e| format!("open {}: {e}", path.display()))?;
                // SAFETY: the handle is an open namespace file for the
                // whole call; only this thread's namespace changes.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "setns {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                make()
            })
            .join()
            .expect("the thread inside the namespace panicked")
        });
        made.unwrap_or_else(|e| panic!("in {}: {e}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // `ip netns del` returns before the kernel has taken the veths
        // away; deleting them first makes their end certain.
        for veth in self
            .veths
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            // Gone already when the namespace at the other end went first.
            let _ = Command::new("ip")
                .args(["-n", &self.name, "link", "del", &veth])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if *self.etc.get_mut() {
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
        }
    }
}
