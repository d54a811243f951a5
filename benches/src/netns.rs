//! A network namespace of the harness's own, for the transparent rows:
//! iptables rules installed in it catch only connections made inside it,
//! and it has no route anywhere but its own addresses. The harness enters
//! it from one thread ([`Netns::enter`]); the sockets that thread opens and
//! the processes it starts belong to the namespace, while the rest of the
//! harness stays outside.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context};

/// Where `ip netns add` keeps a namespace's handle, by name.
const RUN_DIR: &str = "/var/run/netns";

/// Namespaces this harness names `tgbench-<pid>-<n>`.
const PREFIX: &str = "tgbench-";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with loopback up, holding `addresses` (CIDR form)
    /// too. They go on `lo` itself: a connection to a local address goes
    /// through loopback whichever interface holds it, and a kernel without
    /// the `dummy` driver (as on this project's benchmark machine) has
    /// nothing else to hold them.
    pub fn new(addresses: &[&str]) -> anyhow::Result<Netns> {
        require_root()?;
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]).context("cannot create a network namespace")?;
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        for address in addresses {
            netns.ip(&["addr", "add", address, "dev", "lo"])?;
        }
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self) -> PathBuf {
        PathBuf::from(RUN_DIR).join(&self.name)
    }

    /// `ip -n NAME ARGS`.
    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        ip(&[&["-n", &self.name], args].concat())
    }

    /// Move the calling thread, and only it, into the namespace. Threads
    /// and processes it starts afterwards are born there.
    pub fn enter(&self) -> anyhow::Result<()> {
        let path = self.handle();
        let handle =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: the handle is an open namespace file for the whole call;
        // only this thread's network namespace changes.
        if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Whether process `pid` lives in this namespace: the rules installed
    /// here redirect its connections, and it must not have any others.
    pub fn holds(&self, pid: u32) -> anyhow::Result<bool> {
        let ours = std::fs::metadata(self.handle())?;
        let its = std::fs::metadata(format!("/proc/{pid}/ns/net"))?;
        Ok((ours.dev(), ours.ino()) == (its.dev(), its.ino()))
    }

    /// `program` run inside the namespace by `ip netns exec`; add its
    /// arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Threads still inside (the upstreams serve until the harness
        // exits) keep the namespace itself alive until then; only its
        // name goes now.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Making a namespace and installing iptables rules in it takes root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the transparent section needs root: it creates a network namespace and installs iptables rules in it"
    );
    Ok(())
}

/// `ip ARGS`; an error says what ip said.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (apt-get install -y iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Namespaces left by harness runs that were killed before they could
/// delete theirs.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
}
